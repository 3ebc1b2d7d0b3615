"""The training loop.

Each step (xpcnn.train.step) runs forward, loss and backward, checks that the loss is
finite before any weight changes, and updates the weights. The loss and the count of
right answers are the only values that leave the device: two scalars per step, in one
transfer. Around the loop, callbacks report, save and may end the run
(xpcnn.train.callbacks), the run record describes it (xpcnn.train.record) and worker
threads share its batches (xpcnn.train.workers). A run stops cleanly on Ctrl-C or SIGTERM
after saving, and resumes to the weights an uninterrupted run reaches: the batch order is
a function of (seed, epoch), and the optimizer state, dropout counters, partial-epoch
sums and recorded callbacks are in the checkpoint.
"""

from __future__ import annotations

import inspect
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from .. import backend, distributed, init, presets
from ..checks import flag, integer, number, optional_flag
from ..datasets import Augment, Dataset, batches, num_batches
from ..diagnostics.anomaly import AnomalyHook, NonFiniteError
from ..evaluation import NotFiniteOutputs, evaluate
from ..hooks import check_points
from ..io.checkpoint import NotFinite, save_checkpoint
from ..io.schema import MAX_EPOCHS, MAX_SEED, MAX_SIZE
from ..losses import SoftmaxCrossEntropy
from ..model import Sequential
from ..optim import Optimizer
from ..presets import Recipe
from . import record
from .callbacks import RECORDED, Callback, recorded, with_own_callbacks
from .layer_stats import LayerStats
from .record import MAX_AUGMENT, Progress
from .run_folder import RunFolder
from .step import TrainingStep, check_graphs, first_param, use_graphs
from .stops import STOPS, TrainingDiverged, TrainingInterrupted, stopping_on_signals
from .workers import check_shards, choose_workers, fit_in_threads, note_useless_workers, quiet, run_facts


