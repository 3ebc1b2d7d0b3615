"""A folder of pictures as a labelled image dataset, like torchvision's ImageFolder or
Keras' image_dataset_from_directory: read safely, decoded once, cached.

Layouts: ROOT/train/<class>/... and ROOT/test/<class>/... (both present: used as given,
with the same class folders), else ROOT/<class>/..., split by `stratified_split` (a class
folder named like a split in another case or spelling, Train/ or val/, is refused). Classes
are the sorted folder names; a class folder's pictures (.png, .jpg, .jpeg, .bmp, .gif,
.webp, .tif, .tiff, any case) are found in it and its subfolders, in sorted order. Names
starting with "." and the files the system makes (Thumbs.db, desktop.ini, __MACOSX...) are ignored
silently. Symbolic links are followed; a folder reached twice
(a link loop, or two links to one folder) counts as a bad entry, so a walk always ends.

A bad entry (a file that is not a picture, a picture that cannot be decoded or is over
images.MAX_PIXELS, a FIFO, a loop, a folder beside train/ and test/) is refused in one line
naming it, or with on_bad="skip" skipped and reported. Pictures are decoded by
images.read_photo_rgb in worker threads, each into its own row, so the result does not
depend on the threads. The arrays are cached under files.cache_dir() / "folders", one
entry per folder and settings, keyed by every picture's path, size and modification time
(a changed folder replaces its entry; nothing removes entries: delete the folder to free
the space).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import numbers
import os
import stat
import sys
import time
import zipfile
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io.atomic import atomic_write
from ..io.npyheader import read_npy_header
from ..io.regular import why_missing
from . import images
from .files import cache_dir
from .sources import FOLDER_IMAGE_SIDE, MAX_IMAGE_SIDE, PICTURES, escaped, printable_name

# Names of a split of the data, in any case: such a folder among class folders (Train/ and Test/, training/...)
# would be taken for a class, and the model would learn to tell the splits apart.
SPLIT_NAMES = frozenset({"train", "test", "training", "testing", "val", "valid", "validation"})
# What Windows and macOS write into folders unasked (thumbnail caches, folder settings and icons, the
# resource forks of a zip made on a Mac), in any case: left out as names starting with "." are, never refused.
SYSTEM_NAMES = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini", "icon\r", "__macosx"})
# JPEG's four names as Pillow registers them (Windows saves web pictures as .jfif).
EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
CACHE_FORMAT = 3  # raise it when what is cached, or how pictures are decoded, changes
MAX_THREADS = 8  # decoding small pictures is bound by Python's own work beyond a few threads
CHUNK = 64  # pictures per task: rare enough hand-overs, fine enough progress
MEMORY_SHARE = 0.5  # of the available memory: splitting copies the decoded pictures once
PROGRESS_EVERY = 5.0  # seconds between progress lines when tqdm is missing
SKIPPED_SHOWN = 3  # skipped files named in the summary line
SKIP_HINT = "(on_bad='skip', the command's --skip-bad-images, skips such files)"
# What a damaged cache entry raises from zipfile, zlib and NumPy's .npy reader.
CACHE_ERRORS = (OSError, ValueError, EOFError, KeyError, SyntaxError, RuntimeError, NotImplementedError,
                zipfile.BadZipFile, zlib.error)
# The arrays of a cache entry: dtype (a kind for strings) and number of dimensions.
CACHED = {"key": ("U", 0), "digest": ("U", 0), "classes": ("U", 1), "skipped_paths": ("U", 1),
          "skipped_reasons": ("U", 1), "train_images": (np.dtype(np.uint8), 4),
          "train_labels": (np.dtype(np.int64), 1), "test_images": (np.dtype(np.uint8), 4),
          "test_labels": (np.dtype(np.int64), 1)}


class FolderError(ValueError):
    """A folder cannot be read as a dataset; one line naming the folder or file and why."""


class BadFile(FolderError):
    """A file in a folder read with on_bad="refuse" is no picture that can be read: `path`
    and `why`."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(f"{path}: {why} {SKIP_HINT}")
        self.path, self.why = path, why


