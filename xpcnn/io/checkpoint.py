"""Checkpoints: arrays plus JSON in one .npz file, no pickle, loadable on any backend.

Members: "__meta__" (UTF-8 JSON as uint8), "param/<name>", "buffer/<name>",
"optim/<slot>/<name>" and, saved partway through an epoch, "start/<name>" (a weight as the
epoch began: xpcnn.train.layer_stats measures how far it moves). The JSON holds the
architecture, each array's shape and dtype, layer extra state (dropout counters),
optimizer settings and the trainer's state.
Saving is atomic (temporary file, fsync, rename): a crash keeps the previous checkpoint.

Loading trusts nothing: the metadata is checked field by field (io.schema), the
arrays it declares are compared with what the architecture needs before any is read or
the network built, members must be stored uncompressed, named once and exactly the size
of what their header declares (so loading never needs much more memory than the file's
size, and reads every member to its end, where its CRC is checked), and every array must
be finite.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import tokenize
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import backend
from .._version import __version__
from ..datasets import Dataset, Selection
from ..layers import BatchNorm2D
from ..model import Sequential
from ..optim import OPTIMIZERS, Optimizer
from .atomic import atomic_write_bytes
from .npyheader import read_npy_header
from .regular import why_missing
from .schema import CheckpointError, Fields, check_data_statistics, check_meta, input_shape

FORMAT = "xpcnn-checkpoint"
VERSION = 1
META_KEY = "__meta__"
HELD_BY_PARAMS = ("optim/", "start/")  # members of a parameter's shape, kept beside it: not the network's own
MAX_META_BYTES = 1 << 24  # 16 MiB of JSON is far beyond any real architecture and history
NPY_HEADER_SLACK = 1 << 16  # an .npy member is its header (< 64 KiB) plus the declared data
# Values one image of a network's input shape makes, the input and every layer's output
# (blocks' layers too) summed: 8 GiB of float32. Every preset at width 1 and the largest
# image size the command line reads (1024x1024) makes under a third of it (resnet20:
# 0.7e9); a padding of 20,000 on 28x28 images made 13e9, 51 GB a picture, from a tiny
# file. A run that would write more is refused before it trains (check_savable).
MAX_ACTIVATIONS = 1 << 31



@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (on the requested backend), the optimizer's settings,
    step count and state arrays (host), the trainer's JSON state, and the weights an epoch
    in progress began with (host; saved partway through one, else empty)."""

    model: Sequential
    optimizer: dict[str, Any] | None = None
    optimizer_arrays: dict[str, np.ndarray] = field(default_factory=dict)
    trainer: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    start_arrays: dict[str, np.ndarray] = field(default_factory=dict)  # weights as the epoch began, by param name

    def data_statistics(self) -> dict[str, Any]:
        """What the model was trained on: dataset name, normalisation mean and std per
        channel, class names, input shape, how pictures are read (the form of
        datasets.Dataset.statistics, older files' brought into it); CheckpointError if the
        file lacks them or the network does not fit them."""
        info = self.trainer.get("info")
        data = info.get("data") if isinstance(info, dict) else None
        if not isinstance(data, dict) or not {"name", "mean", "std", "classes"} <= set(data):
            raise CheckpointError(f"{self.path}: no data statistics (dataset, mean, std, classes) in the checkpoint; "
                                  "save_checkpoint(..., data=the training set) or a Trainer's fit writes them")
        why = self.model.classifying_misfit(input_shape(data), len(data["classes"]))
        if why:
            raise CheckpointError(f"{self.path}: fields architecture and trainer.info.data disagree: {why}")
        return current_statistics(data)

    def selection(self) -> Selection | None:
        """Which images the run trained on (datasets.Selection, kept as the "data" of the
        run's settings), if the checkpoint says."""
        fields, info = Fields(self.path), self.trainer.get("info", {})
        settings = fields.mapping("trainer.info", info).get("settings", {})
        saved = fields.mapping("trainer.info.settings", settings).get("data")
        try:
            return None if saved is None else Selection.from_dict(saved)
        except ValueError as exc:
            raise CheckpointError(f"{self.path}: field trainer.info.settings.data: {exc}"[:300]) from None

    def __repr__(self) -> str:
        optimizer = (self.optimizer or {}).get("config", {}).get("type", "none")
        return (f"Checkpoint({self.path}: {self.model.num_params():,} parameters on {self.model.backend}, "
                f"optimizer {optimizer}, trained {len(self.trainer.get('history', []))} epochs)")

    def restore_optimizer(self) -> Optimizer:
        """The optimizer of the checkpoint with its state and step count, for the model, on
        its backend and device; CheckpointError where it holds none, or naming a setting it
        does not take."""
        if self.optimizer is None:
            raise CheckpointError(f"{self.path}: holds no optimizer (a model saved alone: save_checkpoint(path, model, "
                                  "optimizer) keeps one)")
        model = self.model
        try:
            optimizer = Optimizer.from_config(model, self.optimizer["config"])
            arrays = {k: backend.to_backend(v, model.backend, model.device) for k, v in self.optimizer_arrays.items()}
            optimizer.load_state_arrays(arrays, self.optimizer["steps"])
        except (TypeError, ValueError, KeyError) as exc:  # settings the optimizer does not take
            raise CheckpointError(f"{self.path}: field optimizer: {exc}"[:300]) from None
        return optimizer


