"""Datasets from where they are kept: the full files when they can be found or
downloaded (MNIST's IDX files, CIFAR's archive), a folder of pictures, else the MNIST
subset that ships inside the package; and the record of which images a run used."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..io.regular import why_missing
from .cifar import find_cifar, incomplete_cifar, read_cifar, verify_archive
from .dataset import Dataset, channel_statistics, check_seed
from .files import ChecksumError, DownloadError, cache_dir, download_file, find_file, load_verified, search_dirs
from .folder import BadFile, load_folder
from .sources import DATASETS, FOLDER_IMAGE_SIDE, MAX_IMAGE_SIDE, MNIST, PICTURES, DataFile, DatasetSpec

BUNDLED_FILE = "mnist-subset.npz"
BUNDLED_CHECKSUMS = "mnist-subset.json"
FOLDER = "images"  # the name of a dataset read from a folder of pictures: load_dataset("images", DIR)
# The options of load_images that a Selection's reader records, in the order _usable_reader reads them.
FOLDER_OPTIONS = ("image_size", "channels", "test_split", "on_bad", "split_seed", "pictures")


class DataNotFound(RuntimeError):
    """The dataset is neither on disk nor downloadable, and has no bundled subset."""


@dataclass(frozen=True)
class Selection:
    """Which images a run uses: the dataset, where its files were read (None: the bundled
    subset), how a folder of pictures was read (`reader`: the options of load_dataset)
    and the digest of what it held, and the limit, seed and validation split that
    `Loaded.splits` applied. Recorded with a run, so that a resumed run reads exactly
    the same images, or is refused."""

    dataset: str
    folders: tuple[str, ...] | None = None
    limit: int | None = None
    seed: int = 0
    val_split: float = 0.0
    reader: dict[str, Any] = field(default_factory=dict)
    digest: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "folders": None if self.folders is None else list(self.folders),
                "limit": self.limit, "seed": self.seed, "val_split": self.val_split, "reader": dict(self.reader),
                "digest": self.digest}

    @classmethod
    def from_dict(cls, data: Any) -> Selection:
        """The inverse of to_dict(); ValueError naming the field that is malformed. "reader"
        and "digest" are absent from runs recorded before folders of pictures."""
        keys = {"dataset", "folders", "limit", "seed", "val_split"}
        if not isinstance(data, dict) or not keys <= set(data) <= keys | {"reader", "digest"}:
            raise ValueError(f"selection: expected dataset, folders, limit, seed, val_split; got {data!r}"[:300])
        data = {"reader": {}, "digest": None, **data}
        folders, limit, seed, split = data["folders"], data["limit"], data["seed"], data["val_split"]
        checks = {
            "dataset": isinstance(data["dataset"], str) and data["dataset"] in (*DATASETS, FOLDER),
            "folders": folders is None or (isinstance(folders, list) and all(isinstance(f, str) and f for f in folders)
                                           and 0 < len(folders) <= (1 if data["dataset"] == FOLDER else 4)),
            "limit": limit is None or (type(limit) is int and limit >= 1),
            "seed": type(seed) is int and seed >= 0,
            "val_split": type(split) in (int, float) and 0.0 <= split < 1.0,
            "reader": _usable_reader(data["reader"], data["dataset"] == FOLDER and folders is not None),
            "digest": data["digest"] is None or (isinstance(data["digest"], str) and len(data["digest"]) == 64),
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"selection.{name}: unusable value {data[name]!r}"[:300])
        return cls(data["dataset"], None if folders is None else tuple(folders), limit, seed, float(split),
                   dict(data["reader"]), data["digest"])

    def load(self) -> tuple[Dataset, Dataset | None, Dataset]:
        """(train, validation or None, test): the same images again. Reads only the
        recorded folders, never downloads and never falls back to other data;
        DataNotFound names the folder when the files are gone or have changed."""
        where = ", ".join(self.folders or ())
        try:
            if self.folders is None:
                loaded = load_bundled()
            elif self.dataset == FOLDER:
                loaded = load_images(self.folders[0], **self.reader)
            else:
                loaded = load_full(DATASETS[self.dataset], download=False, only=[Path(f) for f in self.folders])
        except DataNotFound as exc:
            raise DataNotFound(f"the run's data is gone from {where}: {exc}") from None
        except BadFile as exc:  # the run read its folder without it: the folder changed
            raise DataNotFound(f"the pictures in {where} have changed since the run read "
                               f"them: {exc.path}: {exc.why}; the run reads its folder as it did: remove "
                               "the file") from None
        if self.digest is not None and loaded.digest != self.digest:
            raise DataNotFound(f"the pictures in {where} have changed since the run read "
                               f"them (digest {loaded.digest[:12]}..., the run's {self.digest[:12]}...)")
        return loaded.splits(self.limit, self.seed, self.val_split)


def _usable_reader(reader: Any, folder: bool) -> bool:
    """Whether `reader` holds load_dataset's options for a folder of pictures (and nothing
    for other data)."""
    if not isinstance(reader, dict):
        return False
    if not folder:
        return not reader
    reader = {"pictures": "resize", **reader}  # recorded since folders of digits; photos before
    size, channels, split, bad, seed, pictures = (reader.get(key) for key in FOLDER_OPTIONS)
    return (set(reader) == set(FOLDER_OPTIONS) and type(size) is int and 1 <= size <= MAX_IMAGE_SIDE
            and channels in (1, 3) and type(split) in (int, float) and 0 < split < 1 and bad in ("refuse", "skip")
            and type(seed) is int and seed >= 0 and pictures in PICTURES and (pictures == "resize" or channels == 1))


@dataclass
class Loaded:
    """The splits of one dataset as read, where from, and for a folder of pictures how it
    was read (`reader`) and the digest of what it held (see Selection)."""

    train: Dataset | None  # None where only the test split was asked for
    test: Dataset | None  # None where only the training split was asked for
    folders: tuple[str, ...] | None = None  # where the files were read; None: the bundled subset
    reader: dict[str, Any] = field(default_factory=dict)
    digest: str | None = None

    def __post_init__(self) -> None:
        # Whole splits can be read again: say how, so that a run trained on one records
        # its data (to resume it, or `xpcnn evaluate` it, as one `xpcnn train` started).
        for name in ("train", "test"):
            part = getattr(self, name)
            if part is not None and part.selection is None:
                setattr(self, name, dataclasses.replace(part, selection=self.selection(), part=name))

    @property
    def source(self) -> str:
        """One line: where the data came from."""
        return (self.train or self.test).source  # type: ignore[union-attr]

    def selection(self, limit: int | None = None, seed: int = 0, val_split: float = 0.0) -> Selection:
        """How to read these images again, with `splits`' choices."""
        name = (self.train or self.test).spec.name  # type: ignore[union-attr]
        return Selection(name, self.folders, limit, seed, float(val_split), dict(self.reader), self.digest)

    def splits(self, limit: int | None = None, seed: int = 0, val_split: float = 0.0
               ) -> tuple[Dataset, Dataset | None, Dataset]:
        """(train, validation or None, test) as `xpcnn train` uses them: at most `limit`
        images of each split drawn from `seed`, then `val_split` of the training images
        held out for validation."""
        dataset = (self.train or self.test).spec.name  # type: ignore[union-attr]
        missing = [part for part in ("train", "test") if getattr(self, part) is None]
        if missing:
            raise ValueError(f"splits needs the training and the test split; this {dataset} was read without its "
                             f"{missing[0]} split (load_dataset's parts)")
        if limit is not None:
            limit = _count(limit, "limit")
        seed = check_seed(seed, dataset)
        selection = self.selection(limit, seed, val_split)
        train, test = self.train.sample(limit, seed), self.test.sample(limit, seed + 1)
        val = None
        if val_split:
            train, val = train.split(val_split, seed)
        return tuple(None if part is None else dataclasses.replace(part, selection=selection, part=name)
                     for part, name in ((train, "train"), (val, "val"), (test, "test")))  # type: ignore[return-value]


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what} must be an integer >= 1, got {value!r}")
    return int(value)


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
    if isinstance(parts, str) or not parts or not all(isinstance(part, str) and part in PARTS for part in parts):
        raise ValueError(f"parts must name one or both of {', '.join(PARTS)}, as a list, got {parts!r}"[:200])
    dirs = list(only) if only is not None else search_dirs(spec, data_dir)
    if "archive" in spec.files:
        return _load_archive(spec, dirs, download, log, parts)
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


