"""What `xpcnn train` starts and continues, as functions: the data and a Trainer for it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .. import backend, presets
from ..checks import integer, number
from ..datasets import Dataset, load_dataset, num_batches
from ..datasets.dataset import held_out_count
from ..datasets.loading import FOLDER
from ..datasets.sources import MNIST_FAMILY, image_side
from ..presets import SMALLEST_SIDES, Recipe, SettingsError, canonical
from . import record
from .callbacks import BestCheckpoint, EarlyStopping
from .record import SettingsConflict, Shortened
from .step import check_graphs
from .trainer import Trainer, check_preset_options, to_stderr

Splits = tuple[Dataset, Dataset | None, Dataset]  # train, validation (or None), test


def default_preset(dataset: str) -> str:
    """The preset `xpcnn train` trains on `dataset` when no --model is given: tutorial for
    the MNIST family (28x28 grey digits), compact (any image size, grey or colour) else."""
    return "tutorial" if dataset in MNIST_FAMILY else "compact"


def start_run(name: str, recipe: Recipe | None = None, *, dataset: str = "mnist", data_dir: str | Path | None = None,
              download: bool = True, allow_bundled: bool = True, limit: int | None = None, seed: int = 0,
              val_split: float = 0.0, early_stopping: int | None = None, keep_best: bool = False,
              backend_name: str = "numpy", device: Any = None, dtype: str = "float32",
              folder_options: dict[str, Any] | None = None, width: float = 1.0,
              log: Callable[[str], None] | None = None, **options: Any) -> tuple[Trainer, Splits]:
    """What `xpcnn train` starts: the data (see datasets.load_dataset: the full files,
    else for MNIST with `allow_bundled` the bundled subset), at most `limit` images of each
    split and `val_split` held out, and a Trainer for preset `name` with `recipe`
    (default: the preset's) and the data's image shape and classes; `early_stopping` adds
    EarlyStopping(patience=early_stopping) and `keep_best` BestCheckpoint(), both on the
    validation loss. `folder_options` go to load_dataset for a folder of pictures
    (dataset "images"; its test split is drawn from `seed` unless split_seed is given);
    `width` scales the preset's channels (resnet20, cifar); `log` (default: stderr) takes
    the notes; `options` are Trainer's."""
    log = log or to_stderr
    if dataset == FOLDER:  # one seed makes the run, its test split included
        folder_options = {"split_seed": seed, **(folder_options or {})}
    check_preset_options(recipe, options)
    presets.check_width(canonical(name), width)
    limit = None if limit is None else integer(limit, "limit", 1)  # before it is compared with the data's size
    val_split = number(val_split, "val_split", 0.0, 1.0, high_included=False)
    _check_watched(val_split, early_stopping, keep_best)
    _check_before_reading(name, recipe, dataset, data_dir, folder_options or {})
    backend.require(backend_name, device)  # where the network would run, as xpcnn train checks it first
    backend.float_name(dtype)
    if options.get("cuda_graphs"):  # refused before any data is read
        check_graphs(True, backend.to_backend(np.zeros(1), backend_name, device))
    if early_stopping is not None:
        options["callbacks"] = [*options.get("callbacks", ()), EarlyStopping(patience=early_stopping)]
    if keep_best:
        options["callbacks"] = [*options.get("callbacks", ()), BestCheckpoint()]
    loaded = load_dataset(dataset, data_dir, download=download, allow_bundled=allow_bundled, log=log,
                          **(folder_options or {}))
    log(f"data: {loaded.source}")
    count = len(loaded.train) if limit is None else min(limit, len(loaded.train))
    held_out = held_out_count(count, val_split)
    if val_split and not 0 < held_out < count:
        raise SettingsError("val_split", f"{val_split} of {count} images leaves none to "
                            f"{'train' if held_out else 'validate'} on")
    data = loaded.splits(limit, seed, val_split)
    trainer = Trainer.for_preset(name, recipe, len(data[0]), seed=seed, input_shape=data[0].input_shape,
                                 classes=len(data[0].spec.classes), backend_name=backend_name, device=device,
                                 dtype=dtype, width=width, log=log, **options)
    trainer.choose_workers(data[0])
    return trainer, data


def _check_watched(val_split: float, early_stopping: int | None, keep_best: bool) -> None:
    """SettingsError for early stopping or keeping the best epoch without a validation
    split, whose loss both watch: refused before reading, not at the fit's start."""
    if early_stopping is not None and not val_split:
        raise SettingsError("early_stopping", "watches the validation loss: it needs a validation split (--val-split)")
    if keep_best and not val_split:
        raise SettingsError("keep_best", "keeps the epoch of the lowest validation loss: it needs a validation split "
                            "(--val-split)")


def _check_before_reading(name: str, recipe: Recipe | None, dataset: str, data_dir: str | Path | None,
                          folder: dict[str, Any]) -> None:
    """SettingsError for what the data cannot fit, found before it is read: images smaller
    than the preset takes, or than the recipe's shifts, a test split of 1 (no picture left
    to train on), a test split asked of a folder that holds train/ and test/."""
    name = canonical(name)
    side, smallest = image_side(dataset, folder.get("image_size")), SMALLEST_SIDES[name]
    if side is not None and side < smallest:
        raise SettingsError("image_size", f"preset {name} takes images of at least {smallest}x{smallest} "
                            f"pixels, not {side}x{side}")
    if side is not None:
        augment = (recipe or presets.recipe(name)).augment
        own = augment == presets.recipe(name).augment  # the preset's shifts, kept
        record.check_shifts(augment, side, side, f" ({name}'s recipe; --augment N sets fewer)" if own else "")
    split = folder.get("test_split")
    if isinstance(split, (int, float)) and not isinstance(split, bool) and split >= 1:  # else "train_size must be >= 1"
        raise SettingsError("test_split", f"{split} holds every picture out for testing, leaving none to train on "
                            "(a test split of 1 is for scoring a model on a folder); give a fraction in (0, 1)")
    if "test_split" in folder and data_dir is not None and all(Path(data_dir, part).is_dir()
                                                               for part in ("train", "test")):
        raise SettingsError("test_split", f"{data_dir} holds train/ and test/, which split it; a test split is "
                            "drawn from a folder of class folders only")


def resume_run(checkpoint: str | Path, backend_name: str = "numpy", device: Any = None, *, epochs: int | None = None,
               expected: dict[str, Any] | None = None, width: float | None = None,
               log: Callable[[str], None] | None = None, **options: Any) -> tuple[Trainer, Splits]:
    """What `xpcnn train --resume` continues: the run with every saved setting and the
    same images (read again from where they were read; never other data). Settings in
    `expected` (keys of record.KEPT_ON_RESUME) that differ raise SettingsConflict, and so
    does a `width` its preset's network was not built with; `epochs` beyond the saved
    total extends the run (see record.extend); `log` (default: stderr) takes the notes."""
    log = log or to_stderr
    trainer = Trainer.resume(checkpoint, backend_name, device, log=log, **options)
    if trainer.selection is None:
        raise ValueError(f"{checkpoint}: the run does not record which images it trained on (a custom Dataset); "
                         "continue it from Python with Trainer.resume")
    conflicts = record.conflicts(trainer, **(expected or {}))
    if conflicts:
        raise SettingsConflict(*conflicts[0])
    if width is not None and not presets.built_with_width(trainer.model, trainer.name, width):
        raise SettingsError("width", f"{width:g} is not the width of the run's network: a resumed run keeps the "
                            "one in its checkpoint")
    if epochs is not None and epochs < trainer.epochs:  # before any data is read
        raise Shortened(epochs, trainer.epochs)
    data = trainer.selection.load()
    log(f"data: {data[0].source}")
    trainer.choose_workers(data[0])
    if epochs is not None and epochs != trainer.epochs:
        log(record.extend(trainer, epochs, num_batches(len(data[0]), trainer.batch_size)))
    return trainer, data