@dataclass(frozen=True, eq=False)
class FolderData:
    """A folder's pictures: uint8 images (N, C, S, S), int64 labels (N,) indexing
    `classes`, a one-line `source`, the sha256 `digest` of the decoded content (images,
    labels and class names of both splits), the (path, reason) of each skipped file, and
    whether the arrays came from the cache."""

    train_images: np.ndarray = field(repr=False)
    train_labels: np.ndarray = field(repr=False)
    test_images: np.ndarray = field(repr=False)
    test_labels: np.ndarray = field(repr=False)
    classes: tuple[str, ...]
    source: str
    digest: str
    files_skipped: list[tuple[str, str]]
    from_cache: bool


@dataclass
class _Found:
    """What a walk of the folder found: pictures in file order with their class, part
    ("train", "test", or "" to be split) and (size, mtime_ns); bad entries; the class
    folders by (part, class)."""

    classes: tuple[str, ...] = ()
    paths: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)
    stats: list[tuple[int, int]] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)
    folders: dict[tuple[str, int], str] = field(default_factory=dict)


def load_folder(root: str | os.PathLike, image_size: int = FOLDER_IMAGE_SIDE, channels: int | None = None,
                test_split: float = 0.2, seed: int = 0, on_bad: str = "refuse", cache: bool = True,
                log: Callable[[str], None] | None = None, progress: bool = True,
                max_bytes: int | None = None, pictures: str = "resize") -> FolderData:
    """The pictures under `root` as a dataset of uint8 (N, C, image_size, image_size).

    channels: 1 or 3; None: 3 if any picture has colour, else 1 (images.read_photo says
    how a picture is fitted and made grey). pictures: "resize", photos fitted so; "digits",
    each brought into MNIST's form as images.read_image does (grey, light ink on black,
    centred by mass; channels 1 or None). test_split, seed: for ROOT/<class>/ only, see
    stratified_split (0 is refused: evaluating needs a test set; it must be in (0, 1]
    for either layout, 1 testing on every picture). on_bad: "refuse" or "skip" (see the module's docstring).
    max_bytes: the most the decoded pictures may take, N * C * image_size**2 (C = 3
    while channels is None), checked before decoding; None: half (MEMORY_SHARE) of the memory available
    now (available_memory: the split copies them once). cache: read and write the cache.
    Notes (skipped files, a damaged cache entry) go to `log`, by default the logger
    "xpcnn"; progress: a bar on stderr while decoding (tqdm, else a line every 5 s).
    Errors: FolderError in one line; ImportError without Pillow."""
    _check_arguments(image_size, channels, test_split, seed, on_bad, max_bytes, pictures)
    image_size, channels, test_split, seed = int(image_size), channels and int(channels), float(test_split), int(seed)
    channels = 1 if pictures == "digits" else channels
    note = log or logging.getLogger("xpcnn").info
    warn = log or logging.getLogger("xpcnn").warning
    pillow, folder = images.pillow_version(), _root_folder(root)
    settings = [folder, image_size, channels, test_split, seed, on_bad, pictures]
    found = _find(folder, on_bad)
    _check_memory(folder, len(found.paths), channels or 3, image_size, max_bytes)
    entry = cache_dir() / "folders" / f"{_sha256(json.dumps(settings))[:40]}.npz"  # one per folder and settings
    key = _content_key([CACHE_FORMAT, pillow, *settings], found)
    describe = _describer(folder, found, test_split, seed, pictures)
    if cache and entry.is_file():
        cached = _read_cache(entry, key, channels, image_size, describe, warn)
        if cached is not None:
            _refuse_or_report(cached.files_skipped, on_bad, folder, warn)  # said again: they are still there
            return cached
    decoded, colour, failed = _decode(found.paths, _reader(pictures, image_size, channels or 3),
                                      (channels or 3, image_size, image_size), on_bad == "refuse", progress, note)
    bad = found.bad + [(found.paths[index], reason) for index, reason in failed]
    _refuse_or_report(bad, on_bad, folder, warn)
    kept = np.delete(np.arange(len(found.paths)), [index for index, _ in failed])
    labels, parts = np.asarray(found.labels, np.int64)[kept], np.asarray(found.parts)[kept]
    _check_classes(found, labels, parts, bad)
    if channels is None and not colour[kept].any():
        decoded = decoded[:, :1]  # grey pictures: three equal channels, whose luma is their value
    train, test = _split(labels, parts, test_split, seed, folder)
    data = _folder_data(decoded[kept[train]], labels[train], decoded[kept[test]], labels[test], found.classes, bad,
                        describe, from_cache=False)
    if cache:
        _write_cache(entry, key, data, warn)
    return data