def _load_archive(spec: DatasetSpec, dirs: Sequence[Path], download: bool, log: Callable[[str], None],
                  parts: Sequence[str]) -> Loaded:
    """A dataset published as one archive (CIFAR): found in the first of `dirs` that holds
    it or its extracted folder, else downloaded into the cache."""
    found = next(((folder, path) for folder in dirs if (path := find_cifar(spec, [folder])) is not None), None)
    if found is None:
        if not download:
            partial = incomplete_cifar(spec, dirs)
            raise DataNotFound(f"{spec.name}: {spec.files['archive'].name} (or its extracted folder) not found in "
                               f"{', '.join(map(str, dirs))}{f'; {partial}' if partial else ''}; "
                               f"`xpcnn download {spec.name}` fetches it, --data-dir names where it is")
        folder = cache_dir() / spec.name
        found = folder, download_file(spec.files["archive"], spec.mirrors, folder, verify=verify_archive, log=log)
    folder, path = found
    arrays = read_cifar(spec, path, parts)
    place = str(Path(folder).resolve())  # absolute: a resumed run may start elsewhere
    split = {part: Dataset(*arrays[part], spec, f"{spec.name} from {path.resolve()}") if part in parts else None
             for part in PARTS}
    return Loaded(split["train"], split["test"], (place,))


