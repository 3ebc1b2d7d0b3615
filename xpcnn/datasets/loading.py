"""Datasets in memory: the full files when they can be found or downloaded, else the
MNIST subset that ships inside the package."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .files import ChecksumError, DownloadError, cache_dir, download_file, find_file, load_verified, search_dirs
from .sources import DATASETS, MNIST, DatasetSpec

BUNDLED_FILE = "mnist-subset.npz"
BUNDLED_CHECKSUMS = "mnist-subset.json"


class DataNotFound(RuntimeError):
    """The dataset is neither on disk nor downloadable, and has no bundled subset."""


def normalize(images: np.ndarray, mean: float, std: float) -> np.ndarray:
    """uint8 images (n, H, W) -> float32 (n, 1, H, W), scaled to [0, 1] then standardised
    with the training set's `mean` and `std`: what a network trained by xpcnn expects."""
    x = images.astype(np.float32) / np.float32(255.0)
    return ((x - np.float32(mean)) / np.float32(std))[:, None, :, :]


@dataclass(frozen=True)
class Selection:
    """Which images a run uses: the dataset, where its files were read (None: the bundled
    subset), and the limit, seed and validation split that `Loaded.splits` applied.
    Recorded with a run, so that a resumed run reads exactly the same images."""

    dataset: str
    folders: tuple[str, ...] | None = None
    limit: int | None = None
    seed: int = 0
    val_split: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "folders": None if self.folders is None else list(self.folders),
                "limit": self.limit, "seed": self.seed, "val_split": self.val_split}

    @classmethod
    def from_dict(cls, data: Any) -> Selection:
        """The inverse of to_dict(); ValueError naming the field that is malformed."""
        if not isinstance(data, dict) or set(data) != {"dataset", "folders", "limit", "seed", "val_split"}:
            raise ValueError(f"selection: expected dataset, folders, limit, seed, val_split; got {data!r}"[:300])
        folders, limit, seed, split = data["folders"], data["limit"], data["seed"], data["val_split"]
        checks = {
            "dataset": isinstance(data["dataset"], str) and data["dataset"] in DATASETS,
            "folders": folders is None or (isinstance(folders, list) and all(isinstance(f, str) for f in folders)),
            "limit": limit is None or (type(limit) is int and limit >= 1),
            "seed": type(seed) is int and seed >= 0,
            "val_split": type(split) in (int, float) and 0.0 <= split < 1.0,
        }
        for field, ok in checks.items():
            if not ok:
                raise ValueError(f"selection.{field}: unusable value {data[field]!r}"[:300])
        return cls(data["dataset"], None if folders is None else tuple(folders), limit, seed, float(split))

    def load(self) -> tuple[Dataset, Dataset | None, Dataset]:
        """(train, validation or None, test): the same images again. Reads only the
        recorded folders, never downloads and never falls back to other data;
        DataNotFound names the folder when the files are gone."""
        if self.folders is None:
            loaded = load_bundled()
        else:
            try:
                loaded = load_full(DATASETS[self.dataset], download=False, only=[Path(f) for f in self.folders])
            except DataNotFound as exc:
                raise DataNotFound(f"the run's data is gone from {', '.join(self.folders)}: {exc}") from None
        return loaded.splits(self.limit, self.seed, self.val_split)


