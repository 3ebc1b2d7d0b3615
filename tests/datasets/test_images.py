"""Reading digit images (xpcnn/datasets/images.py) from untrusted files: mutated .npy files and
decompression bombs are refused from the header.

Predictions from .npy and picture files, end to end, are tested in tests/cli/test_main.py.
"""

from __future__ import annotations

import io
import os
import struct
import time
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xpcnn.datasets.images import ImageError, read_image

from ..helpers import mutate


@settings(max_examples=150)
@given(st.randoms(use_true_random=False), st.integers(1, 6))
def test_npy_image_mutations(tmp_path_factory, rng, edits):
    folder = tmp_path_factory.mktemp("npy")
    buffer = io.BytesIO()
    np.save(buffer, np.arange(784, dtype=np.uint8).reshape(28, 28))
    (folder / "m.npy").write_bytes(mutate(buffer.getvalue(), rng, edits))
    try:
        pixels = read_image(folder / "m.npy")
    except ImageError:
        return
    assert pixels.shape == (28, 28) and pixels.dtype == np.uint8


def png_claiming(width: int, height: int) -> bytes:
    """A tiny real PNG whose header claims width x height (CRC fixed), data for 1x1."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    return bytes(data)


def test_decompression_bomb_images_are_refused_from_the_header(tmp_path):
    pytest.importorskip("PIL")
    (tmp_path / "bomb.png").write_bytes(png_claiming(60_000, 60_000))
    start = time.perf_counter()
    with pytest.raises(ImageError, match="over the limit"):
        read_image(tmp_path / "bomb.png")
    assert time.perf_counter() - start < 2
    (tmp_path / "cut.png").write_bytes(png_claiming(28, 28)[:40])
    with pytest.raises(ImageError, match="cut.png"):
        read_image(tmp_path / "cut.png")
    header = b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (100000, 100000), }"
    (tmp_path / "lying.npy").write_bytes(header.ljust(128, b" ") + b"\n")
    with pytest.raises(ImageError, match=r"shape \(28, 28\)"):
        read_image(tmp_path / "lying.npy")


def test_only_regular_files_are_opened(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    start = time.perf_counter()
    with pytest.raises(ImageError, match="pipe.png: not a regular file"):
        read_image(fifo)  # opening it would wait for a writer forever
    with pytest.raises(ImageError, match="not a regular file"):
        read_image(tmp_path)
    with pytest.raises(ImageError, match="missing.png: cannot read: No such file"):
        read_image(tmp_path / "missing.png")
    assert time.perf_counter() - start < 5


def test_transparency_and_16_bit_pictures(tmp_path):
    image_module = pytest.importorskip("PIL.Image")
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255  # a "1"
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., 3] = digit  # black ink, drawn only by its alpha
    image_module.fromarray(rgba, "RGBA").save(tmp_path / "ink.png")
    image_module.fromarray(digit.astype(np.uint16) * 257).save(tmp_path / "deep.png")
    reference = read_image(tmp_path / "deep.png")
    assert reference.max() == 255 and reference[0].max() == 0  # light ink on black, like MNIST
    np.testing.assert_array_equal(read_image(tmp_path / "ink.png"), reference)


def test_a_picture_inverted_into_nothing_says_what_was_inverted(tmp_path):
    image = pytest.importorskip("PIL.Image")
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255  # a light stroke on black, as MNIST's
    image.fromarray(digit).save(tmp_path / "one.png")
    assert read_image(tmp_path / "one.png").max() > 0
    with pytest.raises(ImageError, match=r"no digit found.*\(inverted as --invert asked: is it dark ink on light"):
        read_image(tmp_path / "one.png", invert=True)
