"""The training loop and the run it writes.

One step (xpcnn.training_step): forward, loss and backward, a finiteness check of the
loss (before any weight changes), optimizer update. The loss and the count of correct
predictions are the only values that leave the device: two scalars per step, in one
transfer. A run with a folder checkpoints every epoch and every k steps, stops cleanly
on Ctrl-C after saving, and resumes to the same weights an uninterrupted run reaches:
the batch order is a function of (seed, epoch), and the optimizer state, dropout
counters and partial-epoch sums are all in the checkpoint. The checkpoint also describes
the run (model, settings, data statistics), so `xpcnn evaluate`, `predict` and
`train --resume` take one written from Python as well.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import backend, distributed, presets
from .._version import __version__
from ..datasets import Dataset, Selection, batches, load_dataset, num_batches
from ..diagnostics import machine
from ..diagnostics.anomaly import AnomalyHook, NonFiniteError
from ..evaluation import evaluate
from ..io.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from ..layers.base import integer
from ..losses import SoftmaxCrossEntropy
from ..metrics import confusion_matrix
from ..model import Sequential
from ..optim import Optimizer
from ..presets import Recipe, SettingsError
from .run_folder import RunFolder
from .step import TrainingStep, can_record

Splits = tuple[Dataset, Dataset | None, Dataset]  # train, validation (or None), test


class SettingsConflict(SettingsError):
    """A resumed run was given a setting that differs from its saved one."""

    def __init__(self, field: str, saved: Any, given: Any) -> None:
        super().__init__(field, f"{given} differs from the run's saved {saved}; a resumed run continues as it was "
                                "started (start a new run to change it)")
        self.saved, self.given = saved, given


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the weights are those before that step."""