class Trainer:
    """Trains a model with an optimizer on a Dataset: `fit(train, epochs, val)`, then
    `finish(test)`.

    `run_dir` (a path or a RunFolder) keeps a run folder (xpcnn.train.run_folder): the
    checkpoint after every epoch and every `checkpoint_every` steps, metrics.jsonl and,
    after finish, summary.json and plots. `name` names the model in the run's record.
    `callbacks` run at fixed points of the fit (xpcnn.train.callbacks), before the
    trainer's own: the progress bar (`progress`) and the run folder's writers. `log`
    receives one line per epoch and the notes (default: printed on stderr).

    Data-parallel: `comm` makes the trainer one process of an MPI job
    (xpcnn.distributed); `workers` > 1 trains with that many threads sharing each batch,
    None chooses at fit (xpcnn.train.workers). Either way the run learns what one model
    on whole batches learns, to float rounding. `anomaly` checks every layer for NaN and
    Inf (xpcnn.diagnostics.anomaly). `cuda_graphs` records the steps as CUDA graphs and
    replays them on torch with CUDA (None), also on CuPy (True: SettingsError here, or
    at fit for a model moved since, on a backend that cannot) or never (False); not in
    data-parallel runs, nor while hooks or anomaly checks watch. The checkpoint records
    it; Trainer.resume keeps it where the backend can record graphs.
    `label_smoothing` eps in [0, 1) trains towards (1 - eps) one_hot + eps / K instead of
    the labels' one-hot rows (SoftmaxCrossEntropy); the training loss is then the smoothed
    one, while evaluation and the validation loss stay the plain cross-entropy.
    """

    def __init__(self, model: Sequential, optimizer: Optimizer, *, batch_size: int = 64, seed: int = 0,
                 augment: int | Augment = 0, run_dir: str | Path | RunFolder | None = None, name: str = "custom",
                 checkpoint_every: int | None = None, progress: bool = True, callbacks: Sequence[Callback] = (),
                 log: Callable[[str], None] | None = None, anomaly: bool = False,
                 comm: distributed.Communicator | None = None, workers: int | None = 1,
                 cuda_graphs: bool | None = None, label_smoothing: float = 0.0) -> None:
        _check_parts(model, optimizer)
        given = _checked_settings({"batch_size": batch_size, "seed": seed, "augment": augment, "run_dir": run_dir,
                                  "name": name, "checkpoint_every": checkpoint_every, "progress": progress,
                                  "callbacks": callbacks, "log": log, "anomaly": anomaly, "comm": comm,
                                  "workers": workers, "cuda_graphs": cuda_graphs, "label_smoothing": label_smoothing})
        check_graphs(given["cuda_graphs"], first_param(model))
        self.model, self.optimizer, self.name = model, optimizer, name
        self.anomaly, self.cuda_graphs = given["anomaly"], given["cuda_graphs"]
        self.batch_size, self.seed, self.augment = given["batch_size"], given["seed"], given["augment"]
        self.label_smoothing, self.workers, self.comm = given["label_smoothing"], given["workers"], given["comm"]
        self.log = given["log"] if self.comm.is_root else quiet  # the first member writes files and reports
        self.folder: RunFolder | None = given["folder"]
        self.callbacks: list[Callback] = given["callbacks"]
        self.continues_run = False  # a run restored from its checkpoint (Trainer.resume) writes where it was
        self.loss_fn = SoftmaxCrossEntropy(check_labels=False,  # Dataset checked the labels on the host
                                           label_smoothing=self.label_smoothing)
        self.epochs = 0  # the run's total (see fit)
        self.data: dict[str, Any] | None = None  # the training set's statistics (Dataset.statistics)
        self.selection = None  # how to read the training images again (datasets.Selection)
        self.data_digest: str | None = None  # the training set's (Dataset.digest): a resumed run checks it
        self.train_images = 0
        self.planned_batches: int | None = None  # the batches an epoch for_preset planned the schedule over
        self.state = Progress()
        self.val: Dataset | None = None  # the validation set of the fit in progress
        self.graph_shapes = 0  # batch shapes whose steps the last fit replayed as CUDA graphs
        self._steps: TrainingStep | None = None  # the steps of the fit in progress
        self.epoch_start: dict[str, np.ndarray] | None = None  # the watched weights as the epoch began (LayerStats)
        self._interrupt = False

    @property
    def history(self) -> list[dict[str, Any]]:
        """One row of metrics per completed epoch."""
        return self.state.history

    @property
    def checkpoint_path(self) -> Path | None:
        return self.folder.checkpoint if self.folder else None

    def settings(self) -> dict[str, Any]:
        """What the run was started with (see xpcnn.train.record.settings)."""
        return record.settings(self)

    def describe(self) -> str:
        """One line: model, size, backend, epochs, optimizer and learning rate, batch, workers."""
        return record.describe(self)

    def summary(self, result: dict[str, Any], test: Dataset) -> dict[str, Any]:
        """summary.json: the run's description with its test `result`, evaluate()'s (see
        record.summary)."""
        return record.summary(self, result, test)

    def choose_workers(self, train: Dataset) -> int:
        """The worker threads for training on `train` (see xpcnn.train.workers.choose_workers)."""
        return choose_workers(self, train)

    def stop(self, reason: str) -> None:
        """End the run, complete, once the current epoch is (a callback's way to stop it):
        `reason` (words) is logged once and recorded, and a resume finds nothing left to
        train."""
        if not isinstance(reason, str) or not reason.strip():
            raise TypeError(f"Trainer.stop reason must be words saying why, got {reason!r}")
        if self.state.stopped is not None:  # asked again (each step of the epoch, say): said already
            return
        self.state.stopped = reason
        self.log(f"stopping after epoch {self.state.epoch if self.state.batch == 0 else self.state.epoch + 1}: "
                 f"{reason}")

    def save(self, path: str | Path | None = None) -> Path | None:
        """Write the run's checkpoint, atomically, to `path` (default: the run folder's
        checkpoint.npz; None without a folder); returns where. In data-parallel training
        only the first process writes (all hold the same state)."""
        path = self.checkpoint_path if path is None else Path(path)
        if path is not None and self.comm.is_root:
            try:
                save_checkpoint(path, self.model, self.optimizer, record.to_checkpoint(self),
                                start=self.epoch_start if self.state.batch else None)
            except NotFinite as exc:  # overflowed weights or statistics that the loss did not show
                kept = f"the last good checkpoint {path} is kept" if path.exists() else "no checkpoint was saved"
                # Not TrainingDiverged, which every member raises together: only the writer sees
                # this, and its failure must end the others (distributed.failing_alone_ends_all).
                raise NonFiniteError(f"{exc.key} holds NaN or Inf after step {self.optimizer.steps}: the run "
                                     f"overflowed (is the learning rate too high?); {kept}") from None
        return path

    @classmethod
    def for_preset(cls, name: str, recipe: Recipe | None = None, train_size: int = 60_000, *, seed: int = 0,
                   input_shape: tuple[int, int, int] | None = None, classes: int = 10, backend_name: str = "numpy",
                   device: Any = None, dtype: str = "float32", width: float = 1.0, **options: Any) -> Trainer:
        """A trainer for a new run of preset `name` for images of `input_shape` (default:
        the preset's) and `classes` classes (`width` scales resnet20's and cifar's
        channels), with `recipe` (default: the preset's own), its
        schedule planned over `train_size` training images; what `xpcnn train` runs.
        `options` are the constructor's (workers default to None, chosen at fit as the
        command chooses them; label_smoothing to the recipe's)."""
        check_preset_options(recipe, options)
        recipe = recipe or presets.recipe(name)
        train_size = integer(train_size, "train_size", 1)
        options = {"workers": None, "label_smoothing": recipe.label_smoothing, **options, "seed": seed,
                   "batch_size": recipe.batch_size, "augment": Augment(recipe.augment, recipe.pad, recipe.flip),
                   "name": presets.canonical(name)}
        _checked_settings(options)  # before anything is seeded or built: a refused call changes nothing
        model = presets.build(name, seed, input_shape, classes, width).to(backend_name, device, dtype)
        optimizer = recipe.build_optimizer(model, num_batches(train_size, recipe.batch_size))
        trainer = cls(model, optimizer, **options)
        # For any layer of the script built after it without its own generator; last, so that a refused call
        # leaves it as it was (the preset's layers draw from a generator of their own).
        init.seed(seed)
        trainer.epochs, trainer.planned_batches = recipe.epochs, num_batches(train_size, recipe.batch_size)
        return trainer

    @classmethod
    def resume(cls, path: str | Path, backend_name: str = "numpy", device: Any = None, *,
               callbacks: Sequence[Callback] = (), **options: Any) -> Trainer:
        """A trainer continuing the run of a checkpoint that `save()` wrote, on any backend,
        with the run's settings, progress and recorded callbacks (see record.restore);
        `callbacks` adds others, `options` are the constructor's."""
        _check_options(cls.resume, options)
        return record.restore(cls, path, backend_name, device, callbacks, options)

    def finish(self, test: Dataset) -> dict[str, Any]:
        """Evaluate on `test` and hand the result to the callbacks (with a run folder:
        summary.json and plots). Returns evaluate()'s result; TrainingInterrupted on Ctrl-C,
        after saving (a resumed run that is complete is scored again)."""
        try:
            with distributed.failing_alone_ends_all(self.comm):
                result = evaluate(self.model, test, comm=self.comm)
            self._notify("on_test_end", result, test)
        except KeyboardInterrupt:
            raise TrainingInterrupted("interrupted after training, while the network was scored and its results "
                                      "written", self.save()) from None
        return result

    # -- the loop ------------------------------------------------------------------------

    def fit(self, train: Dataset, epochs: int, val: Dataset | None = None) -> list[dict[str, Any]]:
        """Train until `epochs` epochs are complete (counting those already done) or a
        callback stops the run; returns the history."""
        # the run's total, planned or asked for; at most what a checkpoint records, so that the run resumes
        total = max(self.epochs, integer(epochs, "epochs", 0, MAX_EPOCHS))
        record.check_fits(self, train, val, total)
        self.epochs = total
        check_shards(self, len(train))
        with distributed.failing_alone_ends_all(self.comm):  # the first process writes the folder
            if self.folder is not None and self.comm.is_root:
                self.folder.check_usable(new_run=not (self.continues_run or self.state.epoch or self.state.batch))
        self.data_digest = record.check_same_images(self, train)
        if self.comm.size > 1:
            distributed.check_same(self.comm, "training data, settings or weights", run_facts(self, train))
        self.data, self.selection, self.train_images = train.statistics(), train.training_selection(), len(train)
        self.model.data = self.data
        self.val = val
        if self.model.hooks:  # they (a TimerHook, say) would see one worker's share: train alone
            self.workers = 1
        if self.state.stopped and record.complete(self):
            self.log(f"note: the run is complete ({self.state.stopped}); record.extend continues it")
        elif self.state.epoch >= epochs:
            done = f"{self.state.epoch} epoch{'s' * (self.state.epoch != 1)}"
            self.log(f"note: the run has done {done}, as many as asked: nothing to train (epochs "
                     f"counts the run's total: fit(train, {self.state.epoch + 1}) trains one more)")
        try:
            with distributed.failing_alone_ends_all(self.comm):  # a callback failing in one process ends the job
                self._notify("on_fit_start")
            # A Ctrl-C is this fit's: one that ended the last fit, or came after its last step
            # was checked, would stop this one at its first batch.
            self._interrupt = False
            with stopping_on_signals(self._request_interrupt):
                if self.choose_workers(train) > 1:
                    note_useless_workers(self)
                    fit_in_threads(self, train, epochs, val)
                else:
                    self.run_epochs(train, epochs, val)
            if self.comm.any(self._interrupt):  # after the last step's check: the run is whole, the test not begun
                raise TrainingInterrupted(f"interrupted after the training's last step (epoch {self.state.epoch}), "
                                          "before its test", self.save())
        finally:
            self.val = None
            with distributed.failing_alone_ends_all(self.comm):
                self._notify("on_fit_end")
        return self.state.history

    def run_epochs(self, train: Dataset, epochs: int, val: Dataset | None) -> None:
        """This trainer's share of the fit: epochs until `epochs` are done or the run is
        stopped (with worker threads, each runs this)."""
        # Recorded steps hold arrays of the model as it is now: recorded again each fit.
        alone = self.comm.size == 1 and not self.model.hooks and not self.anomaly
        graphs = use_graphs(self.cuda_graphs, self.model, alone, self.log)
        self._steps = TrainingStep(self.model, self.optimizer, self.loss_fn, graphs=graphs, log=self.log)
        if self._steps.graphs:
            self.log("training steps are recorded as CUDA graphs and replayed (cuda_graphs=False runs them directly)")
        stats = LayerStats(self.model, train)
        # Non-finite values are caught by the loss check of each step; NumPy's overflow
        # warnings on the way there would only repeat it less clearly.
        try:
            with np.errstate(all="ignore"), distributed.failing_alone_ends_all(self.comm, STOPS):
                while self.state.epoch < epochs and not self._stopped():
                    self._run_epoch(train, val, stats)
        finally:  # the recordings hold GPU memory: not beyond the fit
            self.graph_shapes, self._steps = self._steps.recorded_shapes, None

    def _stopped(self) -> bool:
        """Whether a callback ended the run, the first member's word being everyone's. A
        stop asked for within an epoch takes effect once the epoch is complete, also after
        an interruption and a resume."""
        if self.comm.size > 1:
            self.state.stopped = self.comm.broadcast(self.state.stopped)
        return self.state.stopped is not None and self.state.batch == 0

    def _run_epoch(self, train: Dataset, val: Dataset | None, stats: LayerStats) -> None:
        s, model = self.state, self.model
        self._notify("on_epoch_start", num_batches(len(train), self.batch_size))
        if s.batch == 0 and self.comm.is_root:  # else the epoch is resumed, with the checkpoint's
            self.epoch_start = stats.weights()
        mark = time.perf_counter()
        for x, y in batches(train, self.batch_size, seed=self.seed, epoch=s.epoch, start=s.batch,
                            augment=self.augment, backend_name=model.backend, device=model.device, dtype=model.dtype,
                            shard=(self.comm.rank, self.comm.size)):
            if self.comm.any(self._interrupt):
                s.seconds += time.perf_counter() - mark
                raise TrainingInterrupted(f"interrupted at epoch {s.epoch + 1}, batch {s.batch}", self.save())
            self._step(x, y, distributed.Shard.of(min(self.batch_size, len(train) - s.batch * self.batch_size),
                                                  self.comm))
            s.seconds += time.perf_counter() - mark
            self._notify("on_step_end")
            mark = time.perf_counter()  # what the callbacks took (a checkpoint) is not training time
        s.seconds += time.perf_counter() - mark
        self._end_epoch(val, stats)

    def _step(self, x: Any, y: Any, shard: distributed.Shard) -> None:
        s, steps = self.state, self._steps
        assert steps is not None, "_step runs inside fit"
        where = f"step {self.optimizer.steps + 1} (epoch {s.epoch + 1}, batch {s.batch + 1})"
        try:
            with self.model.hooked(*([AnomalyHook(where)] if self.anomaly else [])), distributed.sharded(shard):
                # The loss and the count of right answers come to the host together: one
                # transfer per step (on a GPU, its one synchronisation).
                loss_value, correct = backend.to_numpy(steps.compute(x, y, shard.rows / shard.total)).tolist()
                # Summed over the members: every one sees the same loss and stops together.
                loss_sum, correct = self.comm.sum_numbers(loss_value * shard.rows, correct)
                if not math.isfinite(loss_sum):
                    hint = ("every layer's values were finite: the loss itself overflowed (logits too large)"
                            if self.anomaly else "Trainer(anomaly=True), or --detect-anomaly, names the first layer "
                            "with a NaN/Inf")
                    statistics = " (its buffers, batch norm's running statistics, took this batch in)" * any(
                        layer.buffers for _, layer in self.model.named_layers())
                    raise TrainingDiverged(f"loss is {loss_sum / shard.total} at {where}, lr "
                                           f"{self.optimizer.current_lr:g}; the parameters are from the step before"
                                           f"{statistics}; {hint}")
        except (TrainingDiverged, NonFiniteError) as exc:
            raise type(exc)(f"{exc}{self._last_good()}") from None
        if self.comm.shares_parameters:
            self.comm.update_together(self.model, self.optimizer)
        else:
            distributed.sum_gradients(self.model, self.comm)
            steps.update()
        s.loss_sum += loss_sum
        s.correct += correct
        s.seen += shard.total
        s.batch += 1

    def _end_epoch(self, val: Dataset | None, stats: LayerStats) -> None:
        s = self.state
        row: dict[str, Any] = {
            "epoch": s.epoch + 1, "train_loss": s.loss_sum / max(s.seen, 1),
            "train_accuracy": s.correct / max(s.seen, 1), "lr": self.optimizer.current_lr, "seconds": s.seconds,
            "images_per_second": s.seen / s.seconds if s.seconds > 0 else None,
        }
        if val is not None:
            try:
                result = evaluate(self.model, val, comm=self.comm)
            except NotFiniteOutputs:  # the epoch's last update overflowed: the loss was checked before it
                lr = self.optimizer.current_lr
                raise TrainingDiverged(f"the outputs on the validation set are not finite after step "
                                       f"{self.optimizer.steps} (epoch {s.epoch + 1}), lr {lr:g}: the last update "
                                       f"made the weights overflow{self._last_good()}") from None
            row["val_loss"], row["val_accuracy"] = result["loss"], result["accuracy"]
        # How each layer learns (xpcnn.train.layer_stats), from the first member: the others
        # share or copy its weights, and wait here while it reads them.
        row["layers"] = self.comm.broadcast(stats.measure(self.epoch_start) if self.comm.is_root else None)
        self.epoch_start = None
        s.history.append(row)
        s.epoch, s.batch, s.loss_sum, s.correct, s.seen, s.seconds = s.epoch + 1, 0, 0.0, 0.0, 0, 0.0
        validation = f" | val loss {row['val_loss']:.4f}, accuracy {row['val_accuracy']:.2%}" if val is not None else ""
        self.log(f"epoch {row['epoch']}/{self.epochs}: loss {row['train_loss']:.4f}, accuracy "
                 f"{row['train_accuracy']:.2%}{validation} | {row['seconds']:.1f} s")
        self._notify("on_epoch_end", row)

    def _last_good(self) -> str:
        """Where the run's last good checkpoint is, for a message that ends it ("" without a folder)."""
        if not self.folder:
            return ""
        saved = self.checkpoint_path if self.checkpoint_path and self.checkpoint_path.exists() else None
        return f"; last good checkpoint: {saved}" if saved else "; no checkpoint was saved before it"

    def _notify(self, event: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, event)(self, *args)

    def _request_interrupt(self) -> None:
        self._interrupt = True


