"""Reading images: for prediction, pictures (PNG, JPEG... through Pillow) brought into
MNIST's form (xpcnn.datasets.digits), or .npy arrays already in it, as 28x28 uint8
(read_image); and photos of any kind as square uint8 (C, S, S) arrays for a dataset of
pictures (read_photo, read_photo_rgb; xpcnn.datasets.folder reads a folder of them).

Only regular files are opened (a FIFO would block forever); untrusted files are
size-checked from their header before any pixel is decoded, so a decompression bomb is
refused instead of filling memory.
"""

from __future__ import annotations

import functools
import io
import os
import stat
import struct
import tokenize
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..extras import install_hint
from ..io.npyheader import read_npy_header
from ..io.regular import open_regular
from . import digits

# A JPEG digit is decoded at no less than this many times the side it is brought to: a
# digit a tenth of a large photo's width keeps more pixels than its box needs.
DIGIT_DRAFT = 8
MAX_PIXELS = 25_000_000  # 5000 x 5000: any photo of a digit, nothing that exhausts memory
SIZE = (28, 28)


class ImageError(ValueError):
    """An image file cannot be used; the message names the file and the reason."""


def read_for_model(path: str | Path, input_shape: tuple[int, int, int], pictures: str = "resize",
                   invert: bool | None = None) -> np.ndarray:
    """One image file as a network trained on images of `input_shape` (C, H, W) takes
    it: uint8 (C, H, W). A .npy array must already have that shape ((H, W) too for grey
    images), uint8 or floating in [0, 1]; `invert` inverts it. A picture is brought into
    the form of the training images: for digits (`pictures` "digits", the MNIST family)
    as read_image does, else as read_photo does (square images only)."""
    channels, height, width = input_shape
    path = _regular(path)
    digit = pictures == "digits" and channels == 1
    if invert is not None and not digit:
        raise ImageError(f"{path}: inverting is for pictures of digits; this model was trained on photos")
    if path.suffix.lower() == ".npy":
        pixels = _read_npy(path, [(channels, height, width), *([(height, width)] * (channels == 1))])
        pixels = pixels.reshape(channels, height, width)
        return 255 - pixels if invert else pixels
    if digit:
        return read_image(path, invert, (height, width))[None]
    if height != width:
        raise ImageError(f"{path}: pictures are read for square inputs, and this model takes {height}x{width}: "
                         "give the image as a .npy array of that shape")
    return read_photo(path, height, channels)


