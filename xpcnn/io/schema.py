"""What a checkpoint's metadata may hold. Every field is checked before it is used, so a
malformed or hostile file ends in one CheckpointError naming the file and the field,
never in Python internals or in work sized by a lying number. The fields of the run that
wrote it (progress, settings) are the run record's to check (xpcnn.train.record), where a
run is resumed."""

from __future__ import annotations

import math
from typing import Any

from ..datasets.dataset import MAX_STATISTIC  # what predict takes (per_channel): a checkpoint holds no other
from ..datasets.sources import MAX_CLASS_NAME, PICTURES, printable_name

MAX_EPOCHS = 1_000_000
MAX_STEPS = 10**12
MAX_SIZE = 10**9  # images, batch sizes, counters
MAX_SEED = 2**63 - 1


class CheckpointError(ValueError):
    """A checkpoint file is unreadable or does not match what it declares."""


def is_int(value: Any, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _is_index(text: str, count: int) -> bool:
    """Whether `text` is the decimal index of one of `count` items: ASCII digits, and not
    too many of them, which int() refuses ("²", 5,000 digits)."""
    return text.isascii() and text.isdigit() and len(text) <= len(str(count)) and int(text) < count


def is_number(value: Any, low: float = -math.inf, high: float = math.inf) -> bool:
    return type(value) in (int, float) and math.isfinite(value) and low <= value <= high


class Fields:
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
    fields = Fields(path)
    fields.mapping("metadata", meta, {"architecture", "arrays", "extra_state", "optimizer", "trainer"})
    fields.require("architecture", meta["architecture"], isinstance(meta["architecture"], list), "a list of layers")
    for key, declared in fields.mapping("arrays", meta["arrays"]).items():
        entry = fields.mapping(f"arrays.{key}", declared, {"shape", "dtype"})
        shape = entry["shape"]
        fields.require(f"arrays.{key}.shape", shape, isinstance(shape, list) and len(shape) <= 8
                       and all(is_int(size, 0, MAX_SIZE) for size in shape), "a list of at most 8 sizes")
        fields.require(f"arrays.{key}.dtype", entry["dtype"], entry["dtype"] in ("float32", "float64"),
                       "float32 or float64")
    for index, state in fields.mapping("extra_state", meta["extra_state"]).items():
        fields.require(f"extra_state.{index}", index, _is_index(index, len(meta["architecture"])),
                       "the index of a layer")
        for name, value in fields.mapping(f"extra_state.{index}", state).items():
            fields.require(f"extra_state.{index}.{name}", value, is_int(value, 0, MAX_STEPS), "a count >= 0")
    if meta["optimizer"] is not None:
        optimizer = fields.mapping("optimizer", meta["optimizer"], {"config", "steps"})
        fields.require("optimizer.steps", optimizer["steps"], is_int(optimizer["steps"], 0, MAX_STEPS), "a count >= 0")
        config = fields.mapping("optimizer.config", optimizer["config"], {"type", "lr", "schedule"})
        fields.require("optimizer.config.lr", config["lr"], is_number(config["lr"], 1e-300), "a finite number > 0")
        fields.mapping("optimizer.config.schedule", config["schedule"], {"type"})
    _check_trainer(fields, fields.mapping("trainer", meta["trainer"]))


def _check_trainer(fields: Fields, trainer: dict[str, Any]) -> None:
    """The training data's statistics, where the run recorded them: what evaluating and
    using the model read. The rest of the trainer part is the run record's
    (xpcnn.train.record), which checks it where a run is resumed."""
    info = trainer.get("info")
    if isinstance(info, dict) and info.get("data") is not None:
        check_data_statistics(fields, info["data"])


MAX_SIDE = 1 << 16  # pixels on a side of an input image (what one image costs is MAX_ACTIVATIONS' to bound)
# Data statistics written before the input shape was recorded are of MNIST's 28x28 grey digits: there was no other.
UNRECORDED_INPUT_SHAPE = (1, 28, 28)


def input_shape(data: dict[str, Any]) -> tuple[int, ...]:
    """The (C, H, W) of the images data statistics describe (UNRECORDED_INPUT_SHAPE where
    they do not say)."""
    return tuple(data.get("input_shape", UNRECORDED_INPUT_SHAPE))


def check_data_statistics(fields: Fields, data: Any) -> None:
    """The training data's name, normalisation (a mean and std per channel: a number each
    before colour), class names, input shape (C, H, W; absent before it was recorded) and
    how pictures are brought into its form (absent before photos): what prediction needs."""
    data = fields.mapping("trainer.info.data", data, {"name", "mean", "std", "classes"})
    fields.require("trainer.info.data.name", data["name"], isinstance(data["name"], str), "a dataset name")
    classes = data["classes"]
    fields.require("trainer.info.data.classes", classes, isinstance(classes, list) and 0 < len(classes) <= 100_000,
                   "a list of class names")
    for number, name in enumerate(classes):  # printed as they are: a line break or escape would forge output
        fields.require(f"trainer.info.data.classes.{number}", name, isinstance(name, str) and printable_name(name),
                       f"a printable name of 1 to {MAX_CLASS_NAME} characters")
    shape = data.get("input_shape", list(UNRECORDED_INPUT_SHAPE))
    fields.require("trainer.info.data.input_shape", shape, isinstance(shape, list) and len(shape) == 3
                   and all(is_int(size, 1, MAX_SIDE) for size in shape),
                   f"(channels, height, width), each in [1, {MAX_SIDE:,}]")
    for key, low in (("mean", -MAX_STATISTIC), ("std", 1e-12)):
        value = data[key]
        values = value if isinstance(value, list) else [value]
        fields.require(f"trainer.info.data.{key}", value, len(values) == shape[0]
                       and all(is_number(v, low, MAX_STATISTIC) for v in values),
                       f"a number in [{low:g}, {MAX_STATISTIC:g}] per channel ({shape[0]})")
    pictures = data.get("pictures", "digits")
    fields.require("trainer.info.data.pictures", pictures, pictures in PICTURES, " or ".join(PICTURES))