def _check_arguments(image_size: Any, channels: Any, test_split: Any, seed: Any, on_bad: Any,
                     max_bytes: Any, pictures: Any) -> None:
    """One line naming the first argument of load_folder that is not usable."""
    def integer(value: Any) -> bool:
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

    if not integer(image_size) or not 1 <= image_size <= MAX_IMAGE_SIDE:
        raise ValueError(f"image_size must be an integer in [1, {MAX_IMAGE_SIDE}], got {image_size!r}")
    if channels is not None and (not integer(channels) or channels not in (1, 3)):
        raise ValueError(f"channels must be 1, 3 or None, got {channels!r}")
    if isinstance(test_split, bool) or not isinstance(test_split, numbers.Real) or not 0 < test_split <= 1:
        raise ValueError(f"test_split must be a fraction in (0, 1] (evaluating needs a test set; 1: every picture, "
                         f"a folder to score a model on); got {test_split!r}")
    if not integer(seed) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if on_bad not in ("refuse", "skip"):
        raise ValueError(f"on_bad must be 'refuse' or 'skip', got {on_bad!r}")
    if max_bytes is not None and (not integer(max_bytes) or max_bytes < 1):
        raise ValueError(f"max_bytes must be an integer >= 1 or None, got {max_bytes!r}")
    if pictures not in PICTURES:
        raise ValueError(f"pictures must be one of {', '.join(map(repr, PICTURES))}, got {pictures!r}")
    if pictures == "digits" and channels not in (None, 1):
        raise ValueError(f"pictures of digits are grey: channels must be 1 or None, got {channels!r}")


def _root_folder(root: Any) -> str:
    """`root` as an absolute path, if it is a folder."""
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a folder path, got {type(root).__name__}")
    folder = os.path.abspath(os.fspath(root))
    if not os.path.isdir(folder):
        what = "is not a folder" if os.path.exists(folder) else why_missing(folder)
        raise FolderError(f"{folder}: {what}; expected a folder of class folders of pictures")
    return folder


def _listing(folder: str, bad: list[tuple[str, str]]) -> list[os.DirEntry]:
    """The entries of `folder`, but those starting with "." and SYSTEM_NAMES, sorted by name."""
    try:
        with os.scandir(folder) as entries:
            kept = (entry for entry in entries if not entry.name.startswith(".")
                    and entry.name.casefold() not in SYSTEM_NAMES)
            return sorted(kept, key=lambda e: e.name)
    except OSError as exc:
        bad.append((folder, f"cannot list the folder: {exc.strerror or exc}"))
        return []


def _kind(entry: os.DirEntry, seen: set[tuple[int, int]], bad: list[tuple[str, str]]) -> str:
    """"folder", "file" (regular) or "" (bad, and added to `bad`), links followed. A
    folder is remembered by its device and inode: one reached again is bad."""
    try:
        info = entry.stat()
    except OSError as exc:
        why = exc.strerror or exc  # e.g. a link to itself: "Too many levels of symbolic links"
        bad.append((entry.path, f"a broken link ({why})" if entry.is_symlink() else f"cannot read: {why}"))
        return ""
    if stat.S_ISDIR(info.st_mode):
        if (info.st_dev, info.st_ino) in seen:
            bad.append((entry.path, "a folder reached twice (a link loop, or a second link to one folder)"))
            return ""
        seen.add((info.st_dev, info.st_ino))
        return "folder"
    if stat.S_ISREG(info.st_mode):
        return "file"
    bad.append((entry.path, "not a regular file (a FIFO, socket or device)"))
    return ""