def _regular(path: str | Path) -> Path:
    """`path`, after checking it is a regular file (a FIFO would block forever)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise ImageError(f"{path}: {'a folder' if stat.S_ISDIR(mode) else 'not a regular file'}, not an image")
    except OSError as exc:
        raise ImageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return path


def read_image(path: str | Path, invert: bool | None = None, size: tuple[int, int] = SIZE) -> np.ndarray:
    """One image as uint8 (H, W) of `size`, a light digit on black like MNIST.

    A picture (grey, RGB, with transparency, 8 or 16 bits) is brought into that form:
    transparency laid on the background the ink is not, dark ink on light paper inverted
    (decided from the border; `invert` True or False overrides), the digit fitted and
    centred by mass (see xpcnn.datasets.digits). A .npy array must already be (H, W) of
    `size` (or (1, H, W)), uint8 or floating in [0, 1]; it is used as it is (inverted only
    with invert=True)."""
    path = _regular(path)
    if path.suffix.lower() == ".npy":
        pixels = _read_npy(path, [tuple(size), (1, *size)]).reshape(size)
        return 255 - pixels if invert else pixels
    try:
        return digits.mnist_form(_read_picture(path, DIGIT_DRAFT * max(size)), invert, size)
    except digits.BlankImage as exc:
        hint = {True: " (inverted as --invert asked: is it dark ink on light paper?)",
                False: " (not inverted, as --no-invert asked: is it light ink on dark?)"}.get(invert, "")
        raise ImageError(f"{path}: {exc}{hint}") from None


def _read_npy(path: Path, shapes: list[tuple[int, ...]]) -> np.ndarray:
    """A .npy image of one of `shapes`, uint8 or floating in [0, 1], as uint8."""
    try:
        with open(path, "rb") as handle:
            shape, dtype = read_npy_header(handle)
            if shape not in shapes:
                last = shape[-1:] + shape[:-1] if len(shape) == 3 else None
                hint = "; channels last? save array.transpose(2, 0, 1)" if last in shapes else ""
                raise ImageError(f"{path}: expected an array of shape {' or '.join(map(str, shapes))}, the header "
                                 f"says {shape}{hint}")
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


def _read_picture(path: Path, smallest: int) -> np.ndarray:
    """The picture, turned as its EXIF orientation says, in sRGB (_in_srgb), as grey levels
    (H, W) in [0, 1], transparency laid on a background. A JPEG is decoded at the reduced
    scale draft() gives (1/2, 1/4 or 1/8), no smaller than `smallest` a side, as photos are."""
    try:
        from PIL import Image, ImageOps, UnidentifiedImageError
    except ImportError:
        raise ImageError(
            f"{path}: reading PNG/JPEG needs Pillow ({install_hint('images')}), or pass a .npy file"
        ) from None
    try:
        with Image.open(path) as image:  # reads the header only
            return _grey(_upright_in_srgb(image, smallest, ImageOps))
    except ImageError as exc:
        raise ImageError(f"{path}: {exc}") from None
    except Image.DecompressionBombError as exc:  # Pillow's own, stricter-than-ours-for-huge check at open
        raise ImageError(f"{path}: over the limit of {MAX_PIXELS:,} pixels ({exc})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        if path.stat().st_size == 0:  # a failed copy or download, more often than not
            raise ImageError(f"{path}: an empty file (0 bytes)") from None
        raise ImageError(f"{path}: not a readable image: {exc}") from None


def _grey(image: Any) -> np.ndarray:
    """Grey levels in [0, 1] of a Pillow image of any mode. Transparent parts are laid on
    the background the ink is not: black ink on nothing becomes black ink on white."""
    if image.mode in DEEP_MODES:  # 16-bit (or deeper) grey: 0-65535, or 0-255 where no value is above; floats 0-1
        values = np.asarray(image, dtype=np.float64)
        top = float(values.max(initial=0.0))
        scale = 1.0 if image.mode == "F" and top <= 1.0 else 65535.0 if top > 255 else 255.0
        return np.clip(values / scale, 0.0, 1.0)
    if image.mode not in ("RGBA", "LA", "PA") and "transparency" not in image.info:
        return np.asarray(image.convert("L"), dtype=np.float64) / 255.0
    grey_alpha = np.asarray(image.convert("RGBA").convert("LA"), dtype=np.float64) / 255.0
    grey, alpha = grey_alpha[..., 0], grey_alpha[..., 1]
    seen = alpha > 0.5
    ink_is_dark = not seen.any() or float(np.mean(grey[seen])) < 0.5
    return grey * alpha + (1.0 if ink_is_dark else 0.0) * (1.0 - alpha)


# -- photos: any picture as a square uint8 array, for datasets of pictures -----------------

NO_PILLOW = f"reading pictures needs Pillow: {install_hint('images')}"
REDUCING_GAP = 3.0  # Pillow first shrinks by whole factors to within 3x of the size: fast, no visible loss
DEEP_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # 16-bit, 32-bit and float grey
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
LUMA_BLOCK = 4096  # pictures converted to grey at a time: bounds the uint32 work arrays
# What Pillow's format plugins raise on damaged or hostile input (besides its bomb checks):
# truncated data, bad chunks and tags, zlib streams that do not inflate.
PILLOW_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError, ZeroDivisionError,
                 OverflowError, struct.error, zlib.error)


def pillow_version() -> str:
    """The installed Pillow's version; ImportError naming the extra when it is missing."""
    try:
        from PIL import __version__
    except ImportError:
        raise ImportError(NO_PILLOW) from None
    return __version__


