"""The training loop and the run it writes.

One step: forward, loss, a finiteness check of the loss (before any weight changes),
backward, optimizer update. The loss and the count of correct predictions are the only
values that leave the device, as two scalars per step. A run with a folder checkpoints
every epoch and every k steps, stops cleanly on Ctrl-C after saving, and resumes to the
same weights an uninterrupted run reaches: the batch order is a function of (seed,
epoch), and the optimizer state, dropout counters and partial-epoch sums are all in the
checkpoint. The checkpoint also describes the run (model, settings, data statistics), so
`xpcnn evaluate`, `predict` and `train --resume` take one written from Python as well.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import backend, machine, presets
from ._version import __version__
from .anomaly import AnomalyHook, NonFiniteError
from .checkpoint import load_checkpoint, save_checkpoint
from .datasets import Dataset, batches, num_batches
from .evaluation import confusion_matrix, count_correct, evaluate
from .losses import SoftmaxCrossEntropy
from .model import Sequential
from .optim import Optimizer
from .presets import Recipe
from .run_folder import RunFolder


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the weights are those before that step."""


class TrainingInterrupted(RuntimeError):
    """Training stopped on SIGINT (Ctrl-C) after saving a checkpoint."""

    def __init__(self, message: str, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint


@dataclass
class Progress:
    """Where a run stands: completed epochs, next batch, sums of the epoch in progress."""

    epoch: int = 0
    batch: int = 0
    loss_sum: float = 0.0
    correct: float = 0.0
    seen: int = 0
    seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


def data_statistics(dataset: Dataset) -> dict[str, Any]:
    """What using a model needs to know of its training data: dataset name, the
    normalisation (mean, std), the class names, and where the data came from."""
    spec = dataset.spec
    return {
        "name": spec.name,
        "mean": spec.mean,
        "std": spec.std,
        "classes": list(spec.classes),
        "source": dataset.source,
    }


class Trainer:
    """Trains a model with an optimizer on a Dataset. With `run_dir`, keeps the run folder
    (see xpcnn.run_folder): the latest checkpoint, metrics per epoch and, after
    `finish(test)`, the summary and plots. `name` names the model in the run's record."""

    def __init__(
        self,
        model: Sequential,
        optimizer: Optimizer,
        *,
        batch_size: int = 64,
        seed: int = 0,
        augment: int = 0,
        run_dir: str | Path | None = None,
        name: str = "custom",
        checkpoint_every: int | None = None,
        progress: bool = True,
        log: Callable[[str], None] = print,
        anomaly: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if checkpoint_every is not None and checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1 step, got {checkpoint_every}")
        self.model, self.optimizer, self.loss_fn = model, optimizer, SoftmaxCrossEntropy()
        self.batch_size, self.seed, self.name = batch_size, seed, name
        self.augment = augment  # random shifts of up to this many pixels (see datasets.batches)
        self.folder = RunFolder(run_dir) if run_dir is not None else None
        self.checkpoint_every, self.progress, self.log = checkpoint_every, progress, log
        self.anomaly = anomaly  # check every layer for NaN/Inf (see xpcnn.anomaly)
        self.epochs = 0  # the run's total number of epochs (see fit)
        self.data: dict[str, Any] | None = None  # data_statistics() of the training set
        self.train_images = 0
        self.state = Progress()
        self._stop_requested = False

    @property
    def checkpoint_path(self) -> Path | None:
        return self.folder.checkpoint if self.folder else None

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.state.history

    # -- the record of the run ---------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        """How the run trains: epochs, batch, optimizer, learning rate and schedule, augmentation."""
        config = self.optimizer.config()
        schedule = config["schedule"]
        return {
            "epochs": self.epochs, "batch_size": self.batch_size, "optimizer": config["type"].lower(),
            "lr": config["lr"], "momentum": config.get("momentum", 0.0), "weight_decay": config["weight_decay"],
            "schedule": schedule["type"], "warmup": schedule.get("warmup", 0), "augment": self.augment,
        }

    def trainer_state(self) -> dict[str, Any]:
        """The JSON part of a checkpoint: progress, seeds and the description of the run."""
        s = self.state
        return {
            "epoch": s.epoch, "batch": s.batch, "loss_sum": s.loss_sum, "correct": s.correct,
            "seen": s.seen, "seconds": s.seconds, "history": s.history,
            "batch_size": self.batch_size, "seed": self.seed, "augment": self.augment,
            "info": {"model": self.name, "settings": self.settings(), "data": self.data},
        }

    def save(self) -> Path | None:
        """Write the checkpoint and the metrics file (both atomically); returns the path."""
        if self.folder is None:
            return None
        save_checkpoint(self.folder.checkpoint, self.model, self.optimizer, self.trainer_state())
        self.folder.write_metrics(self.state.history)
        return self.folder.checkpoint

    @classmethod
    def for_preset(cls, name: str, recipe: Recipe | None = None, train_size: int = 60_000, *, seed: int = 0,
                   backend_name: str = "numpy", device: Any = None, dtype: str = "float32", **options: Any) -> Trainer:
        """A trainer for a new run of preset `name` with `recipe` (default: the preset's
        own), its schedule planned over `train_size` training images; what `xpcnn train`
        runs. `options` are Trainer's (run_dir, progress, ...)."""
        recipe = recipe or presets.recipe(name)
        model = presets.build(name, seed).to(backend_name, device, dtype)
        optimizer = recipe.build_optimizer(model, num_batches(train_size, recipe.batch_size))
        trainer = cls(model, optimizer, batch_size=recipe.batch_size, seed=seed, augment=recipe.augment,
                      name=presets.canonical(name), **options)
        trainer.epochs = recipe.epochs
        return trainer

    @classmethod
    def resume(cls, path: str | Path, backend_name: str = "numpy", device: Any = None, **kwargs: Any) -> Trainer:
        """A trainer continuing from a checkpoint written by `save()`, on any backend."""
        checkpoint = load_checkpoint(path, backend_name, device)
        state = checkpoint.trainer
        if checkpoint.optimizer is None or "epoch" not in state:
            raise ValueError(f"{path}: has no optimizer or trainer state to resume from")
        model = checkpoint.model
        optimizer = Optimizer.from_config(model, checkpoint.optimizer["config"])
        arrays = {k: backend.to_backend(v, model.backend, model.device) for k, v in checkpoint.optimizer_arrays.items()}
        optimizer.load_state_arrays(arrays, int(checkpoint.optimizer["steps"]))
        info = state.get("info") or {}
        kwargs.setdefault("run_dir", Path(path).parent)
        kwargs.setdefault("name", info.get("model", "custom"))
        trainer = cls(model, optimizer, batch_size=state["batch_size"], seed=state["seed"],
                      augment=int(state.get("augment", 0)), **kwargs)
        trainer.data, trainer.epochs = info.get("data"), int(info.get("settings", {}).get("epochs", 0))
        trainer.state = Progress(
            epoch=int(state["epoch"]), batch=int(state["batch"]), loss_sum=float(state["loss_sum"]),
            correct=float(state["correct"]), seen=int(state["seen"]), seconds=float(state["seconds"]),
            history=list(state["history"]),
        )
        return trainer

    def finish(self, test: Dataset, *, plots: bool = True) -> dict[str, Any]:
        """Evaluate on `test` and complete the run folder: summary.json and, with `plots`
        and matplotlib, curves.png and confusion.png. Returns `evaluate()`'s result."""
        result = evaluate(self.model, test)
        if self.folder is None:
            return result
        self.folder.write_summary(self.summary(result, test))
        if plots:
            classes = list(test.spec.classes)
            counts = confusion_matrix(test.labels, result["predictions"], len(classes))
            self.folder.draw_plots(self.history, counts, classes, f"{self.name} on {test.spec.name}", self.log)
        return result

    def summary(self, result: dict[str, Any], test: Dataset) -> dict[str, Any]:
        """summary.json: the run's description with its test result and where it ran."""
        model = self.model
        return {
            "model": self.name, "settings": self.settings(), "data": test.source or test.spec.name,
            "train_images": self.train_images, "test_images": len(test),
            "epochs": len(self.history), "test_accuracy": result["accuracy"], "test_loss": result["loss"],
            "train_seconds": sum(row["seconds"] for row in self.history),
            "backend": model.backend, "device": str(model.device), "dtype": model.dtype,
            "machine": machine.cpu(), "xpcnn": __version__, "date": time.strftime("%Y-%m-%d"),
        }

    # -- the loop ------------------------------------------------------------------------

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self._stop_requested = True

    def fit(self, train: Dataset, epochs: int, val: Dataset | None = None) -> list[dict[str, Any]]:
        """Train until `epochs` epochs are complete (counting those already done)."""
        # The run's total: what the schedule was planned for (for_preset) or what fit was
        # asked for, whichever is more; a run fitted part of the way continues to it on resume.
        self.epochs = max(self.epochs, epochs)
        self.data, self.train_images = data_statistics(train), len(train)
        in_main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, self._on_sigint) if in_main_thread else None
        try:
            # Non-finite values are caught by the loss check below; NumPy's overflow
            # warnings on the way there would only repeat it less clearly.
            with np.errstate(all="ignore"):
                while self.state.epoch < epochs:
                    self._run_epoch(train, epochs, val)
        finally:
            if in_main_thread:
                signal.signal(signal.SIGINT, previous)
        return self.state.history

    def _progress_bar(self, total: int, epochs: int) -> Any:
        if not self.progress:
            return None
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return None
        return tqdm(total=total, initial=self.state.batch, desc=f"epoch {self.state.epoch + 1}/{epochs}",
                    unit="batch", leave=False, dynamic_ncols=True)

    def _run_epoch(self, train: Dataset, epochs: int, val: Dataset | None) -> None:
        model, s = self.model, self.state
        total = num_batches(len(train), self.batch_size)
        bar = self._progress_bar(total, epochs)
        started = time.perf_counter()
        try:
            for x, y in batches(
                train,
                self.batch_size,
                seed=self.seed,
                epoch=s.epoch,
                start=s.batch,
                augment=self.augment,
                backend_name=model.backend,
                device=model.device,
                dtype=model.dtype,
            ):
                if self._stop_requested:
                    s.seconds += time.perf_counter() - started
                    path = self.save()
                    raise TrainingInterrupted(f"interrupted at epoch {s.epoch + 1}, batch {s.batch}", path)
                self._step(x, y)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{s.loss_sum / s.seen:.4f}", acc=f"{s.correct / s.seen:.2%}", refresh=False)
                if self.checkpoint_every and self.optimizer.steps % self.checkpoint_every == 0 and s.batch < total:
                    s.seconds += time.perf_counter() - started
                    started = time.perf_counter()
                    self.save()
        finally:
            if bar is not None:
                bar.close()
        s.seconds += time.perf_counter() - started
        self._finish_epoch(epochs, val)

    def _step(self, x: Any, y: Any) -> None:
        s, model = self.state, self.model
        where = f"step {self.optimizer.steps + 1} (epoch {s.epoch + 1}, batch {s.batch + 1})"
        hooks = (AnomalyHook(where),) if self.anomaly else ()
        try:
            with model.hooked(*hooks):
                logits = model.forward(x, training=True)
                loss = self.loss_fn.forward(logits, y)
                loss_value = float(loss)
                if not math.isfinite(loss_value):
                    raise TrainingDiverged(
                        f"loss is {loss_value} at {where}, lr {self.optimizer.current_lr:g}; "
                        "weights are from the step before; --detect-anomaly names the first layer with a NaN/Inf"
                    )
                model.backward(self.loss_fn.backward(), input_grad=False)
        except (TrainingDiverged, NonFiniteError) as exc:
            last_good = self.checkpoint_path if self.checkpoint_path and self.checkpoint_path.exists() else None
            raise type(exc)(f"{exc}" + (f"; last good checkpoint: {last_good}" if last_good else "")) from None
        self.optimizer.step()
        n = int(y.shape[0])
        s.loss_sum += loss_value * n
        s.correct += float(count_correct(logits, y))
        s.seen += n
        s.batch += 1

    def _finish_epoch(self, epochs: int, val: Dataset | None) -> None:
        s = self.state
        row: dict[str, Any] = {
            "epoch": s.epoch + 1,
            "train_loss": s.loss_sum / max(s.seen, 1),
            "train_accuracy": s.correct / max(s.seen, 1),
            "lr": self.optimizer.current_lr,
            "seconds": s.seconds,
            "images_per_second": s.seen / s.seconds if s.seconds > 0 else None,
        }
        if val is not None:
            result = evaluate(self.model, val)
            row["val_loss"], row["val_accuracy"] = result["loss"], result["accuracy"]
        s.history.append(row)
        s.epoch, s.batch, s.loss_sum, s.correct, s.seen, s.seconds = s.epoch + 1, 0, 0.0, 0.0, 0, 0.0
        message = f"epoch {row['epoch']}/{epochs}: loss {row['train_loss']:.4f}, accuracy {row['train_accuracy']:.2%}"
        if val is not None:
            message += f" | val loss {row['val_loss']:.4f}, accuracy {row['val_accuracy']:.2%}"
        self.log(message + f" | {row['seconds']:.1f} s")
        self.save()