@dataclass(repr=False)
class Dataset:
    """Images (N, H, W) uint8 and labels (N,) integers in [0, classes) of one split, with
    the dataset's spec, where it was read from and, when it can be read again, how
    (`selection`). Labels must be integers already: floats, strings, booleans and NaN are
    refused, naming the first, never rounded or cast."""

    images: np.ndarray
    labels: np.ndarray
    spec: DatasetSpec
    source: str = ""  # one line, e.g. "full mnist from /data/mnist"
    selection: Selection | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.spec, DatasetSpec):
            raise TypeError(f"Dataset spec must be a DatasetSpec, got {type(self.spec).__name__}")
        name = self.spec.name
        if not isinstance(self.images, np.ndarray) or self.images.dtype != np.uint8:
            shown = self.images.dtype if isinstance(self.images, np.ndarray) else type(self.images).__name__
            raise TypeError(f"{name}: images must be a NumPy array of uint8, got {shown}")
        if self.images.ndim != 3:
            raise ValueError(f"{name}: images must be (N, H, W), got shape {self.images.shape}")
        if not isinstance(self.labels, np.ndarray) or self.labels.shape != (self.images.shape[0],):
            shown = self.labels.shape if isinstance(self.labels, np.ndarray) else type(self.labels).__name__
            raise ValueError(f"{name}: {self.images.shape[0]} images need labels of shape ({self.images.shape[0]},), "
                             f"got {shown}")
        self.labels = _class_indices(self.labels, len(self.spec.classes), name)

    def __repr__(self) -> str:
        n, h, w = self.images.shape
        where = f", {self.source}" if self.source else ""
        return f"Dataset({self.spec.name}: {n:,} images {h}x{w}, {len(self.spec.classes)} classes{where})"

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def statistics(self) -> dict[str, Any]:
        """What using a model trained on this data needs to know of it: the dataset's name,
        the normalisation (mean, std), the class names, the input shape (C, H, W) and where
        the data came from; what a checkpoint keeps (save_checkpoint) and `model.data` holds."""
        spec = self.spec
        return {"name": spec.name, "mean": spec.mean, "std": spec.std, "classes": list(spec.classes),
                "input_shape": [1, *map(int, self.images.shape[1:3])], "source": self.source}

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """`normalize` with this dataset's statistics."""
        return normalize(images, self.spec.mean, self.spec.std)

    def subset(self, indices: np.ndarray) -> Dataset:
        return Dataset(self.images[indices], self.labels[indices], self.spec, self.source)

    def sample(self, count: int | None, seed: int = 0) -> Dataset:
        """`count` images drawn at random from `seed`, kept in their order (all of them
        when `count` is None or not smaller than the dataset)."""
        if count is None or count >= len(self):
            return self
        return self.subset(np.sort(np.random.default_rng(seed).permutation(len(self))[:count]))

    def split(self, fraction: float, seed: int = 0) -> tuple[Dataset, Dataset]:
        """(rest, held_out): a random `fraction` held out, e.g. for validation."""
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"split fraction must be in (0, 1), got {fraction}")
        order = np.random.default_rng(seed).permutation(len(self))
        cut = int(round(len(self) * fraction))
        return self.subset(np.sort(order[cut:])), self.subset(np.sort(order[:cut]))


@dataclass
class Loaded:
    train: Dataset | None  # None where only the test split was asked for
    test: Dataset | None  # None where only the training split was asked for
    folders: tuple[str, ...] | None = None  # where the files were read; None: the bundled subset

    def __post_init__(self) -> None:
        # Whole splits can be read again: say how, so that a run trained on one records
        # its data (to resume it, or `xpcnn evaluate` it, as one `xpcnn train` started).
        for name in ("train", "test"):
            part = getattr(self, name)
            if part is not None and part.selection is None:
                setattr(self, name, dataclasses.replace(part, selection=Selection(part.spec.name, self.folders)))

    @property
    def source(self) -> str:
        """One line: where the data came from."""
        return (self.train or self.test).source  # type: ignore[union-attr]

    def splits(self, limit: int | None = None, seed: int = 0, val_split: float = 0.0
               ) -> tuple[Dataset, Dataset | None, Dataset]:
        """(train, validation or None, test) as `xpcnn train` uses them: at most `limit`
        images of each split drawn from `seed`, then `val_split` of the training images
        held out for validation."""
        selection = Selection(self.train.spec.name, self.folders, limit, seed, float(val_split))
        train, test = self.train.sample(limit, seed), self.test.sample(limit, seed + 1)
        val = None
        if val_split:
            train, val = train.split(val_split, seed)
        return tuple(None if part is None else dataclasses.replace(part, selection=selection)
                     for part in (train, val, test))  # type: ignore[return-value]


def _class_indices(labels: np.ndarray, classes: int, name: str) -> np.ndarray:
    """`labels` as int64 indices in [0, classes); TypeError or ValueError naming the first
    label that is not one."""
    if labels.dtype == np.bool_ or not np.issubdtype(labels.dtype, np.integer):
        if np.issubdtype(labels.dtype, np.floating) and labels.size:
            wrong = ~np.isfinite(labels) | (labels != np.round(labels))
            first = int(np.argmax(wrong)) if wrong.any() else None
            detail = f"; label {first} is {labels[first].item()}" if first is not None else ""
        else:
            detail = f"; label 0 is {labels[0].item()!r}" if labels.size else ""
        raise TypeError(f"{name}: labels must be integers (class indices), got {labels.dtype}{detail}")
    outside = (labels < 0) | (labels >= classes)
    if outside.any():
        first = int(np.argmax(outside))
        raise ValueError(f"{name}: labels must be class indices in [0, {classes}); label {first} is {labels[first]}")
    return labels.astype(np.int64)


def bundled_path() -> Path:
    return Path(str(resources.files("xpcnn.datasets") / "data" / BUNDLED_FILE))


