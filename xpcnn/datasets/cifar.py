"""CIFAR-10 and CIFAR-100 in their binary versions: fixed-size records, never pickle.

A record is its label bytes (CIFAR-100: the coarse label, then the fine one, which is the
one used) and 3072 pixel bytes: the red, green and blue planes of a 32x32 image, each row
by row. Each .bin file holds an exact number of records.

The published .tar.gz is checked against its published size and MD5 before it is parsed,
then read as a stream: only allow-listed members are read (regular files of the exact
size, each listed once), nothing is written to disk, and the member count and the
decompressed bytes are bounded, so a hostile archive cannot make it read more than the
real one holds. An extracted folder's .bin files are checked against MD5 sums of a third
party, the authors publishing only the archive's. In a folder, a symlink is followed (the
system refuses loops); what it leads to must be a regular file, whose bytes are then
checked like any other.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..io.regular import open_regular
from .files import ChecksumError
from .sources import DataFile, DatasetSpec

PIXELS = 3 * 32 * 32
MAX_MEMBERS = 256  # the published archives hold 9 (CIFAR-10) and 5 (CIFAR-100)
OTHER_BYTES = 1 << 22  # tar headers, readme and class names: a few KiB in the published archives
NAMES_BYTES = 1 << 16  # a file of at most 100 short class names
ARCHIVE_SLACK = 1 << 20  # GZIP_SLACK's 1 MiB: the archives' byte counts are others' records, their MD5 the authors'


class CIFARError(ValueError):
    """A CIFAR file or archive is not in the published form; the message names the file
    (and the member) and what was expected."""


@dataclass(frozen=True)
class CIFARLayout:
    """What a CIFAR dataset's binary version holds: the archive's top folder, the .bin
    files of each part, the records in each, the label bytes before each record's pixels
    (what each is and how many values it takes; the last is the label used), the file of
    class names, one per line, the MD5 of each .bin file as extracted, and the archives and
    folders of the dataset's other versions, which are not read, by what they are."""

    folder: str
    parts: dict[str, tuple[str, ...]]
    records: dict[str, int]
    labels: tuple[tuple[str, int], ...]
    names_file: str
    digests: dict[str, str]
    other_versions: dict[str, str]

    @property
    def record_size(self) -> int:
        return len(self.labels) + PIXELS

    def size(self, name: str) -> int:
        """The exact bytes of the .bin file `name`."""
        return self.records[name] * self.record_size


# What the versions that xpcnn does not read are (torchvision and Keras download the Python one).
PYTHON = "Python version (pickles, which xpcnn does not read: unpickling can run any code)"
MATLAB = "MATLAB version"
CIFAR10_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
# The MD5 sums of the extracted .bin files are not the authors' (they publish only the
# archives' MD5, in sources.py): they come from the Go project "dldataset". A folder that
# does not match them is answered with the archive, which the published sum verifies.
LAYOUTS = {
    "cifar10": CIFARLayout(
        folder="cifar-10-batches-bin",
        parts={"train": CIFAR10_TRAIN, "test": ("test_batch.bin",)},
        records={name: 10000 for name in (*CIFAR10_TRAIN, "test_batch.bin")},
        labels=(("label", 10),),
        names_file="batches.meta.txt",
        digests={
            "data_batch_1.bin": "5dd7e06a14cb22eb9f671a540d1b7c25",
            "data_batch_2.bin": "5ea93a67294ea407fff1d09f752e9692",
            "data_batch_3.bin": "942cd6a4bcdd0dd3c604fbe906cb4421",
            "data_batch_4.bin": "ae636b3ba5c66a11e91e8cb52e771fcb",
            "data_batch_5.bin": "53f37980c15c3d472c316c40844f3f0d",
            "test_batch.bin": "803d5f7f4d78ea53de84dbe85f74fb6d",
        },
        other_versions={"cifar-10-python.tar.gz": PYTHON, "cifar-10-batches-py": PYTHON,
                        "cifar-10-matlab.tar.gz": MATLAB, "cifar-10-batches-mat": MATLAB},
    ),
    "cifar100": CIFARLayout(
        folder="cifar-100-binary",
        parts={"train": ("train.bin",), "test": ("test.bin",)},
        records={"train.bin": 50000, "test.bin": 10000},
        labels=(("coarse label", 20), ("fine label", 100)),
        names_file="fine_label_names.txt",
        digests={"train.bin": "6172c7755cfe09b2fe270c85cebc1b15", "test.bin": "4499cfba6c016c1be1438163640a0898"},
        other_versions={"cifar-100-python.tar.gz": PYTHON, "cifar-100-python": PYTHON,
                        "cifar-100-matlab.tar.gz": MATLAB},
    ),
}


