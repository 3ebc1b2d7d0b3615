"""Training, evaluation and prediction.

One step: forward, loss, a finiteness check of the loss (before any weight changes),
backward, optimizer update. The loss and the count of correct predictions are the only
values that leave the device, as two scalars per step. A run can checkpoint every epoch
and every k steps, stops cleanly on Ctrl-C after saving, and resumes to the same weights
an uninterrupted run reaches: the batch order is a function of (seed, epoch), and the
optimizer state, dropout counters and partial-epoch sums are all in the checkpoint.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from . import backend
from .anomaly import NonFiniteError, backward_checked, forward_checked
from .atomic import atomic_write_text
from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .datasets import Dataset, batches, num_batches
from .losses import SoftmaxCrossEntropy
from .model import Sequential
from .optim import OPTIMIZERS, Optimizer, schedule_from_config

CHECKPOINT_NAME = "checkpoint.npz"
METRICS_NAME = "metrics.jsonl"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the weights are those before that step."""


class TrainingInterrupted(RuntimeError):
    """Training stopped on SIGINT (Ctrl-C) after saving a checkpoint."""

    def __init__(self, message: str, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint


def count_correct(logits: Any, labels: Any) -> Any:
    """Number of rows whose arg-max equals the label, as a 0-d float array on the device."""
    xp = array_namespace(logits)
    return xp.sum(xp.astype(xp.argmax(logits, axis=1) == labels, xp.float32))


def evaluate(model: Sequential, dataset: Dataset, batch_size: int = 1000) -> dict[str, Any]:
    """Mean loss, accuracy and host predictions over `dataset`, in evaluation mode."""
    loss_fn = SoftmaxCrossEntropy()
    total_loss, predictions = 0.0, []
    for x, y in batches(dataset, batch_size, shuffle=False, backend_name=model.backend, device=model.device, dtype=model.dtype):
        logits = model.forward(x, training=False)
        total_loss += float(loss_fn.forward(logits, y)) * int(y.shape[0])
        predictions.append(backend.to_numpy(array_namespace(logits).argmax(logits, axis=1)))
    predicted = np.concatenate(predictions) if predictions else np.zeros(0, np.int64)
    count = max(len(dataset), 1)
    return {"loss": total_loss / count, "accuracy": float(np.mean(predicted == dataset.labels)) if len(dataset) else 0.0, "predictions": predicted}


def predict(model: Sequential, images: np.ndarray, mean: float, std: float, batch_size: int = 1000) -> np.ndarray:
    """Class probabilities (n, K) on the host for uint8 images (n, H, W) or (H, W)."""
    images = np.asarray(images)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"predict expects uint8 images (n, H, W), got {images.shape} {images.dtype}")
    outputs = []
    for start in range(0, images.shape[0], batch_size):
        chunk = (images[start : start + batch_size].astype(np.float32) / 255.0 - mean) / std
        x = backend.to_backend(chunk[:, None], model.backend, model.device, model.dtype)
        logits = backend.to_numpy(model.forward(x, training=False)).astype(np.float64)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        outputs.append(shifted / shifted.sum(axis=1, keepdims=True))
    return np.concatenate(outputs)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    counts = np.zeros((classes, classes), np.int64)
    np.add.at(counts, (labels, predictions), 1)
    return counts


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