def load_bundled() -> Loaded:
    """The stratified MNIST subset shipped with xpcnn, checked against its checksums."""
    path = bundled_path()
    meta = json.loads((path.parent / BUNDLED_CHECKSUMS).read_text())
    content = path.read_bytes()
    actual = hashlib.sha256(content).hexdigest()
    if actual != meta["sha256"]:
        raise ChecksumError(f"{path}: sha256 {actual}, expected {meta['sha256']}; the installation is damaged")
    with np.load(path, allow_pickle=False) as arrays:
        data = {key: arrays[key] for key in ("train_images", "train_labels", "test_images", "test_labels")}
    source = f"bundled MNIST subset ({len(data['train_labels']):,} train / {len(data['test_labels']):,} test images)"
    return Loaded(
        Dataset(data["train_images"], data["train_labels"], MNIST, source),
        Dataset(data["test_images"], data["test_labels"], MNIST, source),
    )


PARTS = {"train": ("train_images", "train_labels"), "test": ("test_images", "test_labels")}


def load_full(spec: DatasetSpec, data_dir: str | Path | None = None, download: bool = True,
              log: Callable[[str], None] = lambda message: None, only: Sequence[Path] | None = None,
              parts: Sequence[str] = ("train", "test")) -> Loaded:
    """The files of `parts` of the full dataset, downloading missing ones into the cache if
    allowed. With `only`, the files are looked for in those folders and nowhere else."""
    dirs = list(only) if only is not None else search_dirs(spec, data_dir)
    keys = [key for part in parts for key in PARTS[part]]
    paths = {key: find_file(spec.files[key], dirs) for key in keys}
    missing = [spec.files[key].name for key, path in paths.items() if path is None]
    if missing and not download:
        raise DataNotFound(f"{spec.name}: {', '.join(missing)} not found in {', '.join(map(str, dirs))}")
    arrays, places = {}, set()
    for key in keys:
        path = paths[key] or download_file(spec.files[key], spec.mirrors, cache_dir() / spec.name, log=log)
        arrays[key] = load_verified(path, spec.files[key])
        places.add(str(path.parent.resolve()))  # absolute: a resumed run may start elsewhere
    source = f"full {spec.name} from {', '.join(sorted(places))}"
    split = {part: Dataset(arrays[f"{part}_images"], arrays[f"{part}_labels"], spec, source) if part in parts else None
             for part in PARTS}
    return Loaded(split["train"], split["test"], tuple(sorted(places)))


def download(name: str = "mnist", data_dir: str | Path | None = None,
             log: Callable[[str], None] = lambda message: None) -> list[tuple[Path, bool]]:
    """Make sure every file of dataset `name` is in `data_dir` (default: the cache) and
    verified, downloading what is missing; returns (path, downloaded) per file."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    spec = DATASETS[name]
    folder = Path(data_dir) if data_dir else cache_dir() / spec.name
    results = []
    for file in spec.files.values():
        path = find_file(file, [folder])
        if path is not None:
            load_verified(path, file)
            results.append((path, False))
        else:
            results.append((download_file(file, spec.mirrors, folder, log=log), True))
    return results


def load_dataset(name: str = "mnist", data_dir: str | Path | None = None, *, download: bool = True,
                 allow_bundled: bool = True, log: Callable[[str], None] | None = None,
                 parts: Sequence[str] = ("train", "test"), prefer: Sequence[str | Path] = ()) -> Loaded:
    """The files of `parts` (train, test): from `data_dir` alone when it is given (a folder
    that is missing or lacks a file is an error naming it); else from the folders in
    `prefer`, $XPCNN_DATA_DIR or the cache, downloading what is missing; else, for MNIST
    with `allow_bundled`, the bundled subset. Notes go to `log`, by default to the logger
    "xpcnn" (Python's logging: the fall back to the subset as a warning, which shows
    without any set-up). A file that is present but fails its checksum is an error, never
    silently replaced by the subset."""
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    warn = log or logging.getLogger("xpcnn").warning
    log = log or logging.getLogger("xpcnn").info
    spec = DATASETS[name]
    if data_dir is not None:
        folder = Path(data_dir)
        if not folder.is_dir():
            what = "is a file, not a folder" if folder.exists() else "does not exist"
            raise DataNotFound(f"data folder {folder} {what}")
        return load_full(spec, download=False, only=[folder, folder / spec.name], parts=parts)
    dirs = [Path(folder) for folder in prefer] + search_dirs(spec)
    if os.environ.get("XPCNN_DATA_DIR") and not Path(os.environ["XPCNN_DATA_DIR"]).is_dir():
        warn(f"note: XPCNN_DATA_DIR={os.environ['XPCNN_DATA_DIR']} is not a folder")
    try:
        return load_full(spec, download=download, log=log, only=dirs, parts=parts)
    except (DataNotFound, DownloadError) as exc:
        if not (allow_bundled and spec is MNIST):
            raise DataNotFound(str(exc)) from None
        loaded = load_bundled()
        why = f"could not be downloaded ({exc})" if download else "was not found and downloading is off"
        warn(f"full MNIST {why}; using the {loaded.source}")
        return loaded
