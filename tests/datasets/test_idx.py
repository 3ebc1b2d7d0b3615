"""The IDX reader (xpcnn/datasets/idx.py) on good, bad and fuzzed files."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xpcnn.datasets.idx import IDXError, parse_idx, read_idx, write_idx

from ..helpers import good_idx, mutate

FUZZ_LIMIT = 1 << 24


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("compress", [False, True])
def test_round_trip(tmp_path, dtype, compress):
    array = (np.arange(60).reshape(3, 4, 5) % 100).astype(dtype)
    path = tmp_path / "a.idx"
    write_idx(path, array)
    if compress:
        path = tmp_path / "a.idx.gz"
        path.write_bytes(gzip.compress((tmp_path / "a.idx").read_bytes()))
    result = read_idx(path)
    assert result.dtype == np.dtype(dtype) and result.dtype.isnative
    np.testing.assert_array_equal(result, array)


def header(code: int, dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, code, len(dims)]) + np.asarray(dims, ">u4").tobytes()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", r"truncated: the magic number"),
        (b"\x00\x00", r"truncated: the magic number"),
        (b"\x12\x34\x08\x01" + bytes(8), r"not an IDX file: magic number 12340801"),
        (b"\x00\x00\x07\x01" + bytes(8), r"not an IDX file"),
        (b"\x00\x00\x08\x00", r"0 dimensions"),
        (header(0x08, (10,))[:6], r"truncated: the header needs 8 bytes"),
        (header(0x08, (10,)) + bytes(9), r"truncated: header announces 10 data bytes"),
        (header(0x08, (10,)) + bytes(11), r"trailing data after the 10 bytes"),
        (header(0x0E, (100000, 100000, 100000)), r"over the limit"),
        (header(0x08, (2**32 - 1,) * 4), r"over the limit"),
        # Found by the fuzzer: no data bytes, but a shape NumPy cannot describe.
        (header(0x08, (0x08090023, 0, 0x1F202122, 0x23000000, 0, 0x06242526, 0x27)), r"over the limit"),
    ],
)
def test_bad_files_name_the_problem(tmp_path, content, message):
    path = tmp_path / "bad-file"
    path.write_bytes(content)
    with pytest.raises(IDXError, match=message) as info:
        read_idx(path)
    assert "bad-file" in str(info.value)


def test_broken_gzip_is_an_idx_error(tmp_path):
    path = tmp_path / "broken.gz"
    data = gzip.compress(header(0x08, (100,)) + bytes(100))
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(IDXError, match="broken.gz"):
        read_idx(path)
    path.write_bytes(b"\x1f\x8b" + b"not really gzip" * 10)
    with pytest.raises(IDXError, match="cannot read"):
        read_idx(path)


def test_gzip_bomb_is_not_decompressed_past_the_header(tmp_path):
    # 256 MB of zeros compress to ~250 kB; the header announces 10 bytes.
    path = tmp_path / "bomb.gz"
    compressor = gzip.GzipFile(path, "wb", compresslevel=9)
    compressor.write(header(0x08, (10,)))
    chunk = bytes(1 << 20)
    for _ in range(256):
        compressor.write(chunk)
    compressor.close()
    with pytest.raises(IDXError, match="trailing data"):
        read_idx(path)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


def test_parse_checks_length():
    with pytest.raises(IDXError, match="content has 3"):
        parse_idx(header(0x08, (4,)) + bytes(3))


# -- fuzzing under hypothesis -------------------------------------------------------------------


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_random_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("idx") / "f"
    for content in (data, gzip.compress(data)):
        path.write_bytes(content)
        try:
            array = read_idx(path, max_bytes=FUZZ_LIMIT)
        except IDXError:
            continue
        # Accepted: the array is exactly what the header announced.
        assert array.size * array.itemsize == len(content if content is data else data) - 4 - 4 * array.ndim


@settings(max_examples=300)
@given(st.randoms(use_true_random=False), st.integers(1, 8))
def test_mutations_and_lying_headers(tmp_path_factory, rng, edits):
    path = tmp_path_factory.mktemp("idx") / "f"
    data = mutate(good_idx(), rng, edits)
    if rng.random() < 0.3 and len(data) >= 8:  # a dimension that overflows or asks for terabytes
        data = data[:4] + struct.pack(">I", rng.choice([2**32 - 1, 2**31, 10**9])) + data[8:]
    path.write_bytes(data)
    try:
        read_idx(path, max_bytes=FUZZ_LIMIT)
    except IDXError:
        pass
