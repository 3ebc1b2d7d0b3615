"""Finding, verifying and downloading dataset files.

Without a `--data-dir` folder, files are looked for in `$XPCNN_DATA_DIR`, then the per-user
cache (`$XDG_CACHE_HOME/xpcnn` or `~/.cache/xpcnn`), and missing ones are downloaded into
the cache; with one, in that folder only, and loading downloads nothing (`xpcnn download
--data-dir` fills it). Each folder either holds the files or a sub-folder named after the
dataset. A file counts only once its checksum matches.
Downloads go to a temporary file in the cache, are verified, then renamed into place, so
an interrupted or corrupted download never leaves a file that looks valid.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..io.atomic import fsync_dir, why_not_made
from ..io.regular import open_regular
from .idx import GZIP_MAGIC, IDXError, parse_idx, read_idx_bytes
from .sources import DataFile, DatasetSpec

GZIP_SLACK = 1 << 20  # a gzip file is never much larger than its content


class ChecksumError(ValueError):
    """A file's content does not match the published checksum."""


class DownloadError(RuntimeError):
    """No mirror delivered a valid file; the message lists every attempt."""


def cache_dir() -> Path:
    """The per-user cache folder of xpcnn."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "xpcnn"


def search_dirs(spec: DatasetSpec, data_dir: str | Path | None = None) -> list[Path]:
    """Folders to look in, in order: data_dir, $XPCNN_DATA_DIR, the cache; each also with
    a sub-folder named after the dataset."""
    roots = [Path(p) for p in (data_dir, os.environ.get("XPCNN_DATA_DIR")) if p]
    roots.append(cache_dir())
    return [d for root in roots for d in (root, root / spec.name)]


def load_verified(path: Path, file: DataFile) -> np.ndarray:
    """Read `path` as the data file `file` describes; ChecksumError or IDXError if it is not."""
    if file.of == "gzip":
        with open_regular(path, IDXError) as handle:  # a FIFO would wait for a writer
            raw = handle.read(file.size + GZIP_SLACK)
        if not raw.startswith(GZIP_MAGIC):
            raise ChecksumError(
                f"{path}: only the published gzip file of {file.name} can be verified ({file.algorithm} of the .gz)"
            )
        digest = file.hash()
        digest.update(raw)
        if digest.hexdigest() != file.digest:
            raise ChecksumError(
                f"{path}: {file.algorithm} of the gzip file is {digest.hexdigest()}, expected {file.digest}"
            )
        content = read_idx_bytes(path, max_bytes=file.size)
    else:
        content = read_idx_bytes(path, max_bytes=file.size)
        digest = file.hash()
        digest.update(content)
        if digest.hexdigest() != file.digest:
            raise ChecksumError(
                f"{path}: {file.algorithm} of the uncompressed content is {digest.hexdigest()}, expected {file.digest}"
            )
    if len(content) != file.size:
        raise ChecksumError(f"{path}: {len(content):,} uncompressed bytes, expected {file.size:,}")
    return parse_idx(content, path)


def find_file(file: DataFile, dirs: Sequence[Path]) -> Path | None:
    """The first `name` or `name.gz` in `dirs` that exists and is not a folder (not yet
    verified: anything but a regular file is refused by name when read)."""
    for folder in dirs:
        for candidate in (folder / file.name, folder / f"{file.name}.gz"):
            if candidate.exists() and not candidate.is_dir():
                return candidate
    return None


def _fetch(url: str, folder: Path, limit: int, timeout: float) -> Path:
    """Stream `url` into a new temporary file in `folder`, at most `limit` bytes."""
    fd, name = tempfile.mkstemp(dir=folder, prefix=".download-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            received = 0
            while chunk := response.read(1 << 16):
                received += len(chunk)
                if received > limit:
                    raise DownloadError(f"{url}: more than {limit:,} bytes, refusing the rest")
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


def _permanent(error: BaseException) -> bool:
    """Failures a retry cannot fix: unknown host, or an HTTP 4xx answer."""
    if isinstance(error, urllib.error.HTTPError):
        return 400 <= error.code < 500
    return isinstance(error, urllib.error.URLError) and isinstance(error.reason, socket.gaierror)


def _download_limit(file: DataFile) -> int:
    """The most bytes a download of `file` may deliver: its size and a slack (an IDX file's
    gzip; for an archive, what cifar.ARCHIVE_SLACK allows for a size others recorded)."""
    return file.size + GZIP_SLACK


def download_file(
    file: DataFile,
    mirrors: Sequence[str],
    folder: Path,
    *,
    verify: Callable[[Path, DataFile], object] = load_verified,
    tries: int = 2,
    timeout: float = 30.0,
    backoff: float = 1.0,
    log: Callable[[str], None] = lambda message: None,
) -> Path:
    """Download `file` (as file.served_as) into `folder` from the first mirror that
    delivers a copy `verify(path, file)` accepts (raising a ValueError, e.g. ChecksumError,
    where it does not), trying each mirror `tries` times; returns the final path. Folders
    it made for a file it did not download (a failure, a Ctrl-C) are removed again."""
    made = [place for place in (folder, *folder.parents) if not place.exists()]  # deepest first
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. a home folder that is not writable: nowhere to download to
        raise DownloadError(f"cannot make the download folder {folder} ({why_not_made(folder, exc)}); "
                            "--data-dir, XPCNN_DATA_DIR or XDG_CACHE_HOME can name another") from None
    try:
        return _from_mirrors(file, mirrors, folder, verify, tries, timeout, backoff, log)
    finally:
        for place in made:
            with contextlib.suppress(OSError):  # one that holds the file, or anything, is kept
                place.rmdir()


def _from_mirrors(file: DataFile, mirrors: Sequence[str], folder: Path, verify: Callable[[Path, DataFile], object],
                  tries: int, timeout: float, backoff: float, log: Callable[[str], None]) -> Path:
    """download_file's work, into `folder`, which exists."""
    target = folder / file.served_as
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + f"/{file.served_as}"
        for attempt in range(1, tries + 1):
            log(f"downloading {url}")
            try:
                part = _fetch(url, folder, _download_limit(file), timeout)
                try:
                    verify(part, file)
                    os.replace(part, target)
                    fsync_dir(folder)
                    return target
                finally:
                    part.unlink(missing_ok=True)
            # verify's refusals are ValueErrors (IDXError, ChecksumError, CIFARError...)
            except (OSError, http.client.HTTPException, ValueError, DownloadError) as exc:
                failures.append((f"{url} (try {attempt})", str(exc)))
                if _permanent(exc):
                    break  # another try at this mirror would fail the same way
                if attempt < tries:
                    time.sleep(backoff * attempt)
    raise DownloadError(f"could not download {file.name}: {_failures(failures)}")


def _failures(failures: list[tuple[str, str]]) -> str:
    """What went wrong at each try, once where every try failed alike (no network)."""
    reasons = {reason for _, reason in failures}
    if len(failures) > 1 and len(reasons) == 1:
        return f"each of {len(failures)} tries failed: {reasons.pop()}"
    return "; ".join(f"{where}: {reason}" for where, reason in failures)
