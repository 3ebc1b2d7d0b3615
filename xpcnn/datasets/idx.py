"""The IDX file format of MNIST-like datasets, read with every length checked.

An IDX file is a 4-byte magic number (0, 0, type code, number of dimensions), one
big-endian uint32 per dimension, then the values in C order. Raw and gzip files are
read; a header that asks for more than `max_bytes` is refused before anything is
allocated, and a gzip stream is never decompressed past what the header announced.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..io.regular import open_regular

# Type codes of the IDX format and their big-endian NumPy dtypes.
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MAX_BYTES = 1 << 30  # 1 GiB: far above any MNIST-like file, far below a memory blow-up
READ_CHUNK = 1 << 24
MAX_NDIM = 8
GZIP_MAGIC = b"\x1f\x8b"


class IDXError(ValueError):
    """A file is not a valid IDX file; the message names the file and the problem."""


def open_maybe_gzip(path: Path) -> BinaryIO:
    """Open `path` for reading, decompressing on the fly if it starts like a gzip file."""
    handle = open_regular(path, IDXError)
    if handle.read(2) == GZIP_MAGIC:
        handle.seek(0)
        return gzip.GzipFile(fileobj=handle, mode="rb")  # type: ignore[return-value]
    handle.seek(0)
    return handle


def _parse_header(head: bytes, source: object, max_bytes: int) -> tuple[np.dtype, tuple[int, ...], int]:
    """(dtype, dims, header length) from the first bytes of an IDX file."""
    if len(head) < 4:
        raise IDXError(f"{source}: truncated: the magic number needs 4 bytes, file has {len(head)}")
    if head[0] != 0 or head[1] != 0 or head[2] not in IDX_TYPES:
        raise IDXError(
            f"{source}: not an IDX file: magic number {head[:4].hex()} "
            f"(expected 0000ttnn, type tt one of {', '.join(f'{t:02x}' for t in IDX_TYPES)})"
        )
    ndim = head[3]
    if not 1 <= ndim <= MAX_NDIM:
        raise IDXError(f"{source}: IDX header gives {ndim} dimensions, expected 1 to {MAX_NDIM}")
    header_length = 4 + 4 * ndim
    if len(head) < header_length:
        raise IDXError(f"{source}: truncated: the header needs {header_length} bytes, file has {len(head)}")
    dims = tuple(int(d) for d in np.frombuffer(head[4:header_length], ">u4"))
    dtype = np.dtype(IDX_TYPES[head[2]])
    # Zero dimensions counted as one: an empty array of shape (0, 2**31, 2**31) holds no
    # bytes, but NumPy cannot even describe it.
    size = math.prod(max(d, 1) for d in dims) * dtype.itemsize
    if size > max_bytes:
        raise IDXError(
            f"{source}: IDX header asks for shape {dims} of {dtype.name} = {size:,} bytes "
            f"(empty dimensions counted as 1), over the limit of {max_bytes:,}"
        )
    return dtype, dims, header_length


def read_idx_bytes(path: str | Path, max_bytes: int = MAX_BYTES) -> bytearray:
    """The uncompressed content of an IDX file, after checking its header and length."""
    path = Path(path)
    try:
        with open_maybe_gzip(path) as stream:
            head = stream.read(4 + 4 * MAX_NDIM)
            dtype, dims, header_length = _parse_header(head, path, max_bytes)
            size = math.prod(dims) * dtype.itemsize
            # Read no more than announced (+1 to see trailing data): a gzip bomb stops here.
            # Grown in place, the content is held once: a header that lies costs what it reads.
            content = bytearray(head)
            while len(content) < header_length + size + 1:
                chunk = stream.read(min(READ_CHUNK, header_length + size + 1 - len(content)))
                if not chunk:
                    break
                content += chunk
    except (OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise IDXError(f"{path}: cannot read: {exc}") from None
    body = len(content) - header_length
    if body < size:
        raise IDXError(f"{path}: truncated: header announces {size:,} data bytes for shape {dims}, file has {body:,}")
    if body > size:
        raise IDXError(f"{path}: trailing data after the {size:,} bytes announced for shape {dims}")
    return content


def parse_idx(content: bytes | bytearray, source: object = "<bytes>", max_bytes: int = MAX_BYTES) -> np.ndarray:
    """A native-endian array from the uncompressed bytes of an IDX file."""
    dtype, dims, header_length = _parse_header(content[: 4 + 4 * MAX_NDIM], source, max_bytes)
    size = math.prod(dims) * dtype.itemsize
    if len(content) - header_length != size:
        raise IDXError(
            f"{source}: header announces {size:,} data bytes for shape {dims}, "
            f"content has {len(content) - header_length:,}"
        )
    return np.frombuffer(content, dtype, offset=header_length).reshape(dims).astype(dtype.newbyteorder("="))


def read_idx(path: str | Path, max_bytes: int = MAX_BYTES) -> np.ndarray:
    """Read an IDX file (raw or gzip) into a native-endian NumPy array."""
    return parse_idx(read_idx_bytes(path, max_bytes), path, max_bytes)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write `array` as a raw IDX file (used to build test fixtures and subsets)."""
    codes = {np.dtype(v).newbyteorder("="): k for k, v in IDX_TYPES.items()}
    dtype = array.dtype.newbyteorder("=")
    if dtype not in codes:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    header = bytes([0, 0, codes[dtype], array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    Path(path).write_bytes(header + array.astype(IDX_TYPES[codes[dtype]]).tobytes())