class Trainer:
    """Trains a model with an optimizer on a Dataset, writing into `run_dir` (optional)
    the latest checkpoint and one JSON line of metrics per epoch."""

    def __init__(
        self,
        model: Sequential,
        optimizer: Optimizer,
        *,
        batch_size: int = 64,
        seed: int = 0,
        run_dir: str | Path | None = None,
        checkpoint_every: int | None = None,
        progress: bool = True,
        log: Callable[[str], None] = print,
        info: dict[str, Any] | None = None,
        anomaly: bool = False,
        augment: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if checkpoint_every is not None and checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1 step, got {checkpoint_every}")
        self.model, self.optimizer, self.loss_fn = model, optimizer, SoftmaxCrossEntropy()
        self.batch_size, self.seed = batch_size, seed
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.checkpoint_every, self.progress, self.log = checkpoint_every, progress, log
        self.anomaly = anomaly  # check every layer for NaN/Inf (see xpcnn.anomaly)
        self.augment = augment  # random shifts of up to this many pixels (see datasets.batches)
        self.info = dict(info or {})  # saved with checkpoints: model name, data statistics...
        self.state = Progress()
        self._stop_requested = False

    @property
    def checkpoint_path(self) -> Path | None:
        return self.run_dir / CHECKPOINT_NAME if self.run_dir else None

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.state.history

    # -- checkpoints -------------------------------------------------------------------

    def trainer_state(self) -> dict[str, Any]:
        s = self.state
        return {
            "epoch": s.epoch, "batch": s.batch, "loss_sum": s.loss_sum, "correct": s.correct,
            "seen": s.seen, "seconds": s.seconds, "history": s.history,
            "batch_size": self.batch_size, "seed": self.seed, "augment": self.augment, "info": self.info,
        }

    def save(self) -> Path | None:
        """Write the checkpoint and the metrics file (both atomically); returns the path."""
        if self.run_dir is None:
            return None
        save_checkpoint(self.checkpoint_path, self.model, self.optimizer, self.trainer_state())
        lines = "".join(json.dumps(row) + "\n" for row in self.state.history)
        atomic_write_text(self.run_dir / METRICS_NAME, lines)
        return self.checkpoint_path

    @classmethod
    def resume(cls, path: str | Path, backend_name: str = "numpy", device: Any = None, **kwargs: Any) -> "Trainer":
        """A trainer continuing from a checkpoint written by `save()`."""
        checkpoint = load_checkpoint(path, backend_name, device)
        if checkpoint.optimizer is None or "epoch" not in checkpoint.trainer:
            raise ValueError(f"{path}: has no optimizer or trainer state to resume from")
        optimizer = optimizer_from_checkpoint(checkpoint)
        state = checkpoint.trainer
        kwargs.setdefault("run_dir", Path(path).parent)
        trainer = cls(checkpoint.model, optimizer, batch_size=state["batch_size"], seed=state["seed"],
                      augment=int(state.get("augment", 0)), info=state.get("info"), **kwargs)
        trainer.state = Progress(
            epoch=int(state["epoch"]), batch=int(state["batch"]), loss_sum=float(state["loss_sum"]),
            correct=float(state["correct"]), seen=int(state["seen"]), seconds=float(state["seconds"]),
            history=list(state["history"]),
        )
        return trainer

    # -- the loop ------------------------------------------------------------------------

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self._stop_requested = True

    def fit(self, train: Dataset, epochs: int, val: Dataset | None = None) -> list[dict[str, Any]]:
        """Train until `epochs` epochs are complete (counting those already done)."""
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
        return tqdm(total=total, initial=self.state.batch, desc=f"epoch {self.state.epoch + 1}/{epochs}", unit="batch", leave=False, dynamic_ncols=True)

    def _run_epoch(self, train: Dataset, epochs: int, val: Dataset | None) -> None:
        model, s = self.model, self.state
        total = num_batches(len(train), self.batch_size)
        bar = self._progress_bar(total, epochs)
        started = time.perf_counter()
        try:
            for x, y in batches(train, self.batch_size, seed=self.seed, epoch=s.epoch, start=s.batch, augment=self.augment,
                                backend_name=model.backend, device=model.device, dtype=model.dtype):
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
        self._finish_epoch(train, epochs, val)

    def _step(self, x: Any, y: Any) -> None:
        s, model = self.state, self.model
        where = f"step {self.optimizer.steps + 1} (epoch {s.epoch + 1}, batch {s.batch + 1})"
        try:
            logits = forward_checked(model, x, True, where) if self.anomaly else model.forward(x, training=True)
            loss = self.loss_fn.forward(logits, y)
            loss_value = float(loss)
            if not math.isfinite(loss_value):
                raise TrainingDiverged(
                    f"loss is {loss_value} at {where}, lr {self.optimizer.current_lr:g}; "
                    "weights are from the step before; --detect-anomaly names the first layer with a NaN/Inf"
                )
            if self.anomaly:
                backward_checked(model, self.loss_fn.backward(), where, input_grad=False)
            else:
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

    def _finish_epoch(self, train: Dataset, epochs: int, val: Dataset | None) -> None:
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


def optimizer_from_checkpoint(checkpoint: Checkpoint) -> Optimizer:
    """Rebuild the optimizer saved with a checkpoint, its state on the model's backend."""
    config = dict(checkpoint.optimizer["config"])
    kind = config.pop("type").lower()
    if kind not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {kind!r} in checkpoint")
    schedule = schedule_from_config(config.pop("schedule"))
    if "betas" in config:
        config["betas"] = tuple(config["betas"])
    optimizer = OPTIMIZERS[kind](checkpoint.model, schedule=schedule, **config)
    model = checkpoint.model
    arrays = {k: backend.to_backend(v, model.backend, model.device) for k, v in checkpoint.optimizer_arrays.items()}
    optimizer.load_state_arrays(arrays, int(checkpoint.optimizer["steps"]))
    return optimizer
