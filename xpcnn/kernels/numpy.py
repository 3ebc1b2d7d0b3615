"""NumPy's fast paths (see backend.fast_path): functions of the layers' standard path done
with what the standard lacks: `out=`, which writes a result straight into its place
instead of into a new array then copied there; strided views of all windows at once;
branches on the data; arithmetic with bool arrays. Each is named like the function it
replaces; tests/kernels/test_numpy.py holds each equal to it, bit for bit.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..layers import activation, conv, pool, windows
from ..layers.base import Shape
from . import implements

# col2im folds blocks of channels of about this many bytes, which stay in cache while
# every tap is added into them (a CPU's L2 cache, give or take).
FOLD_BLOCK_BYTES = 512 * 1024


@implements(pool.route_to_first_maxima)
def route_to_first_maxima(dm: np.ndarray, firsts: list[np.ndarray], shape: Shape, axis: int, k: int,
                          stride: int) -> np.ndarray:
    """pool.route_to_first_maxima for windows that tile the axis (the common pooling): each
    earlier tap's share multiplied by its bool mask (no float copy of it) straight into its
    slice of the result, the last tap's dm minus what they took; the standard path for the
    others."""
    out = dm.shape[axis]
    if not pool.windows_tile(k, stride, out, shape[axis]):
        return pool.route_to_first_maxima(dm, firsts, shape, axis, k, stride)
    da = np.empty(shape, dtype=dm.dtype)
    taken: Any = None  # the gradient the earlier taps took
    for index, first in zip(pool.taps_along(axis, k, stride, out), [*firsts, None]):
        part = da[index]
        if first is None:  # the last tap: what no earlier one took
            if taken is None:
                part[...] = dm
            else:
                np.subtract(dm, taken, out=part)
        else:
            np.multiply(dm, first, out=part)
            taken = part if taken is None else taken + part
    return da


@implements(pool.sweep_masks)
def sweep_masks(x4: np.ndarray, columns: np.ndarray, y4: np.ndarray, kernel: tuple[int, int],
                stride: tuple[int, int], nan_free: bool = False) -> tuple[tuple[Shape, list[np.ndarray]], ...]:
    """pool.sweep_masks without the NaN test when the pooled y4 shows there is no NaN to
    find: a maximum passes a NaN on, so a NaN in a window is one in y4. One reduction of
    y4 spares a test and a logical or over each sweep's input."""
    nan_free = nan_free or y4.size == 0 or not np.isnan(np.max(y4))
    return pool.sweep_masks(x4, columns, y4, kernel, stride, nan_free=nan_free)


@implements(windows.im2col)
def im2col(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], padding: windows.Padding,
           out_hw: tuple[int, int], buffer: np.ndarray) -> np.ndarray:
    """windows.im2col as one copy from a strided view of all windows, which writes the
    buffer in order; padded windows take the
    standard path, which never materialises the padding."""
    if any(padding):
        return windows.im2col(x, kernel, stride, padding, out_hw, buffer)
    (sh, sw), (ho, wo) = stride, out_hw
    taps = sliding_window_view(windows.batch_innermost(x), kernel, axis=(1, 2))  # (C, H', W', N, kh, kw)
    taps = taps[:, : sh * (ho - 1) + 1 : sh, : sw * (wo - 1) + 1 : sw]  # the windows the stride keeps
    np.copyto(buffer, np.moveaxis(taps, (4, 5), (1, 2)))
    return buffer


@implements(windows.fold)
def fold(cols6: np.ndarray, dx4: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
         padding: windows.Padding, out_hw: tuple[int, int]) -> None:
    """windows.fold a few channels at a time (FOLD_BLOCK_BYTES of dx4), the same additions
    in the same order."""
    block = max(1, FOLD_BLOCK_BYTES // (math.prod(dx4.shape[1:]) * dx4.itemsize))
    for start in range(0, dx4.shape[0], block):
        windows.fold(cols6[start : start + block], dx4[start : start + block], kernel, stride, padding, out_hw)


@implements(conv.input_columns)
def input_columns(weight_rows: np.ndarray, dy2: np.ndarray, spent: np.ndarray) -> np.ndarray:
    """conv.input_columns written into the spent forward columns, their first rows: no
    new array of their size, whose fresh pages the OS would zero one by one (for a large
    convolution that costs about as much as the product itself)."""
    return np.matmul(weight_rows.T, dy2, out=spent[: weight_rows.shape[1]])


@implements(activation.positive)
def positive(y: np.ndarray) -> np.ndarray:
    """activation.positive kept as bools: NumPy multiplies a float array by a bool one as
    fast as by a float one, so the cast, a pass over the array, is saved (and 3/4 of the
    mask's memory)."""
    return y > 0