def _layout(spec: DatasetSpec) -> CIFARLayout:
    if spec.name not in LAYOUTS:
        raise CIFARError(f"{spec.name} is not a CIFAR dataset (those are {', '.join(LAYOUTS)})")
    return LAYOUTS[spec.name]


def read_cifar(
    spec: DatasetSpec,
    path: str | Path,
    parts: Sequence[str] = ("train", "test"),
    *,
    layout: CIFARLayout | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each of `parts` as (images uint8 (N, 3, 32, 32), labels int64 (N,)), read from
    `path`: the published archive, checked against spec.files["archive"] first, or an
    extracted folder (the one holding the .bin files, or the one holding that). `layout`
    (default LAYOUTS[spec.name]) says what the files hold. ChecksumError where a checksum
    or the archive's size differs, CIFARError where the content is not in CIFAR's form."""
    layout = layout or _layout(spec)
    unknown = [part for part in parts if part not in layout.parts]
    if unknown:
        raise CIFARError(f"{spec.name} has no part {unknown[0]!r} (it has {', '.join(layout.parts)})")
    wanted = [name for part in parts for name in layout.parts[part]]
    path = Path(path)
    if path.is_dir():
        arrays = _read_folder(spec, layout, _bin_folder(layout, path), wanted)
    else:
        arrays = _read_archive(spec, layout, path, wanted)
    result = {}
    for part in parts:
        files = [arrays[name] for name in layout.parts[part]]
        result[part] = files[0] if len(files) == 1 else tuple(map(np.concatenate, zip(*files)))
    return result


def find_cifar(spec: DatasetSpec, dirs: Sequence[Path]) -> Path | None:
    """The first CIFAR copy in `dirs` (not yet verified), looking in each folder for the
    archive, then for an extracted folder holding every .bin file: the archive's top
    folder inside it, or the folder itself. Returns the archive or the .bin files' folder."""
    layout = _layout(spec)
    for folder in map(Path, dirs):
        archive = folder / spec.files["archive"].name
        if archive.exists() and not archive.is_dir():  # not a regular file: refused by name when read
            return archive
        for candidate in (folder / layout.folder, folder):
            if not _missing_bins(layout, candidate):
                return candidate
    return None


def incomplete_cifar(spec: DatasetSpec, dirs: Sequence[Path]) -> str | None:
    """One line naming the first extracted folder in `dirs` that lacks some .bin files, or
    else the first copy of another version of the dataset, or None: why find_cifar passed
    over what looks like CIFAR."""
    layout = _layout(spec)
    for folder in map(Path, dirs):
        candidate = folder if folder.name == layout.folder else folder / layout.folder
        missing = _missing_bins(layout, candidate)
        if candidate.is_dir() and missing:
            return f"{candidate} lacks {len(missing)} of {spec.name}'s .bin files ({', '.join(missing)})"
    for folder in map(Path, dirs):
        for name, version in layout.other_versions.items():
            other = folder if folder.name == name else folder / name
            if other.exists():
                binary = spec.files["archive"].name
                return f"{other} is {spec.name}'s {version}; xpcnn reads the binary version, {binary}"
    return None


def _missing_bins(layout: CIFARLayout, folder: Path) -> list[str]:
    """The .bin files of `layout` that are not in `folder` (whatever is there under the name
    is read, or refused, by name)."""
    return [name for files in layout.parts.values() for name in files if not os.path.lexists(folder / name)]


def verify_archive(path: str | Path, file: DataFile) -> None:
    """Refuse `path` unless its size and digest are those `file` publishes: ChecksumError
    if they differ, CIFARError if it cannot be read."""
    path = Path(path)
    try:
        with open_regular(path, CIFARError) as handle:
            _verify(handle, path, file)
    except OSError as exc:
        raise CIFARError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def _verify(handle: BinaryIO, path: Path, file: DataFile) -> None:
    """Check the digest of the open archive `handle`, reading at most ARCHIVE_SLACK bytes
    more than its expected size: the digest is the authority (the authors publish it;
    the byte count only as others record it), the size the bound and the first thing a
    mismatch names."""
    limit = file.size + ARCHIVE_SLACK
    digest, remaining = file.hash(), limit + 1
    while remaining and (chunk := handle.read(min(1 << 20, remaining))):
        digest.update(chunk)
        remaining -= len(chunk)
    size = limit + 1 - remaining
    if remaining == 0:
        raise ChecksumError(f"{path}: more than {limit:,} bytes, expected {file.size:,} (the size of {file.name})")
    if digest.hexdigest() != file.digest:
        sizes = f"{size:,} bytes, expected {file.size:,}; " if size != file.size else ""
        raise ChecksumError(f"{path}: {sizes}{file.algorithm} is {digest.hexdigest()}, expected {file.digest} "
                            f"(the published {file.algorithm} of {file.name})")


def _size_error(found: str, layout: CIFARLayout, name: str, source: object) -> CIFARError:
    """The error for a .bin file that holds `found` ("n bytes") instead of its records."""
    return CIFARError(f"{source}: {found}, expected {layout.records[name]:,} records of "
                      f"{layout.record_size:,} bytes = {layout.size(name):,} bytes")


def _parse(data: bytes, layout: CIFARLayout, name: str, source: object) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of the records of the .bin file `name`, every label checked."""
    if len(data) != layout.size(name):
        longer = len(data) > layout.size(name)  # the reader stopped one byte past the expected size
        found = f"more than {layout.size(name):,} bytes" if longer else f"{len(data):,} bytes"
        raise _size_error(found, layout, name, source)
    records = np.frombuffer(data, np.uint8).reshape(-1, layout.record_size)
    for column, (what, count) in enumerate(layout.labels):
        bad = np.flatnonzero(records[:, column] >= count)
        if bad.size:
            raise CIFARError(f"{source}: record {bad[0]} (counting from 0) has {what} {records[bad[0], column]}, "
                             f"expected 0 to {count - 1}")
    images = records[:, len(layout.labels) :].reshape(-1, 3, 32, 32).copy()
    return images, records[:, len(layout.labels) - 1].astype(np.int64)


def _check_names(data: bytes, spec: DatasetSpec, source: object) -> None:
    """Refuse a class-names file whose names differ from spec.classes: the labels would
    then name other classes. `data` is read to at most NAMES_BYTES + 1 bytes."""
    if len(data) > NAMES_BYTES:
        raise CIFARError(f"{source}: more than {NAMES_BYTES:,} bytes, expected a short list of class names")
    try:
        names = [line.strip() for line in data.decode("ascii").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise CIFARError(f"{source}: class names that are not ASCII text") from None
    if names != list(spec.classes):
        line = next((i for i, pair in enumerate(zip(names, spec.classes)) if pair[0] != pair[1]),
                    min(len(names), len(spec.classes)))
        got = repr(names[line][:40]) if line < len(names) else "the end"
        wanted = repr(spec.classes[line]) if line < len(spec.classes) else "the end"
        raise CIFARError(f"{source}: class name {line} is {got}, expected {wanted} (the order of {spec.name})")


# -- an extracted folder ------------------------------------------------------------------


def _bin_folder(layout: CIFARLayout, path: Path) -> Path:
    inner = path / layout.folder
    return inner if inner.is_dir() else path


def _read_file(path: Path, limit: int) -> bytes:
    """At most limit + 1 bytes of the regular file `path` (one more shows a longer file)."""
    try:
        with open_regular(path, CIFARError) as handle:
            return handle.read(limit + 1)
    except OSError as exc:
        raise CIFARError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def _read_folder(spec: DatasetSpec, layout: CIFARLayout, folder: Path, wanted: Sequence[str]) -> dict:
    """The parsed .bin files `wanted` of an extracted folder, each checked against its
    (third-party) MD5."""
    arrays = {}
    for name in wanted:
        path = folder / name
        data = _read_file(path, layout.size(name))
        digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if len(data) == layout.size(name) and digest != layout.digests[name]:  # another size: _parse says so
            raise ChecksumError(
                f"{path}: md5 is {digest}, expected {layout.digests[name]} (a third party's sum of the extracted file; "
                f"the archive {spec.files['archive'].name}, verified against its published MD5, can be given instead)")
        arrays[name] = _parse(data, layout, name, path)
    names = folder / layout.names_file
    if names.exists():
        _check_names(_read_file(names, NAMES_BYTES), spec, names)
    return arrays


# -- the archive ----------------------------------------------------------------------------


class _Limited:
    """A stream that refuses to deliver more than `limit` bytes in all."""

    def __init__(self, stream: BinaryIO, limit: int, source: object) -> None:
        self.stream, self.limit, self.source, self.count = stream, limit, source, 0

    def read(self, size: int = -1) -> bytes:
        allowed = self.limit + 1 - self.count
        data = self.stream.read(allowed if size < 0 else min(size, allowed))
        self.count += len(data)
        if self.count > self.limit:
            raise CIFARError(f"{self.source}: more than {self.limit:,} bytes decompressed, "
                             "more than the published archive holds")
        return data


def _read_archive(spec: DatasetSpec, layout: CIFARLayout, path: Path, wanted: Sequence[str]) -> dict:
    """The parsed .bin members `wanted` of the archive `path`, once its size and digest
    are those published."""
    try:
        with open_regular(path, CIFARError) as handle:
            _verify(handle, path, spec.files["archive"])
            handle.seek(0)
            with gzip.GzipFile(fileobj=handle, mode="rb") as unzipped:
                return _read_tar(spec, layout, _Limited(unzipped, _archive_limit(layout), path), path, wanted)
    except (gzip.BadGzipFile, EOFError, zlib.error, tarfile.TarError) as exc:
        raise CIFARError(f"{path}: not a complete gzip-compressed tar archive ({exc})") from None
    except RecursionError:  # tarfile follows a chain of extended headers by recursion
        raise CIFARError(f"{path}: a chain of tar extended headers too long to follow") from None
    except OSError as exc:
        raise CIFARError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def _archive_limit(layout: CIFARLayout) -> int:
    """The most decompressed bytes a genuine archive holds: every .bin file and the rest."""
    return sum(layout.size(name) for name in layout.records) + OTHER_BYTES


def _read_tar(spec: DatasetSpec, layout: CIFARLayout, stream: _Limited, path: Path, wanted: Sequence[str]) -> dict:
    """Read the tar `stream` member by member, keeping the parsed members `wanted`."""
    allowed = {f"{layout.folder}/{name}": name for name in (*wanted, layout.names_file)}
    found: dict[str, object] = {}
    declared = 0
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for count, member in enumerate(archive, 1):
            if count > MAX_MEMBERS:
                raise CIFARError(f"{path}: more than {MAX_MEMBERS} members, far more than the published archive's")
            if not 0 <= member.size <= stream.limit - declared:
                raise CIFARError(f"{path}: member {member.name[:100]!r} declares {member.size:,} bytes, past the "
                                 f"{stream.limit:,} the published archive's members hold in all")
            declared += member.size
            name = allowed.get(member.name.removeprefix("./"))
            if name is None:
                continue  # never written anywhere, so a name such as ../x or /etc/x does no harm
            source = f"{path}: member {member.name}"
            if name in found:
                raise CIFARError(f"{source}: listed twice")
            found[name] = _read_member(spec, layout, archive, member, name, source)
        while stream.read(1 << 16):
            pass  # to the end, so that gzip checks the length and CRC of all of it
    missing = [f"{layout.folder}/{name}" for name in wanted if name not in found]
    if missing:
        raise CIFARError(f"{path}: no member {missing[0]}, expected in the archive of {spec.name}")
    return {name: found[name] for name in wanted}


def _read_member(spec: DatasetSpec, layout: CIFARLayout, archive: tarfile.TarFile, member: tarfile.TarInfo,
                 name: str, source: str) -> object:
    """The parsed content of the allow-listed `member`: a .bin file's (images, labels),
    or None once the class names are checked. A wrong declared size is refused unread."""
    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or member.issparse():
        raise CIFARError(f"{source}: not a regular file (tar type {member.type!r}), expected one")
    if name == layout.names_file:
        data = archive.extractfile(member).read(NAMES_BYTES + 1)  # type: ignore[union-attr]
        _check_names(data, spec, source)
        return None
    if member.size != layout.size(name):
        raise _size_error(f"{member.size:,} bytes", layout, name, source)
    return _parse(archive.extractfile(member).read(member.size), layout, name, source)  # type: ignore[union-attr]