def read_photo(path: str | Path, size: int, channels: int | None = None) -> np.ndarray:
    """One picture as uint8 (C, size, size): C = `channels` (1 or 3), or for None 3 if the
    picture has colour, else 1.

    The pipeline (read_photo_rgb): only a regular file is opened (a FIFO or a device is
    refused); Pillow reads the header, and a picture over MAX_PIXELS is refused before
    any pixel is decoded (a JPEG at the reduced scale `draft()` decodes it at: 1/2, 1/4 or
    1/8, never below `size`); the EXIF orientation is applied; colours are brought to sRGB
    from the colour profile the picture embeds (_in_srgb); the first frame of any mode is
    brought to RGB or grey (16-bit grey scaled to 8 bits, transparency laid on WHITE); the
    aspect is kept: the shorter side is scaled to `size` and the middle square cut
    out (as ImageOps.fit), resampled with Pillow's antialiased BILINEAR filter (as
    torchvision and Keras resize). Grey is ITU-R 601 luma as Pillow's "L" conversion
    computes it (photo_channels), so a grey picture and its RGB copy give the same grey.
    Any unusable file raises ImageError naming it and the reason."""
    if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
        raise ValueError(f"channels must be 1, 3 or None, got {channels!r}")
    rgb, colour = read_photo_rgb(path, size)
    return photo_channels(rgb, channels or (3 if colour else 1))