def current_statistics(data: dict[str, Any]) -> dict[str, Any]:
    """Checked data statistics in today's form: older files have a number for the mean
    and std of their one channel, and lack the input shape (then 28x28 grey, see
    input_shape) and how pictures are read (then as digits, the only way there was)."""
    shape = list(input_shape(data))
    as_list = {key: data[key] if isinstance(data[key], list) else [data[key]] for key in ("mean", "std")}
    return {**data, **as_list, "input_shape": shape, "pictures": data.get("pictures", "digits")}


class NotFinite(ValueError):
    """A checkpoint was not written: an array held NaN or Inf (load_checkpoint refuses such
    files); `key` names it (param/..., buffer/..., optim/...)."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


def _check_finite(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """NotFinite naming the first array of floats in `arrays` with a NaN or an Inf."""
    for key, value in arrays.items():
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise NotFinite(f"{path}: not written: {key} holds NaN or Inf values (the file could not be loaded)", key)


def save_checkpoint(path: str | Path, model: Sequential, optimizer: Any = None, trainer: dict[str, Any] | None = None,
                    *, data: Dataset | dict[str, Any] | None = None, start: dict[str, Any] | None = None) -> None:
    """Write model, optimizer and trainer state to `path` atomically. `data` (the training
    Dataset, or its statistics; default: `model.data`) is what evaluate, predict and
    export read of it: class names, normalisation, input shape. `start` holds parameters
    by name as the epoch in progress began (a Trainer's, saved partway through one).
    Writing nothing, NotFinite where an array holds NaN or Inf, ValueError for an
    optimizer of another network, a network or optimizer no load could rebuild (their
    check_rebuildable), or a `start` array that is no parameter's or of another shape."""
    if not isinstance(model, Sequential):
        raise TypeError(f"save_checkpoint model must be a Sequential, got {type(model).__name__}")
    if optimizer is not None and not isinstance(optimizer, Optimizer):
        raise TypeError(f"save_checkpoint optimizer must be an Optimizer or None, got {type(optimizer).__name__}")
    if optimizer is not None and optimizer.model is not model:  # its state would be saved as this network's
        raise ValueError("save_checkpoint optimizer must be the model's: it was built for another network")
    model.check_rebuildable()  # else the file is written, and no load takes it
    if optimizer is not None:
        optimizer.check_rebuildable()
    if data is not None and not isinstance(data, (Dataset, dict)):
        raise TypeError(f"save_checkpoint data must be a Dataset or its statistics, got {type(data).__name__}")
    trainer = _with_data(trainer, data if data is not None else model.data, model)
    model.dtype  # noqa: B018  (raises for arrays of several dtypes, which load_checkpoint refuses)
    arrays: dict[str, np.ndarray] = {}
    arrays.update({f"param/{k}": backend.to_numpy(v) for k, v in model.params.items()})
    arrays.update({f"buffer/{k}": backend.to_numpy(v) for k, v in model.buffers.items()})
    arrays.update(_start_arrays(start or {}, arrays))
    optimizer_meta = None
    if optimizer is not None:
        arrays.update({f"optim/{k}": backend.to_numpy(v) for k, v in optimizer.state_arrays().items()})
        optimizer_meta = {"config": optimizer.config(), "steps": optimizer.steps}
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "xpcnn": __version__,
        "architecture": model.config(),
        "extra_state": {str(i): layer.extra_state() for i, layer in enumerate(model) if layer.extra_state()},
        "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()},
        "optimizer": optimizer_meta,
        "trainer": trainer or {},
    }
    _check_finite(path, arrays)
    arrays[META_KEY] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def _start_arrays(start: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`start` as members "start/<name>", each in its parameter's shape and dtype (a file of
    two dtypes, which load_checkpoint refuses, is never written); ValueError naming one that
    is not the network's parameter or not of its shape."""
    members = {}
    for name, value in start.items():
        param = arrays.get(f"param/{name}")
        value = np.asarray(backend.to_numpy(value))
        if param is None or value.shape != param.shape:
            expected = "no parameter of the network" if param is None else f"{value.shape}, not {param.shape}"
            raise ValueError(f"save_checkpoint start: {name!r} is {expected}")
        members[f"start/{name}"] = value.astype(param.dtype, copy=False)
    return members


