"""Bringing a picture of a digit into MNIST's form, the way MNIST itself was made.

MNIST digits are light ink on black, fitted into a 20x20 box with their aspect ratio kept,
and placed in a 28x28 field so that their centre of mass is at its centre. A photo or a
drawing is none of that: dark ink on light paper, any size and shape, off centre. Here:

1. polarity: the border is background, so a light border means dark ink, which is
   inverted (unless the caller says otherwise);
2. the background is a plane fitted to the border (uneven light across a photo), and the
   paper's grain a noise floor from the border's spread: both are subtracted and the ink
   scaled to [0, 1];
3. the ink's bounding box, ignoring the last 1 % of the ink on each side (specks, grain),
   is cut out, padded to a square, resized to 20x20 and placed in 28x28 by its centre of
   mass.
"""

from __future__ import annotations

import numpy as np

BOX = 20 / 28  # MNIST's digit box within its field
TRIM = 0.005  # share of the ink mass that may lie outside the bounding box on each side
NOISE = 4.0  # the noise floor, in robust standard deviations of the border's grain


class BlankImage(ValueError):
    """The picture holds no ink to read."""


def border_width(shape: tuple[int, ...], width: int = 2) -> int:
    """How many outer rows and columns count as the border: `width`, less in tiny images."""
    return max(1, min(width, min(shape) // 4))


def border_mask(shape: tuple[int, ...], width: int = 2) -> np.ndarray:
    """True on the outer rows and columns (border_width) of an (H, W) image."""
    width = border_width(shape, width)
    mask = np.zeros(shape, bool)
    mask[:width], mask[-width:], mask[:, :width], mask[:, -width:] = True, True, True, True
    return mask


def light_background(grey: np.ndarray) -> bool:
    """Whether an (H, W) image in [0, 1] is dark ink on a light background."""
    return float(np.median(grey[border_mask(grey.shape)])) > 0.5


def background(grey: np.ndarray, width: int = 2) -> tuple[np.ndarray, float]:
    """(a plane through the border: the paper under light that changes across the picture,
    its tilt from the medians of opposite sides; the border's robust spread around it: the
    paper's grain). Medians, so ink touching the border does not move them."""
    height, breadth = grey.shape
    width = border_width(grey.shape, width)
    rows, cols = np.indices(grey.shape, dtype=np.float64)
    down = (np.median(grey[-width:]) - np.median(grey[:width])) / max(height - width, 1)
    across = (np.median(grey[:, -width:]) - np.median(grey[:, :width])) / max(breadth - width, 1)
    tilt = down * rows + across * cols
    edge = border_mask(grey.shape, width)
    plane = tilt + float(np.median(grey[edge] - tilt[edge]))
    residual = grey[edge] - plane[edge]
    return plane, 1.4826 * float(np.median(np.abs(residual - np.median(residual))))


def ink(grey: np.ndarray, invert: bool | None = None) -> np.ndarray:
    """(H, W) ink strength in [0, 1], 0 for background: inverted when the background is
    light (or when `invert` says so), the background plane and its grain subtracted."""
    if invert if invert is not None else light_background(grey):
        grey = 1.0 - grey
    plane, spread = background(grey)
    strength = np.clip(grey - plane - NOISE * spread, 0.0, None)
    peak = float(strength.max())
    if peak < 0.1:
        raise BlankImage("no digit found: the image is blank or has no contrast")
    return strength / peak


def _span(mass: np.ndarray) -> tuple[int, int]:
    """[first, last] index holding all but TRIM of `mass` at either end."""
    cumulative = np.cumsum(mass) / mass.sum()
    first = int(np.searchsorted(cumulative, TRIM))
    last = int(np.searchsorted(cumulative, 1.0 - TRIM))
    return first, min(max(last, first), mass.size - 1)


def square_crop(strength: np.ndarray) -> np.ndarray:
    """The ink's bounding box, padded with background to a square, digit in the middle."""
    (r0, r1), (c0, c1) = _span(strength.sum(axis=1)), _span(strength.sum(axis=0))
    cut = strength[r0:r1 + 1, c0:c1 + 1]
    side = max(cut.shape)
    square = np.zeros((side, side))
    top, left = (side - cut.shape[0]) // 2, (side - cut.shape[1]) // 2
    square[top:top + cut.shape[0], left:left + cut.shape[1]] = cut
    return square


def resize(image: np.ndarray, side: int) -> np.ndarray:
    """A square image in [0, 1] resized to (side, side), antialiased (Pillow's Lanczos)."""
    from PIL import Image

    scaled = Image.fromarray(image.astype(np.float32), mode="F").resize((side, side), Image.Resampling.LANCZOS)
    return np.clip(np.asarray(scaled, dtype=np.float64), 0.0, 1.0)


def centre_by_mass(digit: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`digit` placed in a zero field of `size` with its centre of mass at the centre."""
    field = np.zeros(size)
    total = digit.sum()
    rows, cols = np.indices(digit.shape)
    mass_row, mass_col = (rows * digit).sum() / total, (cols * digit).sum() / total
    top = int(round(size[0] / 2 - mass_row))  # MNIST's centres of mass lie at (14.0, 14.0)
    left = int(round(size[1] / 2 - mass_col))
    # the part of the digit that falls inside the field (all of it, unless the mass is far off centre)
    r0, c0 = max(0, -top), max(0, -left)
    r1, c1 = min(digit.shape[0], size[0] - top), min(digit.shape[1], size[1] - left)
    field[top + r0:top + r1, left + c0:left + c1] = digit[r0:r1, c0:c1]
    return field


def mnist_form(grey: np.ndarray, invert: bool | None = None, size: tuple[int, int] = (28, 28)) -> np.ndarray:
    """An (H, W) grey image in [0, 1] of one digit as MNIST has them: uint8 `size`, light
    ink on black, fitted into the middle 20/28 and centred by mass. BlankImage if there is
    no ink."""
    square = square_crop(ink(grey, invert))
    box = max(1, round(min(size) * BOX))
    digit = resize(square, box)
    return np.round(centre_by_mass(digit, size) * 255).astype(np.uint8)
