"""What a checkpoint's metadata may hold. Every field is checked before it is used, so a
malformed or hostile file ends in one CheckpointError naming the file and the field,
never in Python internals or in work sized by a lying number."""

from __future__ import annotations

import math
from typing import Any

MAX_EPOCHS = 1_000_000
MAX_STEPS = 10**12
MAX_SIZE = 10**9  # images, batch sizes, counters
MAX_SEED = 2**63 - 1


class CheckpointError(ValueError):
    """A checkpoint file is unreadable or does not match what it declares."""


def _is_int(value: Any, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _is_number(value: Any, low: float = -math.inf, high: float = math.inf) -> bool:
    return type(value) in (int, float) and math.isfinite(value) and low <= value <= high


class _Fields:
    """Checks fields of one file's metadata; the first failure raises, naming both."""

    def __init__(self, path: Any) -> None:
        self.path = path

    def require(self, field: str, value: Any, ok: bool, expected: str) -> None:
        if not ok:
            shown = repr(value)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            raise CheckpointError(f"{self.path}: field {field}: expected {expected}, got {shown}")

    def mapping(self, field: str, value: Any, keys: set[str] | None = None) -> dict[str, Any]:
        self.require(field, value, isinstance(value, dict), "an object")
        if keys is not None:
            missing = sorted(keys - set(value))
            self.require(field, value, not missing, f"an object with {', '.join(sorted(keys))}")
        return value


def check_meta(meta: dict[str, Any], path: Any) -> None:
    """Check the form of every field of a checkpoint's metadata (the architecture's layers
    are checked by Sequential.planned_arrays, the optimizer's settings by its class)."""
    fields = _Fields(path)
    fields.mapping("metadata", meta, {"architecture", "arrays", "extra_state", "optimizer", "trainer"})
    fields.require("architecture", meta["architecture"], isinstance(meta["architecture"], list), "a list of layers")
    for key, declared in fields.mapping("arrays", meta["arrays"]).items():
        entry = fields.mapping(f"arrays.{key}", declared, {"shape", "dtype"})
        shape = entry["shape"]
        fields.require(f"arrays.{key}.shape", shape, isinstance(shape, list) and len(shape) <= 8
                       and all(_is_int(size, 0, MAX_SIZE) for size in shape), "a list of at most 8 sizes")
        fields.require(f"arrays.{key}.dtype", entry["dtype"], entry["dtype"] in ("float32", "float64"),
                       "float32 or float64")
    for index, state in fields.mapping("extra_state", meta["extra_state"]).items():
        fields.require(f"extra_state.{index}", index, index.isdigit() and int(index) < len(meta["architecture"]),
                       "the index of a layer")
        for name, value in fields.mapping(f"extra_state.{index}", state).items():
            fields.require(f"extra_state.{index}.{name}", value, _is_int(value, 0, MAX_STEPS), "a count >= 0")
    if meta["optimizer"] is not None:
        optimizer = fields.mapping("optimizer", meta["optimizer"], {"config", "steps"})
        fields.require("optimizer.steps", optimizer["steps"], _is_int(optimizer["steps"], 0, MAX_STEPS), "a count >= 0")
        config = fields.mapping("optimizer.config", optimizer["config"], {"type", "lr", "schedule"})
        fields.require("optimizer.config.lr", config["lr"], _is_number(config["lr"], 1e-300), "a finite number > 0")
        fields.mapping("optimizer.config.schedule", config["schedule"], {"type"})
    _check_trainer(fields, fields.mapping("trainer", meta["trainer"]))


MAX_WORKERS = 4096


def _check_trainer(fields: _Fields, trainer: dict[str, Any]) -> None:
    """The trainer's progress and the run's description, where present (a model saved on
    its own has neither)."""
    if "epoch" in trainer:  # a Trainer's progress
        _check_progress(fields, trainer)
    if "info" in trainer:  # the description of the run
        _check_info(fields, trainer["info"])


def _check_progress(fields: _Fields, trainer: dict[str, Any]) -> None:
    counts = {"epoch": MAX_EPOCHS, "batch": MAX_SIZE, "seen": MAX_SIZE * MAX_EPOCHS, "batch_size": MAX_SIZE,
              "seed": MAX_SEED, "augment": 1000}
    for key, high in counts.items():
        value = trainer.get(key)
        fields.require(f"trainer.{key}", value, _is_int(value, 1 if key == "batch_size" else 0, high),
                       f"an integer in [{1 if key == 'batch_size' else 0}, {high:,}]")
    for key in ("loss_sum", "correct", "seconds"):
        fields.require(f"trainer.{key}", trainer.get(key), _is_number(trainer.get(key), 0.0), "a finite number >= 0")
    workers = trainer.get("workers")  # absent before worker threads existed (one model)
    fields.require("trainer.workers", workers, workers is None or _is_int(workers, 1, MAX_WORKERS),
                   f"an integer in [1, {MAX_WORKERS}] or null")
    history = trainer.get("history")
    fields.require("trainer.history", history, isinstance(history, list) and len(history) <= MAX_EPOCHS,
                   "a list of one object per epoch")
    for number, row in enumerate(history):
        row = fields.mapping(f"trainer.history.{number}", row, {"epoch", "train_loss", "train_accuracy", "seconds"})
        for key in ("train_loss", "train_accuracy", "seconds"):
            fields.require(f"trainer.history.{number}.{key}", row[key], _is_number(row[key], 0.0), "a number >= 0")


def _check_info(fields: _Fields, info: Any) -> None:
    info = fields.mapping("trainer.info", info, {"model", "settings", "data"})
    fields.require("trainer.info.model", info["model"], isinstance(info["model"], str), "a name")
    settings = fields.mapping("trainer.info.settings", info["settings"], {"epochs"})
    fields.require("trainer.info.settings.epochs", settings["epochs"], _is_int(settings["epochs"], 0, MAX_EPOCHS),
                   f"an integer in [0, {MAX_EPOCHS:,}]")
    if info["data"] is not None:
        check_data_statistics(fields, info["data"])


def check_data_statistics(fields: _Fields, data: Any) -> None:
    """The training data's name, normalisation and class names (what prediction needs)."""
    data = fields.mapping("trainer.info.data", data, {"name", "mean", "std", "classes"})
    fields.require("trainer.info.data.name", data["name"], isinstance(data["name"], str), "a dataset name")
    fields.require("trainer.info.data.mean", data["mean"], _is_number(data["mean"]), "a finite number")
    fields.require("trainer.info.data.std", data["std"], _is_number(data["std"], 1e-12), "a finite number > 0")
    classes = data["classes"]
    fields.require("trainer.info.data.classes", classes, isinstance(classes, list) and 0 < len(classes) <= 100_000
                   and all(isinstance(name, str) for name in classes), "a list of class names")