def read_photo_rgb(path: str | Path, size: int) -> tuple[np.ndarray, bool]:
    """(the picture as RGB uint8 (3, size, size), whether it has colour: not all three
    channels equal after fitting): read_photo before the channels are chosen."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be an integer >= 1, got {size!r}")
    image_module, ops = _pillow()
    with _open_regular(path) as handle:
        try:
            pixels = _fit_photo(handle, size, image_module, ops)
        except ImageError as exc:
            raise ImageError(f"{path}: {exc}") from None
        except (image_module.DecompressionBombError, image_module.DecompressionBombWarning) as exc:
            raise ImageError(f"{path}: over the limit of {MAX_PIXELS:,} pixels ({exc})") from None
        except image_module.UnidentifiedImageError:
            empty = os.fstat(handle.fileno()).st_size == 0  # a failed copy or download, more often than not
            what = "an empty file (0 bytes)" if empty else "not a picture in a format Pillow reads"
            raise ImageError(f"{path}: {what}") from None
        except PILLOW_ERRORS as exc:
            message = " ".join(str(exc).split())[:200]  # one line, however Pillow worded it
            raise ImageError(f"{path}: not a readable picture: {type(exc).__name__}: {message}") from None
    if pixels.ndim == 2:
        return np.repeat(pixels[None], 3, axis=0), False
    rgb = np.ascontiguousarray(pixels.transpose(2, 0, 1))
    return rgb, bool(np.any(rgb[0] != rgb[1]) or np.any(rgb[1] != rgb[2]))


def photo_channels(rgb: np.ndarray, channels: int) -> np.ndarray:
    """RGB pictures uint8 (..., 3, S, S) with `channels`: 3 gives them back, 1 gives
    (..., 1, S, S) grey by ITU-R 601 luma in Pillow's fixed point,
    (19595 R + 38470 G + 7471 B + 2**15) >> 16: the same as Image.convert("L")."""
    if channels == 3:
        return rgb
    if channels != 1:
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    grey = np.empty((*rgb.shape[:-3], 1, *rgb.shape[-2:]), np.uint8)
    pictures, out = rgb.reshape(-1, *rgb.shape[-3:]), grey.reshape(-1, *grey.shape[-3:])
    for start in range(0, len(pictures), LUMA_BLOCK):
        block = pictures[start:start + LUMA_BLOCK].astype(np.uint32)
        out[start:start + LUMA_BLOCK, 0] = (block[:, 0] * 19595 + block[:, 1] * 38470 + block[:, 2] * 7471
                                            + 0x8000) >> 16
    return grey


def _pillow() -> tuple[Any, Any]:
    """(PIL.Image, PIL.ImageOps); ImportError naming the extra without Pillow."""
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise ImportError(NO_PILLOW) from None
    return Image, ImageOps


def _open_regular(path: str | Path) -> Any:
    """`path` opened for reading if it is a regular file; ImageError otherwise."""
    try:
        return open_regular(path, ImageError)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _fit_photo(handle: Any, size: int, image_module: Any, ops: Any) -> np.ndarray:
    """The picture in `handle` as uint8 (size, size) grey or (size, size, 3) RGB."""
    with image_module.open(handle) as image:  # reads the header only
        flat = _flatten(_upright_in_srgb(image, size, ops), image_module)
    side = min(flat.size)
    left, top = (flat.width - side) / 2, (flat.height - side) / 2
    fitted = flat.resize((size, size), image_module.Resampling.BILINEAR, box=(left, top, left + side, top + side),
                         reducing_gap=REDUCING_GAP)
    return np.asarray(fitted)


def _upright_in_srgb(image: Any, smallest: int, ops: Any) -> Any:
    """`image`, opened with its header read, decoded no smaller than `smallest` a side (a
    JPEG at the 1/2, 1/4 or 1/8 scale draft() gives) within MAX_PIXELS, turned as its EXIF
    orientation says (a phone's photo stored sideways) and in sRGB (_in_srgb); ImageError
    without the path otherwise."""
    image.draft(image.mode, (smallest, smallest))
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ImageError(f"{width}x{height} pixels, over the limit of {MAX_PIXELS:,}")
    if width < 1 or height < 1:
        raise ImageError(f"{width}x{height} pixels: no picture")
    ops.exif_transpose(image, in_place=True)
    return _in_srgb(image)


def _in_srgb(image: Any) -> Any:
    """`image` converted from the colour profile it embeds to sRGB, as a browser shows it:
    read as sRGB, a phone's Display P3 photo is dull and a CMYK one's colours are wrong (a
    palette's colours and an 8-bit grey picture's tones are in the profile's space too; grey
    comes out as RGB of equal channels). Without a profile, with an sRGB one, or one that
    littlecms cannot read or that is of another colour space (as browsers ignore it), `image`
    itself, a palette as RGB or RGBA."""
    profile = image.info.get("icc_profile")
    if profile and image.mode in ("P", "PA"):
        image = image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB")
    transform = _srgb_transform(profile, image.mode) if profile and image.mode in ("RGB", "RGBA", "CMYK", "L") else None
    if transform is None:
        return image
    from PIL import ImageCms

    return ImageCms.applyTransform(image, transform)


@functools.lru_cache(maxsize=16)  # a folder's pictures share a few profiles; building a transform takes ~1 ms
def _srgb_transform(profile: bytes, mode: str) -> Any:
    """A littlecms transform from `profile` in `mode` to sRGB (RGBA kept RGBA), or None
    where none is needed or possible (see _in_srgb)."""
    try:
        from PIL import ImageCms
    except ImportError:  # a Pillow built without littlecms
        return None
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        if mode in ("RGB", "RGBA") and "srgb" in ImageCms.getProfileDescription(source).lower():
            return None  # already sRGB: transforming it would only round
        srgb = ImageCms.createProfile("sRGB")
        return ImageCms.buildTransform(source, srgb, mode, "RGBA" if mode == "RGBA" else "RGB")
    except (OSError, ImageCms.PyCMSError):
        return None


def _flatten(image: Any, image_module: Any) -> Any:
    """A Pillow image of any mode as mode "L" (grey sources) or "RGB", transparency laid
    on white."""
    if image.mode in DEEP_MODES:
        return image_module.fromarray(_eight_bits(np.asarray(image), image.mode))
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = image_module.new("RGB", rgba.size, (255, 255, 255))
        white.paste(rgba, mask=rgba)  # blends by alpha: transparent parts stay white
        return white
    return image.convert("L" if image.mode in ("1", "L") else "RGB")


def _eight_bits(values: np.ndarray, mode: str) -> np.ndarray:
    """Deep grey levels as uint8: I;16 spans 0-65535; I and F span 0-255 when no value is
    above 255, else 0-65535 (beyond saturates); F with every value in [0, 1] spans 0-1."""
    values = np.nan_to_num(values.astype(np.float32))
    highest = float(values.max(initial=0.0))
    if mode.startswith("I;16") or highest > 255:
        scale = 255 / 65535
    else:
        scale = 255.0 if mode == "F" and highest <= 1.0 else 1.0
    return np.clip(np.rint(values * np.float32(scale)), 0, 255).astype(np.uint8)
