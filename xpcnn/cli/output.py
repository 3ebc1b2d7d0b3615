"""Where the `xpcnn` command's words go: results to stdout (print), progress and notes
to stderr (say); and the error for arguments that parse but do not fit together."""

from __future__ import annotations

import sys


class UsageError(Exception):
    """Arguments that parse but do not fit together (exit status 2)."""


def say(message: str) -> None:
    """Progress and notes, on the stderr of the moment (a caller's redirection too); results go to stdout."""
    print(message, file=sys.stderr, flush=True)
