"""Reading an .npy header before NumPy allocates what it asks for."""

from __future__ import annotations

from typing import BinaryIO

import numpy as np

_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def read_npy_header(handle: BinaryIO) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from the start of an .npy stream; ValueError for other versions.

    NumPy's parser may also raise SyntaxError or tokenize.TokenError on a malformed
    header: callers reading untrusted files catch those too."""
    version = np.lib.format.read_magic(handle)
    if version not in _READERS:
        raise ValueError(f"unsupported .npy version {version}")
    shape, _, dtype = _READERS[version](handle)
    return tuple(shape), dtype