def _with_data(trainer: dict[str, Any] | None, data: Dataset | dict[str, Any] | None,
               model: Sequential) -> dict[str, Any]:
    """The trainer part of a checkpoint, holding the data statistics (where a Trainer
    keeps them, trainer.info.data) when it has none of its own, checked against the
    network; for a Dataset that can be read again, also how (its Selection, where a
    Trainer keeps it), so that `xpcnn evaluate` finds its test images."""
    trainer = dict(trainer or {})
    info = dict(trainer.get("info") or {})
    if data is None or info.get("data") is not None:
        return trainer
    info["data"] = _checked_statistics(data.statistics() if isinstance(data, Dataset) else dict(data), model)
    settings = dict(info.get("settings") or {})
    if isinstance(data, Dataset) and data.selection is not None and settings.get("data") is None:
        settings["data"] = data.selection.to_dict()
        info["settings"] = settings
    trainer["info"] = info
    return trainer


def _checked_statistics(data: dict[str, Any], model: Sequential) -> dict[str, Any]:
    """Data statistics that a checkpoint can hold and the network fits; ValueError naming
    what is wrong (a file that could never be loaded is never written)."""
    try:
        check_data_statistics(Fields("save_checkpoint data"), data)
    except CheckpointError as exc:
        raise ValueError(str(exc).replace("field trainer.info.data", "field data")) from None
    shape = input_shape(data)
    why = model.classifying_misfit(shape, len(data["classes"]))
    if why:
        raise ValueError(f"save_checkpoint data: {why}")
    values = activation_values(model, shape)
    if values > MAX_ACTIVATIONS:
        raise ValueError(f"save_checkpoint data: one {shape} image makes {values:,} values in the network's layers, "
                         f"over the {MAX_ACTIVATIONS:,} a checkpoint may ask for")
    return data


def check_savable(model: Sequential, data: dict[str, Any]) -> None:
    """ValueError where a checkpoint of `model` trained on data of the statistics `data`
    (Dataset.statistics) could not be loaded: what load_checkpoint refuses of its data, or
    of the values one image makes, found before a run trains for it. Its refusals of the
    network itself are model.check_rebuildable()'s."""
    _checked_statistics(data, model)


def activation_values(model: Sequential, input_shape: tuple[int, ...]) -> int:
    """The values one image of `input_shape` (C, H, W) makes in `model`: itself and every
    layer's output, blocks' layers included (Misfit where the network cannot take it)."""
    return math.prod(input_shape) + sum(math.prod(out) for _, _, out in model.shaped_layers((1, *input_shape)))


def _check_activations(model: Sequential, meta: dict[str, Any], path: Path) -> None:
    """CheckpointError where one image of the recorded input shape makes more than
    MAX_ACTIVATIONS values (activation_values): using the network would allocate them."""
    info = meta["trainer"].get("info")
    data = info.get("data") if isinstance(info, dict) else None
    if data is None:
        return
    shape = input_shape(data)
    try:
        values = activation_values(model, shape)
    except ValueError:  # a network that does not take its data, named where it is used (data_statistics)
        values = math.prod(shape)
    if values > MAX_ACTIVATIONS:
        raise CheckpointError(f"{path}: field architecture: one {'x'.join(map(str, shape))} image "
                              f"(trainer.info.data.input_shape) makes {values:,} values in its layers, over the "
                              f"limit of {MAX_ACTIVATIONS:,}")


