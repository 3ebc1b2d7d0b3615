"""Sliding windows and the memory layout of feature maps, shared by convolution, pooling
and batch norm.

Layout: feature maps are (N, C, H, W) arrays, but the layers that allocate them allocate
channel-major, batch-innermost memory, (C, H, W, N), seen through `permute_dims`. A
convolution's matrix product produces that layout naturally (its columns ordered (H, W,
N)); in it the per-channel view (C, H*W*N) that batch norm and the next convolution need
is a free reshape, and a window's tap (a shifted (H, W) slice, below) reads runs of
contiguous values N times longer (Wo*N at stride 1, N otherwise), which the copies and
comparisons of im2col, col2im and pooling run over several times faster. Nothing depends
on the layout for correctness: any (N, C, H, W) array works, some just cost a copy.

Windows: a k*k window sliding with stride s is read as k*k strided slices ("taps"): tap
(i, j) holds element (i + s*oh, j + s*ow) of every window (oh, ow). Working tap by tap
keeps everything to standard slicing, with no gather, scatter or as_strided.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace, device

from .. import backend

Pair = tuple[int, int]
Padding = tuple[int, int, int, int]  # (top, bottom, left, right)


def output_size(size: int, kernel: int, stride: int, pad: int = 0) -> int:
    """Output length of a window sweep, floor semantics: (size + pad - kernel) // stride + 1."""
    return (size + pad - kernel) // stride + 1


def tap_slice(i: int, out: int, stride: int) -> slice:
    """Positions i + stride*o, o < out, along one axis: tap i of every window."""
    return slice(i, i + stride * (out - 1) + 1, stride)


def tap_index(i: int, j: int, out_hw: Pair, stride: Pair) -> tuple[Any, slice, slice]:
    """The index of tap (i, j) over the last two axes: rows i + s*oh, columns j + s*ow."""
    (ho, wo), (sh, sw) = out_hw, stride
    return (..., tap_slice(i, ho, sh), tap_slice(j, wo, sw))


def tap(x: Any, i: int, j: int, out_hw: Pair, stride: Pair) -> Any:
    """x[..., i + s*oh, j + s*ow] for all (oh, ow): a strided view of the last two axes."""
    return x[tap_index(i, j, out_hw, stride)]


def to_chwn(x: Any) -> Any:
    """(N, C, H, W) -> (C, H, W, N), a view: the layout's own order."""
    return array_namespace(x).permute_dims(x, (1, 2, 3, 0))


def to_nchw(x: Any) -> Any:
    """(C, H, W, N) -> (N, C, H, W), a view: what layers hand on."""
    return array_namespace(x).permute_dims(x, (3, 0, 1, 2))


def batch_innermost(x: Any) -> Any:
    """(N, C, H, W) -> (C, H, W, N) in memory of that order: free for the layers' outputs,
    one copy for other arrays (the input images), after which every tap reads long rows."""
    xp = array_namespace(x)
    chwn = to_chwn(x)
    return xp.reshape(xp.reshape(chwn, (-1,)), chwn.shape)  # a view where the memory allows


def channel_rows(x: Any) -> Any:
    """(N, C, H, W) -> (C, H*W*N): one row per channel (free in the layout)."""
    return array_namespace(x).reshape(to_chwn(x), (x.shape[1], -1))


def from_channel_rows(rows: Any, shape: tuple[int, ...]) -> Any:
    """(C, H*W*N) -> (N, C, H, W) of `shape`, keeping the layout."""
    n, c, h, w = shape
    return to_nchw(array_namespace(rows).reshape(rows, (c, h, w, n)))


def zeros_nchw(like: Any, shape: tuple[int, ...]) -> Any:
    """Zeros of (N, C, H, W) `shape` in the layout, on `like`'s device."""
    xp = array_namespace(like)
    n, c, h, w = shape
    return to_nchw(xp.zeros((c, h, w, n), dtype=like.dtype, device=device(like)))