def load_images(folder: str | Path, image_size: int = FOLDER_IMAGE_SIDE, channels: int | None = None,
                test_split: float = 0.2, on_bad: str = "refuse", split_seed: int = 0, pictures: str = "resize", *,
                log: Callable[[str], None] | None = None, progress: bool = False) -> Loaded:
    """A folder of pictures as a dataset (see datasets.folder.load_folder: FOLDER/train/
    <class>/... and FOLDER/test/<class>/..., or FOLDER/<class>/... with `test_split` held
    out from `split_seed`), each picture brought to `image_size` pixels square and
    `channels` (default: 3 when any picture has colour, else 1); `pictures="digits"` brings
    each into MNIST's form instead (grey, light ink on black, centred by mass), as `predict`
    reads a digit. The mean and std of each channel are measured on the training split;
    decoded pictures are cached."""
    log = log or logging.getLogger("xpcnn").info
    read = load_folder(folder, image_size, channels, test_split, split_seed, on_bad, log=log, progress=progress,
                       pictures=pictures)
    if read.from_cache:
        log(f"pictures read from the cache (decoded before; {cache_dir() / 'folders'})")
    spec = DatasetSpec(FOLDER, {}, (), *channel_statistics(read.train_images), read.classes, pictures=pictures)
    # Python's numbers, which the run's record (JSON) keeps: load_folder took NumPy's too
    reader = {"image_size": int(image_size), "channels": int(read.train_images.shape[1]),
              "test_split": float(test_split), "on_bad": on_bad, "split_seed": int(split_seed), "pictures": pictures}
    train = Dataset(read.train_images, read.train_labels, spec, read.source)
    test = Dataset(read.test_images, read.test_labels, spec, read.source)
    return Loaded(train, test, (str(Path(folder).resolve()),), reader, read.digest)


def _verifier(file: DataFile) -> Callable[[Path, DataFile], Any]:
    """What checks a downloaded or found file: its archive's digest, or the IDX reader."""
    if file.of == "archive":
        return verify_archive
    return load_verified


def download(name: str = "mnist", data_dir: str | Path | None = None,
             log: Callable[[str], None] = lambda message: None) -> list[tuple[Path, bool]]:
    """Make sure every file of dataset `name` is in `data_dir` (or its subfolder named
    after the dataset, where load_dataset looks too; default: the cache) and verified,
    downloading what is missing into `data_dir`; returns (path, downloaded) per file."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    spec = DATASETS[name]
    folder = Path(data_dir) if data_dir else cache_dir() / spec.name
    places = [folder, folder / spec.name] if data_dir else [folder]
    results = []
    for file in spec.files.values():
        path, verify = find_file(file, places), _verifier(file)
        if path is not None:
            verify(path, file)
            results.append((path, False))
        else:
            results.append((download_file(file, spec.mirrors, folder, verify=verify, log=log), True))
    return results


def load_dataset(name: str = "mnist", data_dir: str | Path | None = None, *, download: bool = True,
                 allow_bundled: bool = True, log: Callable[[str], None] | None = None,
                 parts: Sequence[str] = ("train", "test"), prefer: Sequence[str | Path] = (),
                 **folder_options: Any) -> Loaded:
    """The files of `parts` (train, test) of dataset `name` (DATASETS: mnist,
    fashion-mnist, cifar10, cifar100): from `data_dir` alone when it is given (a folder
    that is missing or lacks a file is an error naming it); else from the folders in
    `prefer`, $XPCNN_DATA_DIR or the cache, downloading what is missing; else, for MNIST
    with `allow_bundled`, the bundled subset. `name` "images" reads the folder of
    pictures `data_dir` (see load_images, which `folder_options` go to). Notes go to
    `log`, by default to the logger "xpcnn" (Python's logging: the fall back to the
    subset as a warning, which shows without any set-up). A file that is present but
    fails its checksum is an error, never silently replaced by the subset."""
    if name == FOLDER:
        if data_dir is None:
            raise ValueError("a folder of pictures (dataset 'images') needs data_dir, the folder")
        return load_images(data_dir, log=log, **folder_options)
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join([*DATASETS, FOLDER])}")
    if folder_options:
        raise TypeError(f"{', '.join(folder_options)}: options of a folder of pictures (dataset 'images'), not of "
                        f"{name}")
    warn = log or logging.getLogger("xpcnn").warning
    log = log or logging.getLogger("xpcnn").info
    spec = DATASETS[name]
    if data_dir is not None:
        folder = Path(data_dir)
        if not folder.is_dir():
            what = "is a file, not a folder" if folder.exists() else why_missing(folder)
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