# What a damaged zip archive or .npy member raises from inside zipfile, zlib and NumPy.
# (tokenize.TokenError and SyntaxError come from NumPy parsing a malformed .npy header;
# RuntimeError from zipfile for a member flagged as encrypted, found by atheris.)
ARCHIVE_ERRORS = (ValueError, OSError, EOFError, KeyError, NotImplementedError, SyntaxError, RuntimeError,
                  tokenize.TokenError, zipfile.BadZipFile, zlib.error, struct.error)
ZIP_MAGIC = b"PK\x03\x04"


def _header(archive: Any, key: str, path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, bytes after the header) of member `key`, read before NumPy allocates
    what its .npy header asks for; any damage becomes a CheckpointError naming it."""
    try:
        with archive.zip.open(f"{key}.npy") as member:
            shape, dtype = read_npy_header(member)
            return shape, dtype, archive.zip.getinfo(f"{key}.npy").file_size - member.tell()
    except ARCHIVE_ERRORS as exc:
        raise CheckpointError(f"{path}: cannot read the header of {key}: {type(exc).__name__}: "
                              f"{' '.join(str(exc).split())}"[:300]) from None  # NumPy's messages span lines


def _member(archive: Any, key: str, path: Path) -> np.ndarray:
    """One array of the archive, read by NumPy; callers first check its header (`_header`)
    and that it holds exactly its data, so that NumPy reads it to its end, where zipfile
    checks its CRC."""
    try:
        return archive[key]
    except ARCHIVE_ERRORS as exc:
        raise CheckpointError(f"{path}: cannot read {key}: {type(exc).__name__}: {exc}"[:300]) from None


def _check_members(archive: Any, path: Path) -> None:
    """Every member an .npy array named once: np.load lists another member under its own
    name (and would read it as a pickle), and a name given twice reads as its last copy."""
    names = archive.zip.namelist()
    odd = [name for name in names if not name.endswith(".npy")]
    if odd:
        raise CheckpointError(f"{path}: member {odd[0][:100]!r} is not an .npy array; a checkpoint holds arrays only")
    if len(set(names)) != len(names):
        twice = next(name for name in names if names.count(name) > 1)
        raise CheckpointError(f"{path}: member {twice[:100]!r} is stored more than once; a checkpoint holds each "
                              "array once")


def _read_meta(archive: Any, path: Path) -> dict[str, Any]:
    _check_members(archive, path)
    if META_KEY not in archive.files:
        raise CheckpointError(f"{path}: not an xpcnn checkpoint (no {META_KEY} entry)")
    info = archive.zip.getinfo(f"{META_KEY}.npy")
    if info.file_size > MAX_META_BYTES + NPY_HEADER_SLACK:
        raise CheckpointError(
            f"{path}: {META_KEY} unpacks to {info.file_size:,} bytes, over the limit of {MAX_META_BYTES:,}"
        )
    shape, dtype, size = _header(archive, META_KEY, path)
    if dtype != np.uint8 or len(shape) != 1 or shape[0] > MAX_META_BYTES or size != shape[0]:
        raise CheckpointError(f"{path}: {META_KEY} must be a 1-D uint8 array of at most {MAX_META_BYTES:,} bytes "
                              f"and nothing else, got {shape} {dtype} with {size:,} bytes of data")
    raw = _member(archive, META_KEY, path)
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except RecursionError:  # Python's JSON parser recurses once per level
        raise CheckpointError(f"{path}: {META_KEY} nests JSON arrays or objects too deeply to be read") from None
    except ValueError as exc:  # bad UTF-8, bad JSON, integers of thousands of digits
        raise CheckpointError(f"{path}: {META_KEY} is not usable UTF-8 JSON: {exc}"[:300]) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not an xpcnn checkpoint (format {meta.get('format') if isinstance(meta, dict) else None!r})"
        )
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {meta.get('version')!r}, this xpcnn reads version {VERSION}")
    check_meta(meta, path)
    return meta


def _expected_arrays(meta: dict[str, Any], path: Path) -> tuple[dict[str, tuple[int, ...]], set[str]]:
    """(the arrays the architecture needs, by member name, with their shapes; the names of
    optimizer state arrays and epoch-start weights it may also hold), computed from the
    metadata alone."""
    try:
        planned = Sequential.planned_arrays(meta["architecture"])
    except ValueError as exc:
        raise CheckpointError(f"{path}: field architecture: {exc}") from None
    required = {f"{kind}/{name}": shape for name, (kind, shape) in planned.items()}
    params = [name for name, (role, _) in planned.items() if role == "param"]
    optional: set[str] = set()
    if meta["optimizer"] is not None:
        kind = str(meta["optimizer"]["config"]["type"]).lower()
        if kind not in OPTIMIZERS:
            raise CheckpointError(f"{path}: field optimizer.config.type: unknown optimizer {kind!r}")
        optional = {f"optim/{slot}/{name}" for slot in OPTIMIZERS[kind].slots for name in params}
    return required, optional | {f"start/{name}" for name in params}


def _check_declared(meta: dict[str, Any], archive: Any, path: Path) -> None:
    """Compare the declared arrays with what the architecture needs and with the archive's
    members, before any array is read or the network is built."""
    declared, stored = meta["arrays"], set(archive.files) - {META_KEY}
    if set(declared) != stored:
        raise CheckpointError(f"{path}: the arrays listed in the metadata differ from those stored: "
                              f"{sorted(set(declared) ^ stored)[:10]}")
    required, optional = _expected_arrays(meta, path)
    problems = [f"missing {key}" for key in required if key not in declared]
    problems += [f"unexpected {key}" for key in declared if key not in required and key not in optional]
    for key, entry in declared.items():
        owner = "param/" + key.split("/", 2)[-1] if key.startswith(HELD_BY_PARAMS) else key  # a param's shape
        need = required.get(owner)
        if need is not None and tuple(entry["shape"]) != need:
            problems.append(f"{key}: shape {tuple(entry['shape'])}, architecture needs {need}")
    if len({entry["dtype"] for entry in declared.values()}) > 1:
        problems.append(f"arrays must share one dtype, got {sorted({e['dtype'] for e in declared.values()})}")
    if problems:
        raise CheckpointError(f"{path}: does not match its architecture: " + "; ".join(problems[:10]))
    members = {key: archive.zip.getinfo(f"{key}.npy") for key in declared}
    for key, entry in declared.items():
        nbytes = math.prod(entry["shape"]) * np.dtype(entry["dtype"]).itemsize
        if members[key].file_size > nbytes + NPY_HEADER_SLACK:
            raise CheckpointError(f"{path}: {key} unpacks to {members[key].file_size:,} bytes, its declaration "
                                  f"allows {nbytes:,}")
    for key, member in members.items():  # stored, so reading never needs more memory than the file's size
        if member.compress_type != zipfile.ZIP_STORED:
            raise CheckpointError(f"{path}: {key} is compressed; xpcnn writes (and reads) stored arrays only")


def load_checkpoint(
    path: str | Path, backend_name: str = "numpy", device: Any = None, dtype: str | None = None
) -> Checkpoint:
    """Load a checkpoint onto a backend (dtype: the saved one unless given).

    Every array must be exactly what the architecture needs (names, shapes, one float
    dtype) and finite; anything else raises CheckpointError naming the file and what differs.
    """
    if not isinstance(path, (str, Path)):
        raise TypeError(f"load_checkpoint path must be a file or folder path, got {type(path).__name__}")
    dtype = None if dtype is None else backend.float_name(dtype)  # before the batch norms' eps is judged in it
    path = _checkpoint_file(Path(path))
    try:
        archive = np.load(path, allow_pickle=False)
    except ARCHIVE_ERRORS as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint (.npz): {exc}") from None
    with archive:
        meta = _read_meta(archive, path)
        _check_declared(meta, archive, path)
        arrays = {key: _read_array(archive, key, meta["arrays"][key], path) for key in sorted(meta["arrays"])}
    model = _build(meta, arrays, path)
    _check_batch_norms(model, dtype, path)
    _check_activations(model, meta, path)
    model.to(backend_name, device, dtype)
    optimizer_arrays = {k.removeprefix("optim/"): v for k, v in arrays.items() if k.startswith("optim/")}
    start_arrays = {k.removeprefix("start/"): v for k, v in arrays.items() if k.startswith("start/")}
    checkpoint = Checkpoint(model, meta["optimizer"], optimizer_arrays, meta["trainer"], meta, path, start_arrays)
    try:
        model.data = checkpoint.data_statistics()
    except CheckpointError:
        model.data = None  # a network saved without its data: using it needs them given
    return checkpoint


def _checkpoint_file(path: Path) -> Path:
    """The checkpoint file that `path` names (itself, or a run folder's checkpoint.npz),
    after checking that it is a regular file starting as a .npz does; FileNotFoundError or
    CheckpointError saying what it is instead."""
    if path.is_dir():  # a run folder
        if path.name.endswith(".npz"):
            raise CheckpointError(f"{path}: a folder, not a checkpoint file")
        if not os.path.lexists(path / "checkpoint.npz"):
            raise CheckpointError(f"{path}: a folder without checkpoint.npz (a run folder holds one)")
        path = path / "checkpoint.npz"
    if not path.exists():
        if path.is_symlink():
            raise CheckpointError(f"{path}: {why_missing(path)}")
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if not path.is_file():  # a folder, a FIFO, a device...
        raise CheckpointError(f"{path}: not a checkpoint file ({'a folder' if path.is_dir() else 'a special file'})")
    try:
        with open(path, "rb") as handle:
            start = handle.read(4)
    except OSError as exc:  # /proc/self/mem: the file is there, reading it fails
        raise CheckpointError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    if start != ZIP_MAGIC:  # np.load would read any .npy whole, whatever it asks for
        raise CheckpointError(f"{path}: not a checkpoint archive (.npz files start with {ZIP_MAGIC!r})")
    return path


def _build(meta: dict[str, Any], arrays: dict[str, np.ndarray], path: Path) -> Sequential:
    """The network of the architecture, holding the checkpoint's arrays and extra state."""
    try:  # what planned_arrays cannot see: a stride of [], a padding of "wide"...
        model = Sequential.from_config(meta["architecture"])
    except ValueError as exc:
        raise CheckpointError(f"{path}: field architecture: {exc}") from None
    model.set_arrays({key.partition("/")[2]: value for key, value in arrays.items()
                      if not key.startswith(HELD_BY_PARAMS)})
    for index, state in meta["extra_state"].items():
        try:
            model[int(index)].load_extra_state(state)
        except (ValueError, IndexError, TypeError) as exc:
            raise CheckpointError(f"{path}: field extra_state.{index}: {exc}") from None
    return model


def _check_batch_norms(model: Sequential, dtype: str | None, path: Path) -> None:
    """Batch norms whose running statistics inference can use: variances >= 0 (it takes
    their square roots) and an eps > 0 in the saved dtype and in `dtype` (an eps that is 0
    there divides by a variance of 0)."""
    for position, layer in model.named_layers():
        if not isinstance(layer, BatchNorm2D):
            continue
        variances = layer.buffers["running_var"]
        if np.any(variances < 0):
            raise CheckpointError(f"{path}: buffer/{position}.running_var: expected variances >= 0, got "
                                  f"{variances.min():g}")
        for kind in {variances.dtype, np.dtype(dtype or variances.dtype)}:
            if not kind.type(layer.eps) > 0:
                raise CheckpointError(f"{path}: field architecture: layer {position} (BatchNorm2D): expected an eps "
                                      f"> 0 in {kind}, got {layer.eps!r} (0 in {kind})")


def _read_array(archive: Any, key: str, declared: Any, path: Path) -> np.ndarray:
    """One member, after checking its .npy header and size against its declaration."""
    shape, dtype = tuple(declared["shape"]), np.dtype(declared["dtype"])
    header_shape, header_dtype, size = _header(archive, key, path)
    if header_shape != shape or header_dtype != dtype:
        raise CheckpointError(f"{path}: {key} is stored as {header_shape} {header_dtype}, "
                              f"metadata says {shape} {dtype}")
    if size != math.prod(shape) * dtype.itemsize:
        raise CheckpointError(f"{path}: {key} holds {size:,} bytes after its header, its {shape} {dtype} data "
                              f"take {math.prod(shape) * dtype.itemsize:,}")
    value = _member(archive, key, path)
    if not np.all(np.isfinite(value)):
        raise CheckpointError(f"{path}: {key} holds NaN or Inf values; a usable model has finite weights "
                              "and statistics")
    return value