def _valid(i: int, size: int, out: int, stride: int, before: int) -> tuple[int, int]:
    """Output positions [lo, hi) whose tap i (input index o*stride + i - before) lies inside
    an input of length `size`: the rest read padding."""
    lo = max(0, -((i - before) // stride))  # ceil((before - i) / stride)
    hi = min(out, (size - 1 - i + before) // stride + 1)
    return lo, max(lo, hi)


def _tap_blocks(kernel: Pair, stride: Pair, padding: Padding, in_hw: Pair, out_hw: Pair):
    """For each tap (i, j): (i, j, output rows, output cols, input rows, input cols) of the
    part of the windows that lies inside the input (the rest is zero padding)."""
    (kh, kw), (sh, sw), (h, w), (ho, wo) = kernel, stride, in_hw, out_hw
    top, _, left, _ = padding
    for i in range(kh):
        r0, r1 = _valid(i, h, ho, sh, top)
        for j in range(kw):
            c0, c1 = _valid(j, w, wo, sw, left)
            if r0 < r1 and c0 < c1:
                rows_in = slice(r0 * sh + i - top, (r1 - 1) * sh + i - top + 1, sh)
                cols_in = slice(c0 * sw + j - left, (c1 - 1) * sw + j - left + 1, sw)
                yield i, j, slice(r0, r1), slice(c0, c1), rows_in, cols_in


def im2col(x: Any, kernel: Pair, stride: Pair, padding: Padding, out_hw: Pair, buffer: Any) -> Any:
    """Unfold windows into columns, in `buffer`.

    x: (N, C, H, W) -> buffer: (C, kh, kw, Ho, Wo, N), read as (C*kh*kw, Ho*Wo*N) with
    rows ordered (c, i, j) to match a (O, C, kh, kw) weight reshaped to (O, C*kh*kw).
    Filled tap by tap straight from x, the in-bounds block of each tap; the parts that
    read padding are zeroed by rows and columns of taps, so padding is never
    materialised. Every value of the buffer is written: it may hold anything before.
    """
    x4, in_hw = batch_innermost(x), tuple(x.shape[2:])
    _zero_padding(buffer, kernel, stride, padding, in_hw, out_hw)
    for i, j, rows_out, cols_out, rows_in, cols_in in _tap_blocks(kernel, stride, padding, in_hw, out_hw):
        buffer[:, i, j, rows_out, cols_out, :] = x4[:, rows_in, cols_in, :]
    return buffer


def _zero_padding(buffer: Any, kernel: Pair, stride: Pair, padding: Padding, in_hw: Pair, out_hw: Pair) -> None:
    """Zero the windows' parts in the padding, in buffer (C, kh, kw, Ho, Wo, N): for each
    tap row i the output rows whose tap reads a padding row, all tap columns at once, then
    the same for columns (4 assignments for a 3x3 window with padding 1)."""
    (kh, kw), (sh, sw), (h, w), (ho, wo) = kernel, stride, in_hw, out_hw
    top, _, left, _ = padding
    for i in range(kh):
        r0, r1 = (min(r, ho) for r in _valid(i, h, ho, sh, top))  # a tap may read nothing but padding
        if r0 > 0:
            buffer[:, i, :, :r0, :, :] = 0
        if r1 < ho:
            buffer[:, i, :, r1:, :, :] = 0
    for j in range(kw):
        c0, c1 = (min(c, wo) for c in _valid(j, w, wo, sw, left))
        if c0 > 0:
            buffer[:, :, j, :, :c0, :] = 0
        if c1 < wo:
            buffer[:, :, j, :, c1:, :] = 0


def col2im(cols: Any, x_shape: tuple[int, ...], kernel: Pair, stride: Pair, padding: Padding, out_hw: Pair) -> Any:
    """Fold columns back, summing overlaps: the adjoint of im2col.

    cols: (C*kh*kw, Ho*Wo*N) -> (N, C, H, W) in the layout (see `fold`).
    """
    xp = array_namespace(cols)
    n, c, h, w = x_shape
    (kh, kw), (ho, wo) = kernel, out_hw
    dx = xp.zeros((c, h, w, n), dtype=cols.dtype, device=device(cols))
    backend.fast_path(fold, cols)(xp.reshape(cols, (c, kh, kw, ho, wo, n)), dx, kernel, stride, padding, out_hw)
    return to_nchw(dx)


def fold(cols6: Any, dx4: Any, kernel: Pair, stride: Pair, padding: Padding, out_hw: Pair) -> None:
    """Add the columns cols6 (C, kh, kw, Ho, Wo, N) into dx4 (C, H, W, N) where im2col
    read them from: one slice addition per tap (padding parts dropped); the taps of one
    window never overlap each other, so no scatter with repeated indices is needed."""
    for i, j, rows_out, cols_out, rows_in, cols_in in _tap_blocks(kernel, stride, padding, tuple(dx4.shape[1:3]),
                                                                  out_hw):
        dx4[:, rows_in, cols_in, :] += cols6[:, i, j, rows_out, cols_out, :]
