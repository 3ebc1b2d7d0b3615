"""Sliding windows and the memory layout of feature maps, shared by convolution, pooling
and batch norm.

Layout: feature maps are (N, C, H, W) arrays, but the layers that allocate them allocate
channel-major memory, (C, N, H, W) seen through `permute_dims`. A convolution's matrix
product produces that layout naturally, and in it the per-channel view (C, N*H*W) that
batch norm and the next convolution need is a free reshape instead of a copy. Nothing
depends on it for correctness: any (N, C, H, W) array works, some just cost a copy.

Windows: a k*k window sliding with stride s is read as k*k strided slices ("taps"): tap
(i, j) holds element (i + s*oh, j + s*ow) of every window (oh, ow). Working tap by tap
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


def swap_batch_and_channels(x: Any) -> Any:
    """(N, C, H, W) <-> (C, N, H, W): a view with the first two axes exchanged, its own
    inverse. Channel-major memory seen as (N, C, H, W) becomes contiguous (C, N, H, W)."""
    return array_namespace(x).permute_dims(x, (1, 0, 2, 3))


def channel_rows(x: Any) -> Any:
    """(N, C, H, W) -> (C, N*H*W): one row per channel (free for channel-major memory)."""
    xp = array_namespace(x)
    return xp.reshape(swap_batch_and_channels(x), (x.shape[1], -1))


def from_channel_rows(rows: Any, shape: tuple[int, ...]) -> Any:
    """(C, N*H*W) -> (N, C, H, W) of `shape`, keeping the channel-major memory."""
    n, c, h, w = shape
    return swap_batch_and_channels(array_namespace(rows).reshape(rows, (c, n, h, w)))


def zeros_nchw(like: Any, shape: tuple[int, ...]) -> Any:
    """Zeros of (N, C, H, W) `shape` in channel-major memory, on `like`'s device."""
    xp = array_namespace(like)
    n, c, h, w = shape
    return swap_batch_and_channels(xp.zeros((c, n, h, w), dtype=like.dtype, device=device(like)))


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

    x: (N, C, H, W) -> buffer: (C, kh, kw, N, Ho, Wo), read as (C*kh*kw, N*Ho*Wo) with
    rows ordered (c, i, j) to match a (O, C, kh, kw) weight reshaped to (O, C*kh*kw).
    Filled tap by tap straight from x: only the in-bounds block of each tap is written,
    so padding is never materialised; the buffer's padding positions must be zero.
    """
    for i, j, rows_out, cols_out, rows_in, cols_in in _tap_blocks(kernel, stride, padding, tuple(x.shape[2:]), out_hw):
        buffer[:, i, j, :, rows_out, cols_out] = swap_batch_and_channels(x)[:, :, rows_in, cols_in]
    return buffer


def col2im(cols: Any, x_shape: tuple[int, ...], kernel: Pair, stride: Pair, padding: Padding, out_hw: Pair) -> Any:
    """Fold columns back, summing overlaps: the adjoint of im2col.

    cols: (C*kh*kw, N*Ho*Wo) -> (N, C, H, W) in channel-major memory. One slice addition
    per tap (padding parts dropped); the taps of one window never overlap each other, so
    no scatter with repeated indices is needed.
    """
    xp = array_namespace(cols)
    n, c, h, w = x_shape
    (kh, kw), (ho, wo) = kernel, out_hw
    cols6 = xp.reshape(cols, (c, kh, kw, n, ho, wo))
    dx = xp.zeros((c, n, h, w), dtype=cols.dtype, device=device(cols))
    for i, j, rows_out, cols_out, rows_in, cols_in in _tap_blocks(kernel, stride, padding, (h, w), out_hw):
        dx[:, :, rows_in, cols_in] += cols6[:, i, j, :, rows_out, cols_out]
    return swap_batch_and_channels(dx)
