"""The record of a training run: what it was started with, and where it stands.

A checkpoint keeps it as JSON beside the arrays (its "trainer" part), so that a run
resumes with every setting it had and the same images (`xpcnn train --resume`), `xpcnn
evaluate` knows what the model was trained on, and a run saved from Python is the same
file as one `xpcnn train` started. This module is the record's one owner: it writes it
(`to_checkpoint`), reads it back checking every field before use (`read`), describes the
run (`settings`, `describe`, `summary`), says which settings a resumed run keeps
(`KEPT_ON_RESUME`: given again with another value, they are refused, see `conflicts`)
and how a run is extended (`extend`); and it checks, before a fit's first step, that the
fit agrees with the record: its data, schedule and batches (`check_fits`), the same
images (`check_same_images`), and whether anything is left to train (`complete`).

The functions take a Trainer (`restore` makes one); the record's own state is its `Progress`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import presets
from .._version import __version__
from ..checks import integer
from ..datasets import Augment, Dataset, Selection, num_batches
from ..datasets.batches import PADS
from ..datasets.loading import FOLDER
from ..diagnostics import machine
from ..evaluation import check_model_fits, check_same_data
from ..io.checkpoint import Checkpoint, check_savable, load_checkpoint
from ..io.schema import MAX_EPOCHS, MAX_SEED, MAX_SIZE, CheckpointError, Fields, is_int, is_number
from ..layers import BatchNorm2D
from ..optim import Schedule
from ..presets import SettingsError
from .callbacks import BestCheckpoint, Callback, EarlyStopping, rebuild_recorded, recorded
from .layer_stats import MAX_WATCHED
from .step import can_record

if TYPE_CHECKING:
    from .trainer import Trainer

# Settings a resumed run keeps: the keys of settings() and of its data's Selection, and the
# folder the data was read from. `xpcnn train --resume` refuses flags that change them.
KEPT_ON_RESUME = ("model", "dtype", "seed", "batch_size", "optimizer", "lr", "momentum", "nesterov", "weight_decay",
                  "schedule", "warmup", "augment", "pad", "flip", "label_smoothing", "early_stopping", "keep_best",
                  "dataset", "data_dir", "limit", "val_split", "image_size", "channels", "test_split",
                  "skip_bad_images", "digits")
FOLDER_SETTINGS = {"image_size": "image_size", "channels": "channels", "test_split": "test_split",
                   "skip_bad_images": "on_bad", "digits": "pictures"}  # flags of a folder: the options it was read with
MAX_WORKERS = 4096
MAX_CALLBACKS = 16  # recorded ones (callbacks.RECORDED): early stopping and the best epoch's copy, a few of each
MAX_AUGMENT = 1000  # pixels of random shifts: far beyond any image's size
MAX_POSITION = 200  # characters of a layer's position ("3.body.0") in a row's "layers"


class SettingsConflict(SettingsError):
    """A resumed run was given a setting that differs from its saved one."""

    def __init__(self, field: str, saved: Any, given: Any, why: str = "") -> None:
        # A switch (--digits, --flip) is said to be on or off, not "True differs from the run's saved False".
        if isinstance(given, bool) and isinstance(saved, (bool, type(None))):
            had = "with it; resume without turning it off" if saved else f"without it{why}; resume without it"
            message = f"the run began {had}, or start a new run"
        else:
            run = "the run, which had none" if saved is None else f"the run's saved {saved}"
            message = (f"{given} differs from {run}{why}; a resumed run continues as it was started (start a new run "
                       "to change it)")
        super().__init__(field, message)
        self.saved, self.given = saved, given


class Shortened(SettingsError):
    """A run asked to end after `epochs` in all, no more than it was `planned` for."""

    def __init__(self, epochs: int, planned: int) -> None:
        super().__init__("epochs", f"{epochs}: a run can be extended, not shortened; it was planned for {planned} "
                                   "epochs")


@dataclass
class Progress:
    """Where a run stands: completed epochs, next batch, sums of the epoch in progress, a
    row of metrics per completed epoch, and why it stopped early (None: it did not)."""

    epoch: int = 0
    batch: int = 0
    loss_sum: float = 0.0
    correct: float = 0.0
    seen: int = 0
    seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped: str | None = None


def settings(trainer: Trainer) -> dict[str, Any]:
    """Everything the run was started with: model, dtype, seed, epochs, batch, optimizer,
    learning rate and schedule, augmentation, label smoothing, early stopping's patience
    (None: none), and which data (its Selection, if known)."""
    config = trainer.optimizer.config()
    schedule = config["schedule"]
    stopping = next((found for found in trainer.callbacks if isinstance(found, EarlyStopping)), None)
    keeping = any(isinstance(found, BestCheckpoint) for found in trainer.callbacks)
    return {
        "model": trainer.name, "dtype": trainer.model.dtype, "seed": trainer.seed,
        "epochs": trainer.epochs, "batch_size": trainer.batch_size, "optimizer": config["type"].lower(),
        "lr": config["lr"], "momentum": config.get("momentum", 0.0), "nesterov": config.get("nesterov", False),
        "weight_decay": config["weight_decay"],
        "schedule": schedule["type"], "warmup": schedule.get("warmup", 0), "augment": trainer.augment.pixels,
        "pad": trainer.augment.pad, "flip": trainer.augment.flip, "label_smoothing": trainer.label_smoothing,
        "early_stopping": None if stopping is None else stopping.patience, "keep_best": keeping,
        "data": None if trainer.selection is None else trainer.selection.to_dict(),
    }


def complete(trainer: Trainer) -> bool:
    """Whether the run has nothing left to train: its epochs are done, or a callback ended
    it after an epoch (Trainer.stop)."""
    state = trainer.state
    return state.epoch >= trainer.epochs or (state.stopped is not None and state.batch == 0)


def check_fits(trainer: Trainer, train: Dataset, val: Dataset | None, epochs: int) -> None:
    """That a run of `epochs` in all fits its data, before the first step: the network
    classifies the training set and the validation set (of the same classes), its run
    folder's checkpoints could rebuild the network and the optimizer, the
    learning-rate schedule spans the run, where the run stands in an epoch is within it,
    its shifts leave the images in sight, and no batch norm gets a batch of one value
    per channel."""
    check_model_fits(trainer.model, train, "the training set")
    if trainer.folder is not None:  # its checkpoints must rebuild the run, as a resume would
        trainer.model.check_rebuildable()  # the architecture, as loading checks it (planned_arrays)
        trainer.optimizer.check_rebuildable()
        try:
            check_savable(trainer.model, train.statistics())
        except ValueError as exc:
            raise ValueError(f"this run's checkpoints could not be loaded: {exc}") from None
    if val is not None:  # first against the training set: a set of other classes is the set's fault
        if isinstance(val, Dataset):
            check_same_data(train.statistics(), val, "the validation set")
        check_model_fits(trainer.model, val, "the validation set")
    batches = num_batches(len(train), trainer.batch_size)
    if trainer.planned_batches not in (None, batches):
        planned = trainer.planned_batches
        raise SettingsError("train_size", f"the schedule was planned over epochs of {planned} batch"
                            f"{'es' * (planned != 1)} (Trainer.for_preset's train_size); this training set of "
                            f"{len(train):,} images makes {batches}: pass train_size=len(train)")
    _check_schedule_spans(trainer, epochs, batches)
    if trainer.state.batch > batches:
        raise ValueError(f"the run stands at batch {trainer.state.batch} of an epoch, but this training set has "
                         f"{batches} batches: it is not the run's data")
    check_shifts(trainer.augment.pixels, *train.images.shape[2:])
    _check_smallest_batch(trainer, train)


def check_shifts(pixels: int, height: int, width: int, whose: str = "") -> None:
    """SettingsError where random shifts of up to `pixels` (`whose` says whose they are, or
    nothing) would move images of `height` x `width` out of sight."""
    if pixels >= min(height, width):
        raise SettingsError("augment", f"shifts of up to {pixels} pixels{whose} would move {height}x{width} images out "
                            "of sight")


def _check_smallest_batch(trainer: Trainer, train: Dataset) -> None:
    """SettingsError where the smallest batch of an epoch (its last) would leave a batch
    norm one value per channel, of which it can compute no variance."""
    smallest = len(train) % trainer.batch_size or min(len(train), trainer.batch_size)
    for position, layer, shape in trainer.model.shaped_layers((smallest, *train.input_shape)):
        if isinstance(layer, BatchNorm2D) and smallest * shape[2] * shape[3] < 2:
            which = "every batch holds" if trainer.batch_size == 1 else "the last batch of an epoch holds"
            raise SettingsError("batch_size", f"{which} 1 image ({len(train):,} training images in batches of "
                                f"{trainer.batch_size}), and layer {position} ({layer!r}) sees {shape[2]}x{shape[3]} "
                                "maps: batch norm needs more than one value per channel; choose a batch size that "
                                "puts more than one image in every batch")


def _check_schedule_spans(trainer: Trainer, epochs: int, batches: int) -> None:
    """SettingsError when `epochs` of `batches` steps go past the end of a learning-rate
    schedule planned over fewer steps whose last learning rate is about 0 (Cosine to 0,
    OneCycle): the steps after it would not train. A schedule that holds a learning rate
    (Cosine's floor) may be run past its end."""
    schedule, steps = trainer.optimizer.schedule, epochs * batches
    total = _ends_before(schedule, steps)
    if total is not None:
        kind = schedule.config()["type"]
        raise SettingsError("epochs", f"{epochs} epochs of {batches} batch{'es' * (batches != 1)} are {steps:,} "
                            f"steps, but the {kind} schedule ends after {total:,}: the rest would train at its last "
                            f"learning rate, about 0; make the schedule for {epochs} epochs (a Recipe of "
                            f"epochs={epochs} for Trainer.for_preset, or a schedule's total of {steps:,}), or "
                            f"stretch this one with xpcnn.train.record.extend(trainer, {epochs}, {batches})")


def _ends_before(schedule: Schedule, steps: int) -> int | None:
    """The total of `schedule` where `steps` go past it and it ends at a learning rate of
    about 0 (the steps after would not train); None where they do not."""
    total = getattr(schedule, "total", None)
    return total if total is not None and steps > total and schedule(total) < 1e-3 else None


def check_same_images(trainer: Trainer, train: Dataset) -> str:
    """The digest of `train` (Dataset.digest); ValueError when the run has trained on
    other images: a run continues on the data it started with."""
    digest = train.digest()
    started = trainer.state.epoch or trainer.state.batch
    if started and trainer.data_digest is not None and digest != trainer.data_digest:
        raise ValueError(f"these training images are not the run's (digest {digest[:12]}..., the run's "
                         f"{trainer.data_digest[:12]}...): a run continues on the data it started with; start a new "
                         "run (a new Trainer) to train on other data")
    return digest


def describe(trainer: Trainer) -> str:
    """One line: model, size, backend, epochs, optimizer and learning rate, batch, workers,
    label smoothing (when any)."""
    model, saved, now = trainer.model, settings(trainer), trainer.optimizer.current_lr
    lr = f"lr {saved['lr']:g}" + (f" (now {now:.3g})" if now != saved["lr"] else "")
    workers = trainer.workers or 1
    threads = f", {workers} worker threads" if workers > 1 and trainer.comm.size == 1 else ""
    smoothing = f", label smoothing {trainer.label_smoothing:g}" if trainer.label_smoothing else ""
    return (f"{trainer.name} ({model.num_params():,} parameters) on {model.backend} ({model.device}, {model.dtype}) "
            f"for {trainer.epochs} epoch{'s' if trainer.epochs != 1 else ''}, {saved['optimizer']} {lr}, "
            f"batch {trainer.batch_size}{threads}{smoothing}")


def conflicts(trainer: Trainer, **given: Any) -> list[tuple[Any, ...]]:
    """(setting, saved value, given value[, why]) for each given setting of KEPT_ON_RESUME that
    differs from the run's; `data_dir` matches when it is (the parent of) a folder the
    data came from."""
    saved = settings(trainer)
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
        if key == "momentum" and saved["schedule"] == "onecycle" and saved["optimizer"] == "sgd":
            found.append((key, "momentum, cycled by the onecycle schedule", value))
            continue
        if key in FOLDER_SETTINGS and data.get("dataset") != FOLDER:
            read = data.get("dataset") or "data given from Python"
            found.append((key, None, value, f" (it applies to --dataset images only; this run read {read})"))
            continue
        if key in FOLDER_SETTINGS:
            mine = (data.get("reader") or {}).get(FOLDER_SETTINGS[key])
            mine = mine == "skip" if key == "skip_bad_images" and mine is not None else mine
            mine = mine == "digits" if key == "digits" else mine  # recorded since folders of digits: else photos
        else:
            mine = data.get(key) if key in ("dataset", "limit", "val_split") else saved[key]
        if value != mine:
            found.append((key, mine, value))
    return found


def extend(trainer: Trainer, epochs: int, steps_per_epoch: int) -> str:
    """Continue the run to `epochs` in total, beyond what it was planned for: the
    learning-rate schedule is stretched over the new number of steps. Returns one line
    saying what the learning rate will do."""
    epochs = integer(epochs, "epochs", 1, MAX_EPOCHS)  # at most what a checkpoint records: the run resumes
    if epochs <= trainer.epochs:
        raise Shortened(epochs, trainer.epochs)
    optimizer = trainer.optimizer
    old_total, new_total = trainer.epochs * steps_per_epoch, epochs * steps_per_epoch
    optimizer.schedule = optimizer.schedule.replanned(old_total, new_total)
    lr_now, lr_last = optimizer.current_lr, optimizer.lr * optimizer.schedule(new_total - 1)
    previous, trainer.epochs = trainer.epochs, epochs
    trainer.state.stopped = None  # an early stop ended the old plan; the new one goes on
    for callback in trainer.callbacks:
        if isinstance(callback, EarlyStopping):
            callback.restart()
    return (f"extending the run from {previous} to {epochs} epochs: the {optimizer.schedule.config()['type']} "
            f"schedule now spans {new_total} steps; learning rate {lr_now:.3g} at step {optimizer.steps + 1}, "
            f"{lr_last:.3g} at step {new_total}")


def to_checkpoint(trainer: Trainer) -> dict[str, Any]:
    """The trainer part of a checkpoint: progress, seeds, the recorded callbacks' settings
    and state, and the description of the run."""
    s = trainer.state
    return {
        "epoch": s.epoch, "batch": s.batch, "loss_sum": s.loss_sum, "correct": s.correct,
        "seen": s.seen, "seconds": s.seconds, "history": s.history, "stopped": s.stopped,
        "batch_size": trainer.batch_size, "seed": trainer.seed, "workers": trainer.workers,
        "data_digest": trainer.data_digest, "train_images": trainer.train_images,
        "augment": trainer.augment.pixels, "pad": trainer.augment.pad, "flip": trainer.augment.flip,
        "label_smoothing": trainer.label_smoothing, "cuda_graphs": trainer.cuda_graphs,
        "callbacks": [{"type": type(callback).__name__, "config": callback.config(), "state": callback.state_dict()}
                      for callback in recorded(trainer.callbacks)],
        "info": {"model": trainer.name, "settings": settings(trainer), "data": trainer.data},
    }


def summary(trainer: Trainer, result: dict[str, Any], test: Dataset) -> dict[str, Any]:
    """summary.json: the run's description with its test result (each class's scores and
    the confusion `counts[true][predicted]` too) and where it ran."""
    model = trainer.model
    return {
        "model": trainer.name, "settings": settings(trainer), "data": test.source or test.spec.name,
        "train_images": trainer.train_images, "test_images": len(test),
        "epochs": len(trainer.history), "stopped": trainer.state.stopped,
        "test_accuracy": result["accuracy"], "test_loss": result["loss"], "test_classes": result["classes"],
        "test_macro": result["macro"], "test_confusion": result["confusion"].tolist(),
        "train_seconds": sum(row["seconds"] for row in trainer.history),
        "backend": model.backend, "device": str(model.device), "dtype": model.dtype,
        "processes": trainer.comm.size, "workers": trainer.workers, "fast_paths": machine.fast_paths(model.backend),
        "machine": machine.cpu(), "xpcnn": __version__, "date": time.strftime("%Y-%m-%d"),
    }


@dataclass
class Saved:
    """What a checkpoint says of its run, every field checked (see `read`)."""

    name: str
    batch_size: int
    seed: int
    augment: Augment
    workers: int | None
    epochs: int
    data: dict[str, Any] | None
    selection: Selection | None
    progress: Progress
    callbacks: list[dict[str, Any]]
    data_digest: str | None
    label_smoothing: float
    cuda_graphs: bool | None
    train_images: int


def restore(trainer_class: type[Trainer], path: str | Path, backend_name: str, device: Any,
            callbacks: Sequence[Callback], options: dict[str, Any]) -> Trainer:
    """A `trainer_class` continuing the run of the checkpoint at `path` (Trainer.resume):
    its model and optimizer on the backend, its settings, progress and recorded callbacks,
    then `callbacks`. By default the run folder is the checkpoint's and the worker threads
    the run's, so that gradients are summed in the same order and the resumed run reaches
    the same weights, and so is its `cuda_graphs` where the backend records graphs (on CuPy,
    a step with graphs multiplies with a kernel of its own); `options` are the
    constructor's (a batch size, seed, augmentation or label smoothing other than the run's
    raises SettingsConflict)."""
    checkpoint = load_checkpoint(path, backend_name, device)
    saved = read(checkpoint)
    run = {"batch_size": saved.batch_size, "seed": saved.seed, "augment": saved.augment,
           "label_smoothing": saved.label_smoothing}  # what the run's batches and loss are made of
    for name, value in run.items():
        given = options.get(name, value)
        if (Augment.of(given) if name == "augment" else given) != value:
            raise SettingsConflict(name, value, given)
    restored = rebuild_recorded(saved.callbacks, checkpoint.path)
    twice = {type(callback).__name__ for callback in restored} & {type(given).__name__ for given in callbacks}
    if twice:
        raise ValueError(f"the run's {', '.join(sorted(twice))} is restored from {path}: do not pass it again")
    options = {"run_dir": Path(path).parent, "workers": saved.workers, "name": saved.name,
               "cuda_graphs": saved.cuda_graphs if can_record(checkpoint.model) else None, **options, **run}
    optimizer = checkpoint.restore_optimizer()
    _check_schedule(checkpoint, saved, optimizer.schedule)
    trainer = trainer_class(checkpoint.model, optimizer, callbacks=[*restored, *callbacks], **options)
    trainer.epochs, trainer.data, trainer.selection = saved.epochs, saved.data, saved.selection
    trainer.state, trainer.data_digest, trainer.train_images = saved.progress, saved.data_digest, saved.train_images
    trainer.epoch_start = checkpoint.start_arrays or None  # saved partway through an epoch
    trainer.continues_run = True
    return trainer


def read(checkpoint: Checkpoint) -> Saved:
    """The run `checkpoint` records; CheckpointError naming the file and the field when
    it records none (a model saved alone) or a field is malformed."""
    fields, trainer = Fields(checkpoint.path), checkpoint.trainer
    if checkpoint.optimizer is None or "epoch" not in trainer:
        raise CheckpointError(f"{checkpoint.path}: has no optimizer or trainer state to resume from (a Trainer's "
                              "checkpoint has both)")
    limits = {"batch_size": (1, MAX_SIZE), "seed": (0, MAX_SEED), "augment": (0, MAX_AUGMENT)}
    for key, (low, high) in limits.items():
        fields.require(f"trainer.{key}", trainer.get(key), is_int(trainer.get(key), low, high),
                       f"an integer in [{low}, {high:,}]")
    workers = trainer.get("workers", 1)  # absent before worker threads existed (one model)
    fields.require("trainer.workers", workers, workers is None or is_int(workers, 1, MAX_WORKERS),
                   f"an integer in [1, {MAX_WORKERS}] or null")
    images = trainer.get("train_images", 0)  # absent before it was recorded: a summary of none
    fields.require("trainer.train_images", images, is_int(images, 0, MAX_SIZE), f"an integer in [0, {MAX_SIZE:,}]")
    info = _info(fields, trainer)
    saved = Saved(info["model"], trainer["batch_size"], trainer["seed"], _augment(fields, trainer), workers,
                  info["settings"]["epochs"], info["data"], checkpoint.selection(), _progress(fields, trainer),
                  _callbacks(fields, trainer), _digest(fields, trainer), _label_smoothing(fields, trainer),
                  _cuda_graphs(fields, trainer), images)
    _check_agreement(checkpoint, fields, saved)
    return saved


def _check_agreement(checkpoint: Checkpoint, fields: Fields, saved: Saved) -> None:
    """CheckpointError naming the field where fields that are each well formed contradict
    each other or the network: a run does not stand past its epochs or its epoch's
    batches, its class names are the network's outputs, its shifts leave images in sight,
    its rows measure the network's layers."""
    _check_layer_positions(checkpoint, fields, saved.progress.history)
    epoch, batch = saved.progress.epoch, saved.progress.batch
    fields.require("trainer.epoch", epoch, epoch <= saved.epochs,
                   f"at most the run's {saved.epochs} epochs (trainer.info.settings.epochs)")
    batches = _epoch_batches(saved)
    if batches is not None:
        fields.require("trainer.batch", batch, batch <= batches,
                       f"at most the {batches} batches of an epoch of the run's {saved.train_images:,} images")
        # Each batch trained is an optimizer step; a Trainer may be given an optimizer that
        # has stepped before, so more steps than batches are not wrong, fewer are.
        trained = epoch * batches + batch
        steps = checkpoint.optimizer["steps"]
        fields.require("optimizer.steps", steps, steps >= trained, f"at least the {trained:,} batches the run has "
                       f"trained (trainer.epoch {epoch} of {batches} batches, trainer.batch {batch})")
    if saved.data is not None:
        side = min(checkpoint.data_statistics()["input_shape"][1:])  # which checks the classes against the network
        fields.require("trainer.augment", saved.augment.pixels, saved.augment.pixels < side,
                       f"shifts of fewer pixels than the {side}-pixel side of the run's images")


def _check_layer_positions(checkpoint: Checkpoint, fields: Fields, history: list[dict[str, Any]]) -> None:
    """Each position a row's "layers" measures is one of the network's (a damaged row would
    be drawn as a layer that is not there)."""
    known = {str(position) for position, _ in checkpoint.model.named_layers()}
    for number, row in enumerate(history):
        for kind, shares in row.get("layers", {}).items():
            unknown = sorted(set(shares) - known)
            fields.require(f"trainer.history.{number}.layers.{kind}", unknown[0] if unknown else None, not unknown,
                           "positions of the network's layers")


def _epoch_batches(saved: Saved) -> int | None:
    """The batches of an epoch of the run; None where it does not record its training
    images (runs saved before 0.2)."""
    return num_batches(saved.train_images, saved.batch_size) if saved.train_images else None


def _check_schedule(checkpoint: Checkpoint, saved: Saved, schedule: Schedule) -> None:
    """CheckpointError where the run's epochs go past the end of its learning-rate schedule
    at about 0 (check_fits refuses such a run before it trains, so none saves one)."""
    batches = _epoch_batches(saved)
    if batches is not None:
        total = _ends_before(schedule, saved.epochs * batches)
        if total is not None:
            fit = total // batches
            Fields(checkpoint.path).require(
                "trainer.info.settings.epochs", saved.epochs, False,
                f"at most {fit} epoch{'s' * (fit != 1)}: epochs of {batches} batch{'es' * (batches != 1)} must fit in "
                f"the {total:,} step{'s' * (total != 1)} its optimizer's {schedule.config()['type']} schedule spans "
                "(past its end the learning rate is about 0)")


def _augment(fields: Fields, trainer: dict[str, Any]) -> Augment:
    """The run's augmentation; "pad" and "flip" are absent from runs saved before them."""
    pad, flip = trainer.get("pad", "zero"), trainer.get("flip", False)
    fields.require("trainer.pad", pad, pad in PADS, f"one of {', '.join(PADS)}")
    fields.require("trainer.flip", flip, isinstance(flip, bool), "true or false")
    return Augment(trainer["augment"], pad, flip)


def _label_smoothing(fields: Fields, trainer: dict[str, Any]) -> float:
    """The run's label smoothing; absent from runs saved before it (none)."""
    value = trainer.get("label_smoothing", 0.0)
    fields.require("trainer.label_smoothing", value, is_number(value, 0.0) and value < 1.0, "a number in [0, 1)")
    return float(value)


def _cuda_graphs(fields: Fields, trainer: dict[str, Any]) -> bool | None:
    """Whether the run asked for CUDA graphs (null: where the backend takes them unasked);
    absent from runs saved before CuPy could record them (null)."""
    value = trainer.get("cuda_graphs")
    fields.require("trainer.cuda_graphs", value, value is None or isinstance(value, bool), "true, false or null")
    return value


def _digest(fields: Fields, trainer: dict[str, Any]) -> str | None:
    """The training images' digest (Dataset.digest); absent from runs saved before it."""
    digest = trainer.get("data_digest")
    fields.require("trainer.data_digest", digest, digest is None or (isinstance(digest, str) and len(digest) == 64
                                                                    and set(digest) <= set("0123456789abcdef")),
                   "a sha256 in hex, or null")
    return digest


def _info(fields: Fields, trainer: dict[str, Any]) -> dict[str, Any]:
    """The description of the run: the model's name, its settings (with the epochs it is
    planned for) and the data statistics (checked with the metadata, see io.schema)."""
    info = fields.mapping("trainer.info", trainer.get("info"), {"model", "settings", "data"})
    fields.require("trainer.info.model", info["model"], isinstance(info["model"], str), "a name")
    saved = fields.mapping("trainer.info.settings", info["settings"], {"epochs"})
    fields.require("trainer.info.settings.epochs", saved["epochs"], is_int(saved["epochs"], 0, MAX_EPOCHS),
                   f"an integer in [0, {MAX_EPOCHS:,}]")
    return info


def _progress(fields: Fields, trainer: dict[str, Any]) -> Progress:
    counts = {"epoch": MAX_EPOCHS, "batch": MAX_SIZE, "seen": MAX_SIZE * MAX_EPOCHS}
    for key, high in counts.items():
        fields.require(f"trainer.{key}", trainer.get(key), is_int(trainer.get(key), 0, high),
                       f"an integer in [0, {high:,}]")
    for key in ("loss_sum", "correct", "seconds"):
        fields.require(f"trainer.{key}", trainer.get(key), is_number(trainer.get(key), 0.0), "a finite number >= 0")
    history = trainer.get("history")
    fields.require("trainer.history", history, isinstance(history, list) and len(history) <= MAX_EPOCHS,
                   "a list of one object per epoch")
    for number, row in enumerate(history):
        _check_row(fields, f"trainer.history.{number}", row)
    stopped = trainer.get("stopped")  # absent before early stopping existed
    fields.require("trainer.stopped", stopped, stopped is None or isinstance(stopped, str), "a reason or null")
    return Progress(trainer["epoch"], trainer["batch"], float(trainer["loss_sum"]), float(trainer["correct"]),
                    trainer["seen"], float(trainer["seconds"]), list(history), stopped)


# What a row of the history may hold (Trainer._end_epoch writes it; plots, summaries and
# callbacks read it): (lowest, highest, whether null is allowed) for each number.
ROW_NUMBERS = {"train_loss": (0.0, math.inf, False), "train_accuracy": (0.0, 1.0, False),
               "seconds": (0.0, math.inf, False), "lr": (0.0, math.inf, False),
               "images_per_second": (0.0, math.inf, True), "val_loss": (0.0, math.inf, False),
               "val_accuracy": (0.0, 1.0, False)}


def _check_row(fields: Fields, where: str, row: Any) -> None:
    """One epoch's metrics: its number, its training loss, accuracy and time, and where
    present its learning rate, speed and validation loss and accuracy (both or neither)."""
    row = fields.mapping(where, row, {"epoch", "train_loss", "train_accuracy", "seconds"})
    fields.require(f"{where}.epoch", row["epoch"], is_int(row["epoch"], 1, MAX_EPOCHS), "an epoch number")
    for key, (low, high, nullable) in ROW_NUMBERS.items():
        if key == "val_loss" and isinstance(row.get(key), float) and math.isnan(row[key]):
            continue  # what runs recorded before a network's NaN outputs were refused (NotFiniteOutputs)
        if key in row and not (nullable and row[key] is None):
            span = f"in [{low:g}, {high:g}]" if high < math.inf else f">= {low:g}"
            fields.require(f"{where}.{key}", row[key], is_number(row[key], low, high), f"a number {span}")
    validation = {"val_loss", "val_accuracy"} & set(row)
    fields.require(where, sorted(validation), len(validation) != 1, "val_loss and val_accuracy together, or neither")
    if "layers" in row:  # absent from runs recorded before layer_stats
        _check_layer_stats(fields, f"{where}.layers", row["layers"])


def _check_layer_stats(fields: Fields, where: str, stats: Any) -> None:
    """How each layer learned in an epoch (xpcnn.train.layer_stats): a share by layer
    position for each kind, a change null where unknown, a dead share in [0, 1]."""
    stats = fields.mapping(where, stats, {"change", "dead"})
    kinds = {"change": (math.inf, "a number >= 0 or null"), "dead": (1.0, "a number in [0, 1]")}
    for kind, (high, expected) in kinds.items():
        shares = fields.mapping(f"{where}.{kind}", stats[kind])
        fields.require(f"{where}.{kind}", f"{len(shares)} layers", len(shares) <= MAX_WATCHED,
                       f"at most {MAX_WATCHED} layers")
        for position, share in shares.items():
            fields.require(f"{where}.{kind}", position, len(position) <= MAX_POSITION,
                           f"a layer position of at most {MAX_POSITION} characters")
            fields.require(f"{where}.{kind}.{position}", share,
                           (kind == "change" and share is None) or is_number(share, 0.0, high), expected)


def _callbacks(fields: Fields, trainer: dict[str, Any]) -> list[dict[str, Any]]:
    """The recorded callbacks' types, settings and state (their classes check the values
    when they are rebuilt); none before callbacks were recorded."""
    kept = trainer.get("callbacks", [])
    fields.require("trainer.callbacks", kept, isinstance(kept, list) and len(kept) <= MAX_CALLBACKS,
                   f"a list of at most {MAX_CALLBACKS} callbacks")
    for number, entry in enumerate(kept):
        entry = fields.mapping(f"trainer.callbacks.{number}", entry, {"type", "config", "state"})
        fields.require(f"trainer.callbacks.{number}.type", entry["type"], isinstance(entry["type"], str), "a name")
        fields.mapping(f"trainer.callbacks.{number}.config", entry["config"])
        fields.mapping(f"trainer.callbacks.{number}.state", entry["state"])
    return kept