def _check_parts(model: Any, optimizer: Any) -> None:
    """TypeError naming the network or optimizer that is not of its kind; ValueError for
    an optimizer of another network."""
    kinds = [("model", model, Sequential, "a Sequential"),
             ("optimizer", optimizer, Optimizer, "an Optimizer (xpcnn.optim)")]
    for what, value, kind, expected in kinds:
        if not isinstance(value, kind):
            raise TypeError(f"Trainer {what} must be {expected}, got {type(value).__name__}")
    if optimizer.model is not model:
        raise ValueError("Trainer optimizer must be the model's: it was built for another network")


def _checked_settings(options: dict[str, Any]) -> dict[str, Any]:
    """The Trainer constructor's keywords `options` (those not given at their defaults)
    checked, as what a Trainer keeps of them (a comm, a log, a RunFolder, the callbacks
    with its own): every check of the constructor that needs no network, so that
    Trainer.for_preset refuses an option before it seeds or builds anything."""
    bound = inspect.signature(Trainer.__init__).bind_partial(**options)
    bound.apply_defaults()
    given = SimpleNamespace(**bound.arguments)
    log = to_stderr if given.log is None else given.log
    _check_kinds(given.comm, log, given.callbacks)
    saved = len(recorded(given.callbacks))
    if saved > record.MAX_CALLBACKS:  # record.read refuses more: the run could not be resumed
        raise ValueError(f"Trainer callbacks: a checkpoint records at most {record.MAX_CALLBACKS} "
                         f"{' and '.join(RECORDED)} callbacks, got {saved}; the run could not be resumed")
    progress = flag(given.progress, "Trainer progress")  # "no" would switch it on
    anomaly = flag(given.anomaly, "Trainer anomaly")
    if not isinstance(given.name, str):  # the run record's name of the model (record.read refuses another)
        raise TypeError(f"Trainer name must be a string, got {given.name!r}")
    augment = given.augment if isinstance(given.augment, Augment) else integer(given.augment, "augment", 0, MAX_AUGMENT)
    kept = {
        # at most what a checkpoint records (record.read): a run must be resumable
        "batch_size": integer(given.batch_size, "batch_size", 1, MAX_SIZE),
        "seed": integer(given.seed, "seed", 0, MAX_SEED),
        "label_smoothing": number(given.label_smoothing, "Trainer label_smoothing", 0.0, 1.0, high_included=False),
        "augment": Augment.of(augment),
        "workers": None if given.workers is None else integer(given.workers, "workers", 1, record.MAX_WORKERS),
        "comm": given.comm or distributed.Single(), "log": log, "anomaly": anomaly,
        "cuda_graphs": optional_flag(given.cuda_graphs, "Trainer cuda_graphs")}  # 0 or 1 would not be saved as asked
    run_dir = given.run_dir
    folder = run_dir if isinstance(run_dir, RunFolder) or run_dir is None else RunFolder(run_dir)
    if folder is not None:
        folder.check_usable(new_run=False, writes=kept["comm"].is_root)
    callbacks = with_own_callbacks(given.callbacks, progress and kept["comm"].is_root, folder is not None,
                                   given.checkpoint_every)
    return {**kept, "folder": folder, "callbacks": callbacks}


