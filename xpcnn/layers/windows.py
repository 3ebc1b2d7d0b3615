"""Sliding-window helpers shared by convolution and pooling.

A k*k window sliding with stride s over an input is read as k*k strided slices ("taps"):
tap (i, j) holds element (i + s*oh, j + s*ow) of every window (oh, ow). Working tap by tap
keeps everything to standard slicing, with no gather, scatter or as_strided.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace, device

Pair = tuple[int, int]
Padding = tuple[int, int, int, int]  # (top, bottom, left, right)


def output_size(size: int, kernel: int, stride: int, pad: int = 0) -> int:
    """Output length of a window sweep, floor semantics: (size + pad - kernel) // stride + 1."""
    return (size + pad - kernel) // stride + 1


def tap_index(i: int, j: int, out_hw: Pair, stride: Pair) -> tuple[Any, slice, slice]:
    """The index of tap (i, j) over the last two axes: rows i + s*oh, columns j + s*ow."""
    (ho, wo), (sh, sw) = out_hw, stride
    return (..., slice(i, i + sh * (ho - 1) + 1, sh), slice(j, j + sw * (wo - 1) + 1, sw))


def tap(x: Any, i: int, j: int, out_hw: Pair, stride: Pair) -> Any:
    """x[..., i + s*oh, j + s*ow] for all (oh, ow): a strided view of the last two axes."""
    return x[tap_index(i, j, out_hw, stride)]


def im2col(x: Any, kernel: Pair, stride: Pair, padding: Padding, out_hw: Pair) -> Any:
    """Unfold windows into columns.

    x: (N, C, H, W) -> cols: (C*kh*kw, N*Ho*Wo), rows ordered (c, i, j) to match a
    (O, C, kh, kw) weight reshaped to (O, C*kh*kw). Built in a (C, N, ...) layout so each
    tap is one slice assignment and the matrix product reads contiguous rows.
    """
    xp = array_namespace(x)
    n, c, h, w = x.shape
    (kh, kw), (ho, wo) = kernel, out_hw
    top, bottom, left, right = padding
    x_cn = xp.permute_dims(x, (1, 0, 2, 3))
    if any(padding):
        padded = xp.zeros(
            (c, n, h + top + bottom, w + left + right), dtype=x.dtype, device=device(x)
        )
        padded[:, :, top : top + h, left : left + w] = x_cn
        x_cn = padded
    cols = xp.empty((c, kh, kw, n, ho, wo), dtype=x.dtype, device=device(x))
    for i in range(kh):
        for j in range(kw):
            cols[:, i, j, :, :, :] = tap(x_cn, i, j, out_hw, stride)
    return xp.reshape(cols, (c * kh * kw, n * ho * wo))


def col2im(
    cols: Any, x_shape: tuple[int, ...], kernel: Pair, stride: Pair, padding: Padding, out_hw: Pair
) -> Any:
    """Fold columns back, summing overlaps: the adjoint of im2col.

    cols: (C*kh*kw, N*Ho*Wo) -> (N, C, H, W). One slice addition per tap; the taps of one
    window never overlap each other, so no scatter with repeated indices is needed.
    """
    xp = array_namespace(cols)
    n, c, h, w = x_shape
    (kh, kw), (ho, wo) = kernel, out_hw
    top, bottom, left, right = padding
    cols6 = xp.reshape(cols, (c, kh, kw, n, ho, wo))
    dx = xp.zeros((c, n, h + top + bottom, w + left + right), dtype=cols.dtype, device=device(cols))
    for i in range(kh):
        for j in range(kw):
            dx[tap_index(i, j, out_hw, stride)] += cols6[:, i, j, :, :, :]
    dx = dx[:, :, top : top + h, left : left + w]
    return xp.permute_dims(dx, (1, 0, 2, 3))
