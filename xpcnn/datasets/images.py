"""Reading images for prediction: pictures (PNG, JPEG... through Pillow) brought into
MNIST's form (xpcnn.datasets.digits), or .npy arrays already in it, as 28x28 uint8.

Only regular files are opened (a FIFO would block forever); untrusted files are
size-checked from their header before any pixel is decoded, so a decompression bomb is
refused instead of filling memory.
"""

from __future__ import annotations

import stat
import tokenize
from pathlib import Path
from typing import Any

import numpy as np

from ..io.npyheader import read_npy_header
from . import digits

MAX_PIXELS = 25_000_000  # 5000 x 5000: any photo of a digit, nothing that exhausts memory
SIZE = (28, 28)


class ImageError(ValueError):
    """An image file cannot be used; the message names the file and the reason."""


def read_image(path: str | Path, invert: bool | None = None, size: tuple[int, int] = SIZE) -> np.ndarray:
    """One image as uint8 (H, W) of `size`, a light digit on black like MNIST.

    A picture (grey, RGB, with transparency, 8 or 16 bits) is brought into that form:
    transparency laid on the background the ink is not, dark ink on light paper inverted
    (decided from the border; `invert` True or False overrides), the digit fitted and
    centred by mass (see xpcnn.datasets.digits). A .npy array must already be (H, W) of `size`,
    uint8 or floating in [0, 1]; it is used as it is (inverted only with invert=True)."""
    path = Path(path)
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise ImageError(f"{path}: not a regular file")
    except OSError as exc:
        raise ImageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if path.suffix.lower() == ".npy":
        pixels = _read_npy(path, size)
        return 255 - pixels if invert else pixels
    try:
        return digits.mnist_form(_read_picture(path), invert, size)
    except digits.BlankImage as exc:
        hint = {True: " (inverted as --invert asked: is it dark ink on light paper?)",
                False: " (not inverted, as --no-invert asked: is it light ink on dark?)"}.get(invert, "")
        raise ImageError(f"{path}: {exc}{hint}") from None


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


def _read_picture(path: Path) -> np.ndarray:
    """The picture as grey levels (H, W) in [0, 1], transparency laid on a background."""
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
            return _grey(image)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own, stricter-than-ours-for-huge check at open
        raise ImageError(f"{path}: over the limit of {MAX_PIXELS:,} pixels ({exc})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{path}: not a readable image: {exc}") from None


def _grey(image: Any) -> np.ndarray:
    """Grey levels in [0, 1] of a Pillow image of any mode. Transparent parts are laid on
    the background the ink is not: black ink on nothing becomes black ink on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit (or deeper) grey
        values = np.asarray(image, dtype=np.float64)
        return np.clip(values / (65535.0 if values.max() > 255 else 255.0), 0.0, 1.0)
    if image.mode not in ("RGBA", "LA", "PA") and "transparency" not in image.info:
        return np.asarray(image.convert("L"), dtype=np.float64) / 255.0
    grey_alpha = np.asarray(image.convert("RGBA").convert("LA"), dtype=np.float64) / 255.0
    grey, alpha = grey_alpha[..., 0], grey_alpha[..., 1]
    seen = alpha > 0.5
    ink_is_dark = not seen.any() or float(np.mean(grey[seen])) < 0.5
    return grey * alpha + (1.0 if ink_is_dark else 0.0) * (1.0 - alpha)
