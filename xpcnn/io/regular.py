"""Opening a file named by a user for reading: a regular file (or a link to one) only.

A FIFO, device or socket is refused by name at once: reading /dev/zero never ends, and
opening a FIFO waits for a writer (hence O_NONBLOCK, which a regular file ignores).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

NONBLOCK = getattr(os, "O_NONBLOCK", 0)


def open_regular(path: str | Path, error: type[Exception]) -> BinaryIO:
    """`path` opened for binary reading; `error("<path>: not a regular file")` if it is
    something else. OSError if it cannot be opened."""
    fd = os.open(path, os.O_RDONLY | NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise error(f"{path}: not a regular file")
    return os.fdopen(fd, "rb")


def why_missing(path: str | Path) -> str:
    """Why `path`, which does not exist, is not there: a link to nothing names itself so."""
    return "is a link to nothing (its target is missing, or the links loop)" if os.path.islink(path) \
        else "does not exist"