def _walk(folder: str, seen: set[tuple[int, int]], bad: list[tuple[str, str]]) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of every picture under `folder`, depth first in sorted
    order, without recursion (a deep tree cannot exhaust the stack)."""
    found, stack = [], [iter(_listing(folder, bad))]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        kind = _kind(entry, seen, bad)
        if kind == "folder":
            stack.append(iter(_listing(entry.path, bad)))
        elif kind == "file" and os.path.splitext(entry.name)[1].lower() not in EXTENSIONS:
            bad.append((entry.path, f"not a picture: expected {', '.join(sorted(EXTENSIONS))}"))
        elif kind == "file":
            info = entry.stat()
            found.append((entry.path, info.st_size, info.st_mtime_ns))
    return found


def _class_folders(folder: str, seen: set[tuple[int, int]], bad: list[tuple[str, str]]) -> dict[str, str]:
    """{name: path} of the folders in `folder`; a file there is bad."""
    folders = {}
    for entry in _listing(folder, bad):
        kind = _kind(entry, seen, bad)
        if kind == "folder":
            folders[entry.name] = entry.path
        elif kind == "file":
            bad.append((entry.path, "not inside a class folder"))
    return folders


def _find(folder: str, on_bad: str) -> _Found:
    """Walk the folder in either layout; FolderError for a layout that is not one."""
    found, info = _Found(), os.stat(folder)
    seen = {(info.st_dev, info.st_ino)}
    top = _class_folders(folder, seen, found.bad)
    if "train" in top and "test" in top:
        for name, path in top.items():
            if name not in ("train", "test"):
                found.bad.append((path, "a folder beside train/ and test/"))
        layout = {part: _class_folders(top[part], seen, found.bad) for part in ("train", "test")}
        if set(layout["train"]) != set(layout["test"]):
            only_train = sorted(set(layout["train"]) - set(layout["test"]))
            only_test = sorted(set(layout["test"]) - set(layout["train"]))
            raise FolderError(f"{folder}: train/ and test/ must hold the same class folders; only in train/: "
                              f"{', '.join(only_train) or '-'}; only in test/: {', '.join(only_test) or '-'}")
    elif "train" in top or "test" in top:  # half of the split layout: never a class named "train"
        given, missing = ("train", "test") if "train" in top else ("test", "train")
        raise FolderError(f"{folder}: holds {given}/ but no {missing}/: give both ({folder}/train/<class>/ and "
                          f"{folder}/test/<class>/), or class folders alone")
    else:
        _refuse_split_names(folder, top)
        layout = {"": top}
    found.classes = tuple(sorted(layout.get("train", top)))
    unprintable = next((name for name in found.classes if not printable_name(name)), None)
    if unprintable is not None:  # a control character in a name the commands print would forge their output
        raise FolderError(f"{os.path.join(folder, unprintable)!r}: a class folder's name is its class's name, which "
                          "is printed: it must be printable (rename the folder)")
    if len(found.classes) < 2:
        where = os.path.join(folder, "train") if "train" in layout else folder
        raise FolderError(f"{where}: {len(found.classes)} class folder(s) ({', '.join(found.classes) or 'none'}); "
                          "a dataset needs at least 2: ROOT/<class>/<pictures>, or ROOT/train/<class>/ and "
                          "ROOT/test/<class>/")
    for part, folders in layout.items():
        for label, name in enumerate(found.classes):
            found.folders[part, label] = folders[name]
            for path, size, mtime in _walk(folders[name], seen, found.bad):
                found.paths.append(path)
                found.labels.append(label)
                found.parts.append(part)
                found.stats.append((size, mtime))
    if on_bad == "refuse" and found.bad:
        raise BadFile(*found.bad[0])
    _check_classes(found, np.asarray(found.labels, np.int64), np.asarray(found.parts), found.bad)
    return found


def _refuse_split_names(folder: str, top: dict[str, str]) -> None:
    """FolderError naming a class folder that is named like a split of the data."""
    split = next((name for name in top if name.casefold() in SPLIT_NAMES), None)
    if split is not None:
        raise FolderError(f"{top[split]}: named like a split of the data, taken for a class it would teach the model "
                          f"to tell the splits apart; give {folder}/train/<class>/ and {folder}/test/<class>/ (lower "
                          "case, both), or class folders alone")


def _check_classes(found: _Found, labels: np.ndarray, parts: np.ndarray, bad: list[tuple[str, str]]) -> None:
    """FolderError naming the first class folder left without a picture."""
    present = set(zip(parts.tolist(), labels.tolist()))
    for (part, label), path in found.folders.items():
        if (part, label) not in present:
            skipped = sum(name.startswith(path + os.sep) for name, _ in bad)
            why = f" ({skipped} file(s) skipped)" if skipped else ""
            raise FolderError(f"{path}: a class folder without pictures{why}; every class needs at least one")


def available_memory() -> int | None:
    """Bytes of memory available now: /proc/meminfo's MemAvailable (or free physical
    pages from os.sysconf), capped by a cgroup v2 limit less its use; None if unknown."""
    available = None
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            return None
    try:  # a container's limit, which MemAvailable does not see
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            available = min(available, max(int(limit) - used, 0))
    except (OSError, ValueError):
        pass
    return available


def _check_memory(folder: str, count: int, channels: int, size: int, max_bytes: int | None) -> None:
    """FolderError before decoding when the pictures would take more than `max_bytes`."""
    limit, why = max_bytes, "max_bytes"
    if limit is None:
        available = available_memory()
        if available is None:
            return
        limit, why = int(available * MEMORY_SHARE), f"{MEMORY_SHARE:.0%} of the {available:,} bytes available now"
    need = count * channels * size * size
    if need > limit:
        fits = math.isqrt(limit // max(count * channels, 1))
        hint = f"image_size={fits} would fit" if fits >= 1 else "fewer pictures would fit"
        raise FolderError(f"{folder}: {count:,} pictures of {channels}x{size}x{size} need {need:,} bytes, over the "
                          f"limit of {limit:,} ({why}); a smaller image_size needs less: {hint}")


def stratified_split(labels: np.ndarray, test_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices) into `labels`, each sorted. Each class is split by its
    own permutation, seeded by (seed, label), so adding pictures to one class leaves the
    others' splits as they were: round(n * test_split) of a class of n pictures go to the
    test set, at least 1 when n >= 2, at most n - 1 (a class of one picture stays in train);
    with `test_split` 1, every picture (a folder to score a model on, never to train)."""
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    values, starts = np.unique(labels[order], return_index=True)
    train, test = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for label, members in zip(values, np.split(order, starts[1:])):
        count = len(members)
        tests = 0 if count < 2 else min(count - 1, max(1, math.floor(count * test_split + 0.5)))
        tests = count if test_split >= 1 else tests
        shuffled = members[np.random.default_rng([seed, int(label)]).permutation(count)]
        test.append(shuffled[:tests]), train.append(shuffled[tests:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _split(labels: np.ndarray, parts: np.ndarray, test_split: float, seed: int,
           folder: str) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices: the given parts, else the stratified split."""
    if np.any(parts != ""):
        return np.flatnonzero(parts == "train"), np.flatnonzero(parts == "test")
    train, test = stratified_split(labels, test_split, seed)
    if len(test) == 0:
        raise FolderError(f"{folder}: every class holds one picture; a test set needs classes of at least 2")
    return train, test


class _Progress:
    """Pictures decoded so far, on stderr: a tqdm bar, else a log line every few seconds."""

    def __init__(self, total: int, enabled: bool, log: Callable[[str], None]) -> None:
        self.total, self.done, self.enabled, self.log = total, 0, enabled, log
        self.bar, self.last = None, time.monotonic()
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, unit=" pictures", desc="decoding", file=sys.stderr, leave=False)

    def update(self, count: int) -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(count)
        elif self.enabled and time.monotonic() - self.last >= PROGRESS_EVERY:
            self.last = time.monotonic()
            self.log(f"decoding pictures: {self.done:,} of {self.total:,}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


Reader = Callable[[str], tuple[np.ndarray, bool]]  # a picture's path -> (uint8 (C, H, W), whether it has colour)


def _reader(pictures: str, size: int, channels: int) -> Reader:
    """How load_folder reads each picture: a photo fitted to `size` (images.read_photo_rgb)
    in `channels`, or a digit in MNIST's form (images.read_image), `size` square."""
    def photo(path: str) -> tuple[np.ndarray, bool]:
        rgb, colour = images.read_photo_rgb(path, size)
        return images.photo_channels(rgb, channels), colour

    def digit(path: str) -> tuple[np.ndarray, bool]:
        return images.read_image(path, None, (size, size))[None], False

    return digit if pictures == "digits" else photo


def _decode(paths: list[str], read: Reader, shape: tuple[int, int, int], refuse: bool, progress: bool,
            log: Callable[[str], None]) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """(pictures uint8 (N, *shape) in file order as `read` reads them, whether each has
    colour, (index, reason) of each that could not be decoded, in order) with a pool of threads
    (Pillow decodes without holding the GIL). Refusing, decoding stops after the first bad one."""
    decoded = np.zeros((len(paths), *shape), np.uint8)
    colour = np.zeros(len(paths), bool)
    first_bad = [len(paths)]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    bar = _Progress(len(paths), progress, log)
    pool = ThreadPoolExecutor(max(1, min(MAX_THREADS, cores)))
    try:
        tasks = {pool.submit(_decode_chunk, paths, start, read, decoded, colour, first_bad if refuse else None):
                 min(CHUNK, len(paths) - start) for start in range(0, len(paths), CHUNK)}
        for task in as_completed(tasks):
            bar.update(tasks[task])
        failed = sorted(failure for task in tasks for failure in task.result())
    finally:
        pool.shutdown(cancel_futures=True)  # on Ctrl-C: the chunks not yet started never start
        bar.close()
    return decoded, colour, failed


def _decode_chunk(paths: list[str], start: int, read: Reader, decoded: np.ndarray, colour: np.ndarray,
                  first_bad: list[int] | None) -> list[tuple[int, str]]:
    """Decode paths[start:start + CHUNK] into their rows; (index, reason) of failures."""
    failed = []
    for index in range(start, min(start + CHUNK, len(paths))):
        if first_bad is not None and index > first_bad[0]:
            break  # an earlier picture is refused already: the rest need no decoding
        try:
            decoded[index], colour[index] = read(paths[index])
        except images.ImageError as exc:
            failed.append((index, str(exc).removeprefix(f"{paths[index]}: ")))
            if first_bad is not None:
                first_bad[0] = min(first_bad[0], index)
    return failed


def _refuse_or_report(bad: list[tuple[str, str]], on_bad: str, folder: str, warn: Callable[[str], None]) -> None:
    """Refusing: FolderError naming the first bad entry. Skipping: one summary line."""
    if bad and on_bad == "refuse":
        raise BadFile(*bad[0])
    if bad:
        named = "; ".join(f"{os.path.relpath(path, folder)} ({reason})" for path, reason in bad[:SKIPPED_SHOWN])
        more = f"; and {len(bad) - SKIPPED_SHOWN} more" if len(bad) > SKIPPED_SHOWN else ""
        warn(escaped(f"{folder}: skipped {len(bad)} file(s) that are not usable pictures: {named}{more}"))


def _describer(folder: str, found: _Found, test_split: float, seed: int,
               pictures: str) -> Callable[[np.ndarray, int, int], str]:
    """A function of (train images, test count, skipped count) giving the one-line source,
    which says "digits" where the pictures were read as digits (they are grey either way)."""
    how = "train/ and test/ as given" if any(found.parts) else f"test_split {test_split}, seed {seed}"

    def describe(train_images: np.ndarray, tests: int, skipped: int) -> str:
        count, (colours, size) = len(train_images) + tests, train_images.shape[1:3]
        kind = "RGB" if colours == 3 else "grey digits" if pictures == "digits" else "grey"
        note = f", {skipped} file(s) skipped" if skipped else ""
        return (f"folder {folder}: {count:,} pictures of {len(found.classes)} classes, {size}x{size} {kind} "
                f"({len(train_images):,} train, {tests:,} test: {how}){note}")

    return describe


def _folder_data(train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
                 test_labels: np.ndarray, classes: tuple[str, ...], skipped: list[tuple[str, str]],
                 describe: Callable[[np.ndarray, int, int], str], from_cache: bool) -> FolderData:
    digest = _digest(train_images, train_labels, test_images, test_labels, classes)
    return FolderData(train_images, train_labels, test_images, test_labels, classes,
                      describe(train_images, len(test_images), len(skipped)), digest, skipped, from_cache)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def _digest(train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
            test_labels: np.ndarray, classes: tuple[str, ...]) -> str:
    """sha256 of the class names, the shapes, the pixels and the labels of both splits."""
    shapes = {"classes": list(classes), "train": list(train_images.shape), "test": list(test_images.shape)}
    digest = hashlib.sha256(json.dumps(shapes).encode("utf-8", "surrogateescape"))
    for array in (train_images, train_labels.astype("<i8"), test_images, test_labels.astype("<i8")):
        digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def _content_key(settings: list[Any], found: _Found) -> str:
    """What the cached arrays depend on: the settings, the bad entries, and each picture's
    path, size and modification time (read by the walk: no file is opened)."""
    lines = [json.dumps([settings, found.bad])]
    lines += [f"{path}\0{size}\0{mtime}" for path, (size, mtime) in zip(found.paths, found.stats)]
    return _sha256("\n".join(lines))


def _write_cache(entry: Path, key: str, data: FolderData, warn: Callable[[str], None]) -> None:
    """Store `data` as an .npz at `entry`, atomically; a failure is only a note."""
    skipped = data.files_skipped
    arrays = {"key": np.array(key), "digest": np.array(data.digest), "classes": np.array(data.classes),
              "skipped_paths": np.array([path for path, _ in skipped], dtype=str),
              "skipped_reasons": np.array([reason for _, reason in skipped], dtype=str),
              "train_images": data.train_images, "train_labels": data.train_labels,
              "test_images": data.test_images, "test_labels": data.test_labels}
    try:
        atomic_write(entry, lambda handle: np.savez(handle, **arrays))
    except (OSError, UnicodeError) as exc:  # a read-only cache, a full disk, unencodable names
        warn(f"could not cache the decoded folder in {entry}: {exc}")


def _read_cache(entry: Path, key: str, channels: int | None, size: int,
                describe: Callable[[np.ndarray, int, int], str], warn: Callable[[str], None]) -> FolderData | None:
    """The cached FolderData if `entry` holds one for `key`, checked member by member and
    against its digest; None (and a note if it is damaged) otherwise."""
    try:
        with zipfile.ZipFile(entry) as archive:
            limit = entry.stat().st_size  # a stored member can hold no more than the file
            if sorted(archive.namelist()) != sorted(f"{name}.npy" for name in CACHED):
                raise ValueError(f"members {sorted(archive.namelist())[:12]}")
            if str(_cached_array(archive, "key", limit)) != key:
                return None  # the folder changed since: decode it again
            arrays = {name: _cached_array(archive, name, limit) for name in CACHED}
        data = _checked_cache(arrays, channels, size, describe)
    except CACHE_ERRORS as exc:
        warn(f"the cache entry {entry} is damaged ({type(exc).__name__}: {exc}); decoding the folder again"[:400])
        return None
    return data


def _cached_array(archive: zipfile.ZipFile, name: str, limit: int) -> np.ndarray:
    """One member, its header checked against CACHED and `limit` before it is read."""
    expected, dimensions = CACHED[name]
    with archive.open(f"{name}.npy") as handle:
        shape, dtype = read_npy_header(handle)
    right = dtype.kind == "U" if isinstance(expected, str) else dtype == expected
    if not right or len(shape) != dimensions or math.prod(shape) * dtype.itemsize > limit:
        raise ValueError(f"{name}: {dtype} of shape {shape}")
    with archive.open(f"{name}.npy") as handle:
        return np.lib.format.read_array(handle, allow_pickle=False)


def _checked_cache(arrays: dict[str, np.ndarray], channels: int | None, size: int,
                   describe: Callable[[np.ndarray, int, int], str]) -> FolderData:
    """FolderData of the cached arrays, if they are consistent; ValueError otherwise."""
    classes = tuple(str(name) for name in arrays["classes"])
    train, test = arrays["train_images"], arrays["test_images"]
    shape = (channels or train.shape[1], size, size)
    if train.shape[1:] != shape or test.shape[1:] != shape or shape[0] not in (1, 3) or len(classes) < 2:
        raise ValueError(f"images of shape {train.shape[1:]} and {test.shape[1:]}, {len(classes)} classes")
    for images_, labels in ((train, arrays["train_labels"]), (test, arrays["test_labels"])):
        if len(labels) != len(images_) or (len(labels) and not 0 <= labels.min() <= labels.max() < len(classes)):
            raise ValueError(f"{len(labels)} labels for {len(images_)} images of {len(classes)} classes")
    if len(arrays["skipped_paths"]) != len(arrays["skipped_reasons"]):
        raise ValueError("skipped paths and reasons differ in number")
    skipped = [(str(path), str(reason)) for path, reason in zip(arrays["skipped_paths"], arrays["skipped_reasons"])]
    data = _folder_data(train, arrays["train_labels"], test, arrays["test_labels"], classes, skipped, describe,
                        from_cache=True)
    if data.digest != str(arrays["digest"]):
        raise ValueError("the arrays do not match their digest")
    return data
