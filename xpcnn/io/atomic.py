"""Atomic file writes: a reader sees the old file or the complete new one, never a part."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp creates files readable by their owner only; a written file should get the mode
# any new file gets (0o666 less the umask), read once at import, while single-threaded.
FILE_MODE = 0o666 & ~_umask()
MAX_NAME = 255  # bytes of a file's name, on most file systems


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Call `write(handle)` on a temporary file beside `path`, flush and fsync it, then
    rename it over `path` and fsync the folder. On any error the old file is untouched.
    The new file keeps the mode of the one it replaces (a private checkpoint stays
    private), else gets FILE_MODE.
    A link is written through (the file it names is replaced), into a folder that exists; a
    folder, device, FIFO or socket is refused, never replaced; missing folders are made."""
    link = Path(path) if Path(path).is_symlink() else None
    path = Path(os.path.realpath(path)) if link else Path(path)
    if link and (path.is_symlink() or not path.parent.is_dir()):  # a loop; folders made where a link points
        raise FileNotFoundError(f"{link} is a link that loops, or into a folder that does not exist ({path})")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; name the file to write")
    if path.exists() and not path.is_file():
        raise FileExistsError(f"{path} is not a regular file (a device, FIFO or socket); name a file to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=_temporary_prefix(path.name), suffix=".tmp")
    except OSError as exc:  # named by the file asked for, not the temporary one beside it
        error = type(exc)(f"cannot write {path}: {why_not_made(path.parent, exc)}")
        error.errno = exc.errno
        raise error from None
    try:
        os.fchmod(fd, _mode_of(path))
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _temporary_prefix(name: str) -> str:
    """.NAME. to begin the temporary file's name, NAME cut where needed so that its name
    (with mkstemp's 8 characters and .tmp) is within the 255 bytes a file's name may have."""
    while len(os.fsencode(name)) > MAX_NAME - 14:
        name = name[:-1]
    return f".{name}."


def _mode_of(path: Path) -> int:
    """The permission bits of the file at `path`; FILE_MODE where there is none."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return FILE_MODE


def why_not_made(folder: Path, exc: OSError) -> str:
    """Why `folder` could not be made (mkdir -p raised `exc`): a file where one of its
    folders should be is named (mkdir says only "File exists")."""
    file = next((part for part in (*reversed(folder.parents), folder) if part.is_file()), None)
    return f"{file} is a file, not a folder" if file is not None else str(exc.strerror or exc)


def fsync_dir(folder: str | Path) -> None:
    """Make a rename inside `folder` durable: without it a crash can forget the new name."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