def _check_kinds(comm: Any, log: Any, callbacks: Any) -> None:
    """TypeError naming the first of a Trainer's comm, log and callbacks that is not of
    its kind."""
    if not isinstance(comm, (distributed.Communicator, type(None))):
        raise TypeError(f"Trainer comm must be a distributed.Communicator or None, got {type(comm).__name__}")
    if not callable(log):
        raise TypeError(f"Trainer log must be a function of one line, got {log!r}")
    if not isinstance(callbacks, (list, tuple)) or not all(isinstance(item, Callback) for item in callbacks):
        raise TypeError(f"Trainer callbacks must be a list of Callbacks (subclasses of xpcnn.train.Callback), got "
                        f"{callbacks!r}"[:200])
    for callback in callbacks:
        check_points(callback, Callback, ("on_",), f"Trainer callback {type(callback).__name__}", "trainer")


def to_stderr(message: str) -> None:
    """A trainer's default log: `message` on stderr, where progress goes."""
    print(message, file=sys.stderr, flush=True)


def check_preset_options(recipe: Any, options: dict[str, Any]) -> None:
    """TypeError or ValueError where Trainer.for_preset could not take `recipe` (a Recipe or
    None) or `options` (their names and values): for start_run to say so before it reads
    any data."""
    if recipe is not None and not isinstance(recipe, presets.Recipe):
        raise TypeError(f"recipe must be a Recipe (xpcnn.presets.recipe(name), .replace(...) to change it) or None, "
                        f"got {type(recipe).__name__}")
    _check_options(Trainer.for_preset, options, fixed={"batch_size", "augment", "name"})  # the recipe's, the preset's
    _checked_settings(options)  # their values too: workers=0 was refused only after the data was read


def _check_options(method: Callable[..., Any], options: dict[str, Any], fixed: set[str] = frozenset()) -> None:
    """TypeError naming `method` and what it takes when `options` holds a name that
    neither it nor the constructor takes (the constructor would name itself), or one of
    the constructor's that `method` sets itself (`fixed`)."""
    own = [name for name in inspect.signature(method).parameters if name not in ("cls", "options")]
    takes = [name for name in inspect.signature(Trainer.__init__).parameters
             if name not in ("self", "model", "optimizer", *own, *fixed)]
    unknown = sorted(set(options) - set(takes))
    if unknown:
        raise TypeError(f"Trainer.{method.__name__}() got an unexpected keyword argument {unknown[0]!r}; it takes "
                        f"{', '.join(own)} and the constructor's {', '.join(takes)}")
