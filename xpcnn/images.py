"""Reading images for prediction: PNG/JPEG (through Pillow) or .npy, as 28x28 uint8.

Untrusted files are size-checked from their header before any pixel is decoded, so a
decompression bomb is refused instead of filling memory.
"""

from __future__ import annotations

import tokenize
from pathlib import Path

import numpy as np

from .npyheader import read_npy_header

MAX_PIXELS = 25_000_000  # 5000 x 5000: any photo of a digit, nothing that exhausts memory
SIZE = (28, 28)


class ImageError(ValueError):
    """An image file cannot be used; the message names the file and the reason."""


def read_image(path: str | Path, invert: bool = False, size: tuple[int, int] = SIZE) -> np.ndarray:
    """One image as uint8 (H, W) of `size`, white digit on black like MNIST (`invert`
    for dark ink on light paper). PNG/JPEG are converted to grey and resized; .npy must
    already be (H, W) of `size`, uint8 or floating in [0, 1]."""
    path = Path(path)
    pixels = _read_npy(path, size) if path.suffix.lower() == ".npy" else _read_picture(path, size)
    return 255 - pixels if invert else pixels


def _read_npy(path: Path, size: tuple[int, int]) -> np.ndarray:
    try:
        with open(path, "rb") as handle:
            shape, dtype = read_npy_header(handle)
            if shape != size:
                raise ImageError(f"{path}: expected an array of shape {size}, the header says {shape}")
            if dtype.kind not in "uif" or dtype.hasobject:
                raise ImageError(f"{path}: expected uint8 or float pixels, got {dtype}")
            handle.seek(0)
            array = np.lib.format.read_array(handle, allow_pickle=False)
    except ImageError:
        raise
    except (OSError, ValueError, EOFError, SyntaxError, tokenize.TokenError) as exc:  # NumPy's header parser
        raise ImageError(f"{path}: not a readable .npy image: {type(exc).__name__}: {exc}"[:300]) from None
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype.kind == "f" and np.all(np.isfinite(array)) and array.min() >= 0.0 and array.max() <= 1.0:
        return np.round(array * 255).astype(np.uint8)
    raise ImageError(
        f"{path}: pixels must be uint8, or floating in [0, 1]; got {array.dtype} in [{array.min()}, {array.max()}]"
    )


def _read_picture(path: Path, size: tuple[int, int]) -> np.ndarray:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise ImageError(
            f"{path}: reading PNG/JPEG needs Pillow (pip install 'xpcnn[plot]'), or pass a .npy file"
        ) from None
    try:
        with Image.open(path) as image:  # reads the header only
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageError(f"{path}: {width}x{height} pixels, over the limit of {MAX_PIXELS:,}")
            grey = image.convert("L")
            if grey.size != (size[1], size[0]):
                grey = grey.resize((size[1], size[0]), Image.Resampling.LANCZOS)
            return np.asarray(grey, dtype=np.uint8).copy()
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own, stricter-than-ours-for-huge check at open
        raise ImageError(f"{path}: over the limit of {MAX_PIXELS:,} pixels ({exc})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{path}: not a readable image: {exc}") from None