class TrainingInterrupted(RuntimeError):
    """Training stopped on SIGINT (Ctrl-C) or SIGTERM after saving a checkpoint."""

    def __init__(self, message: str, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint


STOPS = (TrainingDiverged, TrainingInterrupted)  # in data-parallel training, every process stops together


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
    `finish(test)`, the summary and plots. `name` names the model in the run's record.

    Data-parallel (xpcnn.distributed): `comm` makes it one of the processes of an MPI job;
    `workers` > 1 trains with that many threads, each on a replica of the model and its
    share of every batch, which uses more cores where NumPy's element-wise work runs on
    one (the replicas share the parameters and optimizer state; each worker updates its
    part, so after such a fit `model.grads` holds the first worker's share of the last
    batch's gradient, not the whole); None chooses at `fit` (machine.default_workers,
    what `xpcnn train` does). Either way the run learns what one model on whole batches
    learns, to float rounding (the shares are summed in another order). While hooks are
    attached to the model (`model.hooked`), it trains alone, so that they see whole
    batches. With worker
    threads on glibc, `machine.keep_freed_memory()` (which `xpcnn train` calls) saves
    the page faults of memory handed back to the OS after every step.

    On PyTorch with CUDA, `cuda_graphs` None or True records each training step as CUDA
    graphs and replays them (xpcnn.training_step): the same arithmetic, with one launch
    instead of hundreds. Not in data-parallel runs, nor while hooks or
    `anomaly` watch the layers; True raises where the backend cannot record."""

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
        comm: distributed.Communicator | None = None,
        workers: int | None = 1,
        cuda_graphs: bool | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if workers is not None:
            workers = integer(workers, "workers", 1)
        if cuda_graphs not in (None, True, False):
            raise TypeError(f"cuda_graphs must be True, False or None, got {cuda_graphs!r}")
        if checkpoint_every is not None and checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1 step, got {checkpoint_every}")
        self.model, self.optimizer = model, optimizer
        self.loss_fn = SoftmaxCrossEntropy(check_labels=False)  # Dataset checked the labels on the host
        self.batch_size, self.seed, self.name = batch_size, seed, name
        self.augment = augment  # random shifts of up to this many pixels (see datasets.batches)
        self.folder = RunFolder(run_dir) if run_dir is not None else None
        # Data-parallel over comm's processes (see xpcnn.distributed); the first writes
        # the run folder and reports, the others train quietly beside it.
        self.comm = comm or distributed.Single()
        self.workers = workers  # threads sharing each batch (None: chosen at fit, see choose_workers)
        self.cuda_graphs = cuda_graphs  # record steps as CUDA graphs (None: where they can be; see _use_graphs)
        self._steps: TrainingStep | None = None  # the steps of the current fit
        self.graph_shapes = 0  # batch shapes whose steps the last fit replayed as CUDA graphs
        if not self.comm.is_root:
            progress, log = False, _quiet
        self.checkpoint_every, self.progress, self.log = checkpoint_every, progress, log
        self.anomaly = anomaly  # check every layer for NaN/Inf (see xpcnn.anomaly)
        self.epochs = 0  # the run's total number of epochs (see fit)
        self.data: dict[str, Any] | None = None  # data_statistics() of the training set
        self.selection: Selection | None = None  # how to read the training images again
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
        """Everything the run was started with: model, dtype, seed, epochs, batch, optimizer,
        learning rate and schedule, augmentation, and which data (`Selection`, if known)."""
        config = self.optimizer.config()
        schedule = config["schedule"]
        return {
            "model": self.name, "dtype": self.model.dtype, "seed": self.seed,
            "epochs": self.epochs, "batch_size": self.batch_size, "optimizer": config["type"].lower(),
            "lr": config["lr"], "momentum": config.get("momentum", 0.0), "weight_decay": config["weight_decay"],
            "schedule": schedule["type"], "warmup": schedule.get("warmup", 0), "augment": self.augment,
            "data": None if self.selection is None else self.selection.to_dict(),
        }

    def describe(self) -> str:
        """One line: model, size, backend, epochs, optimizer and learning rate, batch, workers."""
        model, settings, now = self.model, self.settings(), self.optimizer.current_lr
        lr = f"lr {settings['lr']:g}" + (f" (now {now:.3g})" if now != settings["lr"] else "")
        workers = f", {self.workers} worker threads" if (self.workers or 1) > 1 and self.comm.size == 1 else ""
        return (f"{self.name} ({model.num_params():,} parameters) on {model.backend} ({model.device}, {model.dtype}) "
                f"for {self.epochs} epoch{'s' if self.epochs != 1 else ''}, {settings['optimizer']} {lr}, "
                f"batch {self.batch_size}{workers}")

    def conflicts(self, **given: Any) -> list[tuple[str, Any, Any]]:
        """(setting, saved value, given value) for each given setting that differs from
        the run's: the keys of `settings()` and of its data (dataset, limit, val_split),
        and `data_dir`, which matches when it is (the parent of) a folder the data came from."""
        saved = self.settings()
        data = saved.pop("data") or {}
        found = []
        for key, value in given.items():
            if key == "data_dir":
                folders = [Path(folder) for folder in data.get("folders") or []]
                here = Path(value).resolve()
                if not any(folder in (here, here / str(data.get("dataset"))) for folder in folders):
                    found.append((key, ", ".join(map(str, folders)) or "(the bundled subset)", value))
                continue
            if key == "model":
                value = presets.canonical(value)
            mine = data.get(key) if key in ("dataset", "limit", "val_split") else saved[key]
            if value != mine:
                found.append((key, mine, value))
        return found

    def extend(self, epochs: int, steps_per_epoch: int) -> str:
        """Continue the run to `epochs` in total, beyond what it was planned for: the
        learning-rate schedule is stretched over the new number of steps. Returns one line
        saying what the learning rate will do."""
        if epochs <= self.epochs:
            raise SettingsError("epochs", f"{epochs}: a run can be extended, not shortened; it was planned for "
                                f"{self.epochs} epochs")
        old_total, new_total = self.epochs * steps_per_epoch, epochs * steps_per_epoch
        self.optimizer.schedule = self.optimizer.schedule.replanned(old_total, new_total)
        lr_now, lr_last = self.optimizer.current_lr, self.optimizer.lr * self.optimizer.schedule(new_total - 1)
        previous, self.epochs = self.epochs, epochs
        return (f"extending the run from {previous} to {epochs} epochs: the {self.optimizer.schedule.config()['type']} "
                f"schedule "
                f"now spans {new_total} steps; learning rate {lr_now:.3g} at step {self.optimizer.steps + 1}, "
                f"{lr_last:.3g} at step {new_total}")

    def trainer_state(self) -> dict[str, Any]:
        """The JSON part of a checkpoint: progress, seeds and the description of the run."""
        s = self.state
        return {
            "epoch": s.epoch, "batch": s.batch, "loss_sum": s.loss_sum, "correct": s.correct,
            "seen": s.seen, "seconds": s.seconds, "history": s.history,
            "batch_size": self.batch_size, "seed": self.seed, "augment": self.augment, "workers": self.workers,
            "info": {"model": self.name, "settings": self.settings(), "data": self.data},
        }

    def save(self) -> Path | None:
        """Write the checkpoint and the metrics file (both atomically); returns the path.
        In data-parallel training only the first process writes (all hold the same state)."""
        if self.folder is None:
            return None
        if not self.comm.is_root:
            return self.folder.checkpoint
        save_checkpoint(self.folder.checkpoint, self.model, self.optimizer, self.trainer_state())
        self.folder.write_metrics(self.state.history)
        return self.folder.checkpoint

    @classmethod
    def for_preset(cls, name: str, recipe: Recipe | None = None, train_size: int = 60_000, *, seed: int = 0,
                   backend_name: str = "numpy", device: Any = None, dtype: str = "float32", **options: Any) -> Trainer:
        """A trainer for a new run of preset `name` with `recipe` (default: the preset's
        own), its schedule planned over `train_size` training images; what `xpcnn train`
        runs. `options` are Trainer's (run_dir, progress, workers: default None, chosen
        at fit as the command chooses them, ...)."""
        recipe = recipe or presets.recipe(name)
        options.setdefault("workers", None)  # chosen as `xpcnn train` chooses them
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
            raise CheckpointError(f"{path}: has no optimizer or trainer state to resume from (a Trainer's "
                                  "checkpoint has both)")
        info = state.get("info") or {}
        kwargs.setdefault("run_dir", Path(path).parent)
        # The workers the run had (one model before they existed): the same count sums
        # each gradient in the same order, so the resumed run reaches the same weights.
        kwargs.setdefault("workers", state.get("workers", 1))
        kwargs.setdefault("name", info.get("model", "custom"))
        trainer = cls(checkpoint.model, _saved_optimizer(checkpoint), batch_size=state["batch_size"],
                      seed=state["seed"], augment=state["augment"], **kwargs)
        trainer.data, trainer.epochs = info.get("data"), info.get("settings", {}).get("epochs", 0)
        trainer.selection = checkpoint.selection()
        trainer.state = Progress(
            epoch=int(state["epoch"]), batch=int(state["batch"]), loss_sum=float(state["loss_sum"]),
            correct=float(state["correct"]), seen=int(state["seen"]), seconds=float(state["seconds"]),
            history=list(state["history"]),
        )
        return trainer

    def finish(self, test: Dataset, *, plots: bool = True) -> dict[str, Any]:
        """Evaluate on `test` and complete the run folder: summary.json and, with `plots`
        and matplotlib, curves.png and confusion.png. Returns `evaluate()`'s result."""
        with distributed.failing_alone_ends_all(self.comm):
            result = evaluate(self.model, test, comm=self.comm)
        if self.folder is None or not self.comm.is_root:
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
            "processes": self.comm.size, "workers": self.workers,
            "fast_paths": machine.fast_paths(model.backend),
            "machine": machine.cpu(), "xpcnn": __version__, "date": time.strftime("%Y-%m-%d"),
        }

    # -- the loop ------------------------------------------------------------------------

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        self._stop_requested = True

    def fit(self, train: Dataset, epochs: int, val: Dataset | None = None) -> list[dict[str, Any]]:
        """Train until `epochs` epochs are complete (counting those already done)."""
        # The run's total: what the schedule was planned for (for_preset) or what fit was
        # asked for, whichever is more; a run fitted part of the way continues to it on resume.
        self.epochs = max(self.epochs, epochs)
        per_epoch = num_batches(len(train), self.batch_size)
        if self.state.batch > per_epoch:
            raise ValueError(f"the run stands at batch {self.state.batch} of an epoch, but this training set has "
                             f"{per_epoch} batches: it is not the run's data")
        self._check_shards(len(train))
        if self.comm.size > 1:
            distributed.check_same(self.comm, "training data or settings", self._facts(train))
        self.data, self.selection, self.train_images = data_statistics(train), train.selection, len(train)
        if self.model.hooks:  # they (a TimerHook, say) would see one worker's share: train alone
            self.workers = 1
        with self._stopping_on_signals():
            if self.choose_workers(train) > 1:
                self._note_useless_workers()
                self._fit_in_threads(train, epochs, val)
            else:
                self._fit_here(train, epochs, val)
        return self.state.history

    @contextlib.contextmanager
    def _stopping_on_signals(self) -> Iterator[None]:
        """SIGINT (Ctrl-C) and SIGTERM (what batch schedulers send at the time limit, and
        mpirun passes on, shortly before it kills the processes) request a stop at the
        next batch."""
        in_main_thread = threading.current_thread() is threading.main_thread()  # where handlers can be set
        stop_signals = (signal.SIGINT, signal.SIGTERM) if in_main_thread else ()
        previous = {number: signal.signal(number, self._on_stop_signal) for number in stop_signals}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def _fit_here(self, train: Dataset, epochs: int, val: Dataset | None) -> None:
        # Recorded steps hold arrays of the model as it is now: recorded again each fit.
        self._steps = TrainingStep(self.model, self.optimizer, self.loss_fn, graphs=self._use_graphs(),
                                   log=self.log)
        if self._steps.graphs:
            self.log("training steps are recorded as CUDA graphs and replayed (cuda_graphs=False runs them directly)")
        # Non-finite values are caught by the loss check of each step; NumPy's overflow
        # warnings on the way there would only repeat it less clearly.
        try:
            with np.errstate(all="ignore"), distributed.failing_alone_ends_all(self.comm, STOPS):
                while self.state.epoch < epochs:
                    self._run_epoch(train, epochs, val)
        finally:  # the recordings hold GPU memory: not beyond the fit
            self.graph_shapes, self._steps = self._steps.recorded_shapes, None

    def _use_graphs(self) -> bool:
        """Whether this fit records its steps as CUDA graphs (see the class docstring)."""
        if self.cuda_graphs is False:
            return False
        able = can_record(self.model)
        if self.cuda_graphs and not able:
            raise SettingsError("cuda_graphs", "CUDA graphs need PyTorch on a CUDA device (CuPy cannot record "
                                f"matrix products); this model is on {self.model.backend} ({self.model.device})")
        alone = self.comm.size == 1 and not self.model.hooks and not self.anomaly
        if self.cuda_graphs and not alone:
            self.log("note: no CUDA graphs in data-parallel training or while hooks or anomaly checks watch the layers")
        return alone and able

    def _fit_in_threads(self, train: Dataset, epochs: int, val: Dataset | None) -> None:
        """Train as `self.workers` threads, each with a replica of the model and its share
        of every batch (see xpcnn.distributed), this trainer the first; BLAS gets the
        cores shared out among them."""
        members = distributed.Threads.group(self.workers)
        self.optimizer.make_state()  # shared from now on: made ready before the threads run
        helpers = [self._replica(member) for member in members[1:]]
        errors: list[BaseException] = []

        def work(helper: Trainer) -> None:
            try:  # a failure has told the others already (failing_alone_ends_all)
                helper._fit_here(train, epochs, val)
            except BaseException as exc:  # noqa: BLE001  (raised by the first thread below)
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(helper,), name=f"xpcnn worker {helper.comm.rank}")
                   for helper in helpers]
        alone, self.comm = self.comm, members[0]
        try:
            with machine.blas_threads(max(1, machine.usable_cores() // self.workers)):
                self._run_beside(threads, train, epochs, val)
        except threading.BrokenBarrierError:
            if _first_real(errors) is None:
                raise  # else what broke the barrier, a worker's failure, is raised below
        finally:
            self.comm = alone
        failure = _first_real(errors)  # also a worker that failed after its last meeting with the others
        if failure is not None:
            raise failure from None

    def _run_beside(self, threads: list[threading.Thread], train: Dataset, epochs: int,
                    val: Dataset | None) -> None:
        """This trainer's share of the training, with the workers' threads running beside it."""
        try:
            for thread in threads:
                thread.start()
            self._fit_here(train, epochs, val)
        except STOPS:
            raise  # the workers stop at the same step
        except BaseException as exc:
            self.comm.fail(exc)  # releases workers waiting for this one (a failed start, too)
            raise
        finally:
            for thread in threads:
                if thread.ident is not None:
                    thread.join()

    def _note_useless_workers(self) -> None:
        if not backend.elementwise_on_one_thread(self.model.backend):
            self.log(f"note: {self.workers} worker threads on {self.model.backend}, whose operations use every core "
                     "already: expect no gain")
        elif not machine.can_limit_blas():
            self.log(f"note: {self.workers} worker threads without threadpoolctl, which limits each one's BLAS "
                     "threads: they will slow each other down (pip install 'xpcnn[threads]')")
        elif self.workers > machine.usable_cores():
            self.log(f"note: {self.workers} worker threads on {machine.usable_cores()} usable cores: the threads "
                     "beyond one a core only take turns (each adds its own work and waits)")

    def _replica(self, comm: distributed.Communicator) -> Trainer:
        """A quiet trainer with copies of this one's model, optimizer and progress that
        share its parameters and optimizer state (see distributed.Threads)."""
        shared = {id(layer.params): layer.params for layer in self.model}
        shared[id(self.optimizer.state)] = self.optimizer.state
        model, optimizer = copy.deepcopy((self.model, self.optimizer), shared)  # the optimizer keeps the copied model
        replica = Trainer(model, optimizer, batch_size=self.batch_size, seed=self.seed, augment=self.augment,
                          checkpoint_every=self.checkpoint_every, progress=False, log=_quiet, anomaly=self.anomaly,
                          comm=comm)
        replica.epochs, replica.state = self.epochs, copy.deepcopy(self.state)
        return replica

    def _facts(self, train: Dataset) -> dict[str, Any]:
        """What must be the same in every process of a data-parallel run: the settings
        (where the data was read may differ between machines; its content may not), the
        progress, and the training images and labels."""
        settings = self.settings()
        settings["data"] = {key: value for key, value in (settings["data"] or {}).items() if key != "folders"}
        content = hashlib.blake2b(np.ascontiguousarray(train.images), digest_size=16)
        content.update(np.ascontiguousarray(train.labels))
        return {**settings, "progress": (self.state.epoch, self.state.batch, self.optimizer.steps),
                "images": len(train), "content": content.hexdigest()}

    def choose_workers(self, train: Dataset) -> int:
        """The worker threads for training on `train`, kept from now on: those given, or
        (None) the default for this model, batch and machine (machine.default_workers);
        at most the smallest batch, and 1 under MPI."""
        if self.workers is None:
            step = self.model.training_flops((1, *train.images.shape[1:])) * self.batch_size
            self.workers = machine.default_workers(self.model.backend, step)
        # Every worker needs a row of every batch, the last (smaller) one included.
        smallest = max(1, self._smallest_batch(len(train)))
        self.workers = 1 if self.comm.size > 1 else min(self.workers, smallest)
        return self.workers

    def _smallest_batch(self, size: int) -> int:
        return min(self.batch_size, size % self.batch_size or self.batch_size, size)

    def _check_shards(self, size: int) -> None:
        """In data-parallel training every process needs a row of every batch."""
        processes, smallest = self.comm.size, self._smallest_batch(size)
        if processes > 1 and smallest < processes:
            raise SettingsError("batch_size", f"{self.batch_size} over {size} images makes batches of as few as "
                                f"{smallest} images, but each of the {processes} processes needs one: use at most "
                                f"{smallest} processes for this run")

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
                shard=(self.comm.rank, self.comm.size),
            ):
                if self.comm.any(self._stop_requested):
                    s.seconds += time.perf_counter() - started
                    path = self.save()
                    raise TrainingInterrupted(f"interrupted at epoch {s.epoch + 1}, batch {s.batch}", path)
                self._step(x, y, self._shard(len(train)))
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

    def _shard(self, size: int) -> distributed.Shard:
        """Where this process's rows of the next batch lie in it."""
        total = min(self.batch_size, size - self.state.batch * self.batch_size)
        start, stop = distributed.shard_bounds(total, self.comm.rank, self.comm.size)
        return distributed.Shard(start, stop - start, total, self.comm)

    def _step(self, x: Any, y: Any, shard: distributed.Shard) -> None:
        s, model, steps = self.state, self.model, self._steps
        assert steps is not None, "_step runs inside fit"
        where = f"step {self.optimizer.steps + 1} (epoch {s.epoch + 1}, batch {s.batch + 1})"
        hooks = (AnomalyHook(where),) if self.anomaly else ()
        try:
            with model.hooked(*hooks), distributed.sharded(shard):
                # The loss and the count of right answers come to the host together: one
                # transfer per step (on a GPU, its one synchronisation).
                loss_value, correct = backend.to_numpy(steps.compute(x, y, shard.rows / shard.total)).tolist()
                # Summed over the processes: every one sees the same loss and stops together.
                loss_sum, correct = self.comm.sum_numbers(loss_value * shard.rows, correct)
                if not math.isfinite(loss_sum):
                    raise TrainingDiverged(
                        f"loss is {loss_sum / shard.total} at {where}, lr {self.optimizer.current_lr:g}; "
                        "weights are from the step before; --detect-anomaly names the first layer with a NaN/Inf"
                    )
        except (TrainingDiverged, NonFiniteError) as exc:
            last_good = self.checkpoint_path if self.checkpoint_path and self.checkpoint_path.exists() else None
            raise type(exc)(f"{exc}" + (f"; last good checkpoint: {last_good}" if last_good else "")) from None
        if self.comm.shares_parameters:
            self.comm.update_together(model, self.optimizer)
        else:
            distributed.sum_gradients(model, self.comm)
            steps.update()
        s.loss_sum += loss_sum
        s.correct += correct
        s.seen += shard.total
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
            result = evaluate(self.model, val, comm=self.comm)
            row["val_loss"], row["val_accuracy"] = result["loss"], result["accuracy"]
        s.history.append(row)
        s.epoch, s.batch, s.loss_sum, s.correct, s.seen, s.seconds = s.epoch + 1, 0, 0.0, 0.0, 0, 0.0
        message = f"epoch {row['epoch']}/{epochs}: loss {row['train_loss']:.4f}, accuracy {row['train_accuracy']:.2%}"
        if val is not None:
            message += f" | val loss {row['val_loss']:.4f}, accuracy {row['val_accuracy']:.2%}"
        self.log(message + f" | {row['seconds']:.1f} s")
        self.save()


def start_run(name: str, recipe: Recipe | None = None, *, dataset: str = "mnist", data_dir: str | Path | None = None,
              download: bool = True, allow_bundled: bool = True, limit: int | None = None, seed: int = 0,
              val_split: float = 0.0,
              backend_name: str = "numpy", device: Any = None, dtype: str = "float32",
              log: Callable[[str], None] = print, **options: Any) -> tuple[Trainer, Splits]:
    """What `xpcnn train` starts: the data (see datasets.load_dataset: full files, else for
    MNIST with `allow_bundled` the bundled subset), at most `limit` images of each split
    and `val_split` held out, and a Trainer for preset `name` with `recipe` (default: the
    preset's). `options` are Trainer's."""
    loaded = load_dataset(dataset, data_dir, download=download, allow_bundled=allow_bundled, log=log)
    log(f"data: {loaded.source}")
    data = loaded.splits(limit, seed, val_split)
    trainer = Trainer.for_preset(name, recipe, len(data[0]), seed=seed, backend_name=backend_name, device=device,
                                 dtype=dtype, log=log, **options)
    trainer.choose_workers(data[0])
    return trainer, data


def resume_run(checkpoint: str | Path, backend_name: str = "numpy", device: Any = None, *, epochs: int | None = None,
               expected: dict[str, Any] | None = None, log: Callable[[str], None] = print,
               **options: Any) -> tuple[Trainer, Splits]:
    """What `xpcnn train --resume` continues: the run with every saved setting and the
    same images (read again from where they were read; never other data). Settings in
    `expected` that differ raise SettingsConflict; `epochs` beyond the saved total
    extends the run (see Trainer.extend)."""
    trainer = Trainer.resume(checkpoint, backend_name, device, log=log, **options)
    if trainer.selection is None:
        raise ValueError(f"{checkpoint}: the run does not record which images it trained on (a custom Dataset); "
                         "continue it from Python with Trainer.resume")
    conflicts = trainer.conflicts(**(expected or {}))
    if conflicts:
        raise SettingsConflict(*conflicts[0])
    data = trainer.selection.load()
    log(f"data: {data[0].source}")
    trainer.choose_workers(data[0])
    if epochs is not None and epochs != trainer.epochs:
        log(trainer.extend(epochs, num_batches(len(data[0]), trainer.batch_size)))
    return trainer, data


def _quiet(message: str) -> None:
    """The log of the processes and threads that leave reporting to the first."""


def _first_real(errors: list[BaseException]) -> BaseException | None:
    """The error a worker failed with, not the broken barrier other workers then met."""
    return next((error for error in errors if not isinstance(error, threading.BrokenBarrierError)), None)


def _saved_optimizer(checkpoint: Checkpoint) -> Optimizer:
    """The optimizer of a checkpoint with its state, on the model's backend and device."""
    model = checkpoint.model
    try:
        optimizer = Optimizer.from_config(model, checkpoint.optimizer["config"])
        arrays = {k: backend.to_backend(v, model.backend, model.device) for k, v in checkpoint.optimizer_arrays.items()}
        optimizer.load_state_arrays(arrays, checkpoint.optimizer["steps"])
    except (TypeError, ValueError) as exc:  # settings the optimizer does not take
        raise CheckpointError(f"{checkpoint.path}: field optimizer: {exc}"[:300]) from None
    return optimizer

