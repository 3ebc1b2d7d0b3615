"""NumPy's compiled fast paths (see backend.fast_path), for when numba is installed (the
`numba` extra): batch norm, max pooling, the two fused with ReLU (layers/fused.py), im2col,
col2im, GELU and Adam's update as loops that read each value once or twice, where array
operations take a pass over memory for every step of the formula (batch norm's forward
made five, its backward nine). Each function is named like the standard-path
function it replaces and takes and returns the same.

The kernels release the GIL, so worker threads run them at once, and compile on first
use (a second or two), cached on disk for the next process. Sums accumulate in float64,
in an order of the compiler's choosing but the same on every run of one machine:
tests/kernels/test_numba.py holds each function to its standard path: im2col, col2im, Adam
and max pooling where windows tile bit for bit, the fused block's forward too; overlapping
pooling windows, batch norm and the fused block's gradient to rounding.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from typing import Any

import numba
import numpy as np
from numba.misc.appdirs import AppDirs

from .. import distributed, optim
from ..layers import activation, fused, norm, pool, windows
from . import implements


def _cache_folder() -> str | None:
    """Where numba keeps these kernels: NUMBA_CACHE_DIR where set, else numba's user-wide
    cache folder (~/.cache/numba on Linux); None where it cannot write there. Never beside
    this file, numba's first choice: files left in an installed package's folder outlive
    its uninstall and make the folder a namespace package, which hides a later (editable)
    install of xpcnn from every script run outside the checkout."""
    folder = numba.config.CACHE_DIR or AppDirs(appname="numba", appauthor=False).user_cache_dir
    try:
        os.makedirs(folder, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError:
        return None
    return folder


def _compiled(**options: Any) -> Any:
    """numba.njit for these kernels: the GIL released, NumPy's error model, the machine
    code cached on disk in _cache_folder(); where there is none, compiled anew by each
    process, with a warning."""
    folder = _cache_folder()

    def decorate(function: Any) -> Any:
        reason = "no writable cache folder"
        if folder is not None:
            chosen, numba.config.CACHE_DIR = numba.config.CACHE_DIR, folder  # read as the function is decorated
            try:
                return numba.njit(nogil=True, cache=True, error_model="numpy", **options)(function)
            except RuntimeError as exc:  # numba: "cannot cache function ...: no locator available"
                reason = str(exc)
            finally:
                numba.config.CACHE_DIR = chosen
        warnings.warn(f"{reason}: xpcnn's compiled kernels are compiled anew by each process (a few seconds); "
                      "NUMBA_CACHE_DIR can name a writable folder for them", RuntimeWarning, stacklevel=2)
        return numba.njit(nogil=True, error_model="numpy", **options)(function)
    return decorate


# NumPy's error model (a division by zero gives inf or NaN instead of raising) also lets
# the compiler use SIMD, several times faster for Adam's update, and more once its moments
# hold subnormal numbers: each costs a scalar operation a slow microcode assist, but a SIMD
# operation one for a whole vector. reassoc lets a sum be split over SIMD lanes instead of
# one running sum.
_kernel = _compiled()
_reduction = _compiled(fastmath={"reassoc"})


@_reduction
def _row_sums(rows: np.ndarray, sums: np.ndarray) -> None:
    for c in range(rows.shape[0]):
        row, total = rows[c], 0.0
        for i in range(row.shape[0]):
            total += row[i]
        sums[c] = total


@_reduction
def _centred_square_sums(rows: np.ndarray, mean: np.ndarray, sums: np.ndarray) -> None:
    for c in range(rows.shape[0]):
        row, m, total = rows[c], np.float64(mean[c]), 0.0
        for i in range(row.shape[0]):
            d = row[i] - m
            total += d * d
        sums[c] = total


@_kernel
def _scale_centred(rows: np.ndarray, mean: np.ndarray, scale: np.ndarray, shift: np.ndarray,
                   y: np.ndarray) -> None:
    for c in range(rows.shape[0]):
        row, out, m, a, b = rows[c], y[c], mean[c], scale[c], shift[c]
        for i in range(row.shape[0]):
            out[i] = (row[i] - m) * a + b


@_reduction
def _gradient_sums(dy: np.ndarray, rows: np.ndarray, mean: np.ndarray, sums: np.ndarray,
                   centred_sums: np.ndarray) -> None:
    for c in range(rows.shape[0]):
        grad, row, m, total, along = dy[c], rows[c], mean[c], 0.0, 0.0
        for i in range(row.shape[0]):
            g = np.float64(grad[i])
            total += g
            along += g * (row[i] - m)
        sums[c], centred_sums[c] = total, along


@_kernel
def _input_gradient(dy: np.ndarray, rows: np.ndarray, mean: np.ndarray, dy_mean: np.ndarray,
                    a: np.ndarray, b: np.ndarray, dx: np.ndarray) -> None:
    for c in range(rows.shape[0]):
        grad, row, out = dy[c], rows[c], dx[c]
        m, g, ac, bc = mean[c], dy_mean[c], a[c], b[c]
        for i in range(row.shape[0]):
            out[i] = (grad[i] - g) * ac + (row[i] - m) * bc


def _per_row(kernel: Any, rows: np.ndarray, *arrays: np.ndarray) -> np.ndarray:
    """kernel's per-row results (C, 1), summed in float64, in the dtype of rows."""
    sums = np.empty(rows.shape[0])
    kernel(rows, *(np.reshape(a, -1) for a in arrays), sums)
    return np.reshape(sums, (-1, 1)).astype(rows.dtype)


def _statistics(rows: np.ndarray, count: int, eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The batch's mean, biased variance and 1 / sqrt(var + eps) (C, 1) of contiguous
    channel rows, in two passes (the sum, then the centred squares)."""
    (total,) = distributed.batch_sum(_per_row(_row_sums, rows))
    mean = total / count
    (squares,) = distributed.batch_sum(_per_row(_centred_square_sums, rows, mean))
    var = squares / count
    return mean, var, 1 / np.sqrt(var + eps)


@implements(norm.normalise)
def normalise(rows: np.ndarray, gamma: np.ndarray, beta: np.ndarray, count: int,
              eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
    """norm.normalise in three passes over rows (sum, centred squares, y); it saves rows
    and the mean instead of the centred values, which backward recomputes as it reads."""
    y, mean, var, rows, inv_std = _batch_norm(rows, gamma, beta, count, eps, _scale_centred)
    return y, mean, var, (rows, mean, inv_std)


def _batch_norm(rows: np.ndarray, gamma: np.ndarray, beta: np.ndarray, count: int, eps: float,
                scale: Any) -> tuple[np.ndarray, ...]:
    """y, the mean, the variance, contiguous rows and 1 / std: the statistics in two passes,
    then y in one by the kernel `scale` (_scale_centred, or with ReLU)."""
    rows = np.ascontiguousarray(rows)
    mean, var, inv_std = _statistics(rows, count, eps)
    y = np.empty_like(rows)
    scale(rows, *(np.reshape(a, -1) for a in (mean, gamma * inv_std, beta)), y)
    return y, mean, var, rows, inv_std


@implements(norm.normalise_gradient)
def normalise_gradient(dy_rows: np.ndarray, saved: Any, gamma: np.ndarray,
                       count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """norm.normalise_gradient in two passes: the sums of dy and dy * centred, then dx."""
    return _batch_norm_gradient(dy_rows, saved, gamma, count, _gradient_sums, _input_gradient)


def _batch_norm_gradient(dy_rows: np.ndarray, saved: Any, gamma: np.ndarray, count: int, sums_of: Any,
                         input_gradient: Any, *cut: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dx, and the gradients of gamma and beta, in two passes: the kernel `sums_of` (the
    sums of dy and dy * centred), then `input_gradient`; `cut` (ReLU's output) goes to
    both kernels after dy, where they take it."""
    rows, mean, inv_std = saved
    dy_rows = np.ascontiguousarray(dy_rows)
    sums = np.empty((2, rows.shape[0]))
    sums_of(dy_rows, *cut, rows, np.reshape(mean, -1), sums[0], sums[1])
    grad_weight, grad_bias, coefficients = _gradient_terms(sums, mean, inv_std, gamma, count, rows.dtype)
    dx = np.empty_like(dy_rows)
    input_gradient(dy_rows, *cut, rows, *coefficients, dx)
    return dx, grad_weight, grad_bias


def _gradient_terms(sums: np.ndarray, mean: np.ndarray, inv_std: np.ndarray, gamma: np.ndarray, count: int,
                    dtype: Any) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
    """From this process's sums (2, C) of dy and dy * (x - mean): the gradients of gamma
    and beta (C, 1), and what dx = (dy - dy_mean) * a + (x - mean) * b takes per channel,
    (mean, dy_mean, a, b) flat, from the sums over the whole batch (as norm.normalise_gradient)."""
    grad_bias, grad_weight = (np.reshape(s, (-1, 1)).astype(dtype) for s in sums)
    grad_weight *= inv_std  # sum(dy * x_hat)
    total_bias, total_weight = distributed.batch_sum(grad_bias, grad_weight)
    a = gamma * inv_std
    b = -a * inv_std * total_weight / count
    return grad_weight, grad_bias, tuple(np.reshape(v, -1) for v in (mean, total_bias / count, a, b))


# The kernels below index arrays element by element: a view made in an inner loop costs
# numba more than the few values it would cover (2x slower at 32 images).
@_kernel
def _max_pool(x4: np.ndarray, kh: int, kw: int, sh: int, sw: int, y4: np.ndarray, where: np.ndarray) -> None:
    """y4 = the max over each window of x4 (layout (C, H, W, N)); where = the index of its
    first maximum in row-major order, a NaN counting as the maximum (the first NaN)."""
    for c in range(y4.shape[0]):
        for oh in range(y4.shape[1]):
            for ow in range(y4.shape[2]):
                h0, w0 = oh * sh, ow * sw
                for n in range(y4.shape[3]):
                    y4[c, oh, ow, n], where[c, oh, ow, n] = x4[c, h0, w0, n], 0
                for t in range(1, kh * kw):
                    h, w = h0 + t // kw, w0 + t % kw
                    for n in range(y4.shape[3]):
                        v, best = x4[c, h, w, n], y4[c, oh, ow, n]
                        if v > best or (v != v and best == best):
                            y4[c, oh, ow, n], where[c, oh, ow, n] = v, t


@_kernel
def _route_to_maxima(dy4: np.ndarray, where: np.ndarray, kh: int, kw: int, sh: int, sw: int, tiling: bool,
                     dx4: np.ndarray) -> None:
    """Each window's gradient dy4 into dx4 at the tap `where` names: written with the
    window's zeros where windows tile dx4 exactly, else added into zeros."""
    for c in range(dy4.shape[0]):
        for oh in range(dy4.shape[1]):
            for ow in range(dy4.shape[2]):
                for t in range(kh * kw):
                    h, w = oh * sh + t // kw, ow * sw + t % kw
                    for n in range(dy4.shape[3]):
                        if tiling:
                            dx4[c, h, w, n] = dy4[c, oh, ow, n] if where[c, oh, ow, n] == t else 0
                        elif where[c, oh, ow, n] == t:
                            dx4[c, h, w, n] += dy4[c, oh, ow, n]


def _tap_index_dtype(taps: int) -> Any:
    """The dtype of a window's tap index, and of the one past the last that fused pooling
    uses for "no gradient": a byte where it counts them."""
    return np.uint8 if taps <= 255 else np.int32


@implements(pool.max_pool)
def max_pool(x4: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], out_hw: tuple[int, int],
             training: bool) -> tuple[np.ndarray, Any]:
    """pool.max_pool in one pass over x4; it saves the index of each window's first
    maximum (one byte per output up to 255 taps) instead of the standard path's masks."""
    x4 = np.ascontiguousarray(x4)
    (kh, kw), (sh, sw) = kernel, stride
    y4 = np.empty((x4.shape[0], *out_hw, x4.shape[3]), dtype=x4.dtype)
    where = np.empty(y4.shape, dtype=_tap_index_dtype(kh * kw))
    _max_pool(x4, kh, kw, sh, sw, y4, where)
    return y4, ((tuple(x4.shape), where) if training else None)


@implements(pool.max_pool_gradient)
def max_pool_gradient(dy4: np.ndarray, saved: Any, kernel: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """pool.max_pool_gradient in one pass over dy4."""
    x4_shape, where = saved
    tiling = all(pool.windows_tile(k, s, o, n) for k, s, o, n in zip(kernel, stride, dy4.shape[1:3], x4_shape[1:3]))
    dx4 = (np.empty if tiling else np.zeros)(x4_shape, dtype=dy4.dtype)
    _route_to_maxima(np.ascontiguousarray(dy4), where, *kernel, *stride, tiling, dx4)
    return dx4


@_kernel
def _im2col(x4: np.ndarray, sh: int, sw: int, top: int, left: int, cols6: np.ndarray) -> None:
    """cols6 (C, kh, kw, Ho, Wo, N) = the windows of x4 (C, H, W, N), zeros where they
    reach into the padding."""
    h_in, w_in = x4.shape[1], x4.shape[2]
    for c in range(cols6.shape[0]):
        for i in range(cols6.shape[1]):
            for j in range(cols6.shape[2]):
                for oh in range(cols6.shape[3]):
                    h = oh * sh + i - top
                    for ow in range(cols6.shape[4]):
                        w = ow * sw + j - left
                        if 0 <= h < h_in and 0 <= w < w_in:
                            for n in range(cols6.shape[5]):
                                cols6[c, i, j, oh, ow, n] = x4[c, h, w, n]
                        else:  # padding
                            for n in range(cols6.shape[5]):
                                cols6[c, i, j, oh, ow, n] = 0


@implements(windows.im2col)
def im2col(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int, int, int],
           out_hw: tuple[int, int], buffer: np.ndarray) -> np.ndarray:
    """windows.im2col writing each value of the buffer once, its padding too."""
    (sh, sw), (top, _, left, _) = stride, padding
    _im2col(np.ascontiguousarray(windows.batch_innermost(x)), sh, sw, top, left, buffer)
    return buffer


@_kernel
def _fold(cols6: np.ndarray, sh: int, sw: int, top: int, left: int, dx4: np.ndarray) -> None:
    """Add cols6 (C, kh, kw, Ho, Wo, N) into dx4 (C, H, W, N) where im2col read them."""
    h_in, w_in = dx4.shape[1], dx4.shape[2]
    for c in range(cols6.shape[0]):
        for i in range(cols6.shape[1]):
            for j in range(cols6.shape[2]):
                for oh in range(cols6.shape[3]):
                    h = oh * sh + i - top
                    if not 0 <= h < h_in:  # a row of padding
                        continue
                    for ow in range(cols6.shape[4]):
                        w = ow * sw + j - left
                        if 0 <= w < w_in:
                            for n in range(cols6.shape[5]):
                                dx4[c, h, w, n] += cols6[c, i, j, oh, ow, n]


@implements(windows.fold)
def fold(cols6: np.ndarray, dx4: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
         padding: tuple[int, int, int, int], out_hw: tuple[int, int]) -> None:
    """windows.fold one channel at a time, which stays in cache while all its taps are
    added: the same additions in the same order, bit for bit."""
    (sh, sw), (top, _, left, _) = stride, padding
    _fold(np.ascontiguousarray(cols6), sh, sw, top, left, dx4)


@_kernel
def _normalise_pool_relu(x4: np.ndarray, mean: np.ndarray, scale: np.ndarray, shift: np.ndarray, kh: int, kw: int,
                         sh: int, sw: int, y4: np.ndarray, where: np.ndarray) -> None:
    """y4 = max(0, the max over each window of (x4 - mean) * scale + shift), per channel;
    where = the index of the window's first maximum as in _max_pool, or kh * kw where
    ReLU passes no gradient (a maximum <= 0, or NaN, which y4 keeps)."""
    cut = kh * kw
    for c in range(y4.shape[0]):
        m, a, b = mean[c], scale[c], shift[c]
        for oh in range(y4.shape[1]):
            for ow in range(y4.shape[2]):
                h0, w0 = oh * sh, ow * sw
                for n in range(y4.shape[3]):
                    y4[c, oh, ow, n], where[c, oh, ow, n] = (x4[c, h0, w0, n] - m) * a + b, 0
                for t in range(1, cut):
                    h, w = h0 + t // kw, w0 + t % kw
                    for n in range(y4.shape[3]):
                        v, best = (x4[c, h, w, n] - m) * a + b, y4[c, oh, ow, n]
                        if v > best or (v != v and best == best):
                            y4[c, oh, ow, n], where[c, oh, ow, n] = v, t
                for n in range(y4.shape[3]):
                    if not y4[c, oh, ow, n] > 0:
                        where[c, oh, ow, n] = cut
                        if y4[c, oh, ow, n] == y4[c, oh, ow, n]:  # not NaN
                            y4[c, oh, ow, n] = 0


@_reduction
def _routed_gradient_sums(dy4: np.ndarray, where: np.ndarray, x4: np.ndarray, mean: np.ndarray, kh: int, kw: int,
                          sh: int, sw: int, sums: np.ndarray, centred_sums: np.ndarray) -> None:
    """_gradient_sums of the gradient that is dy4 at each window's first maximum (where)
    and 0 elsewhere, read window by window, tap by tap (a select, not a gather: SIMD).
    A window that ReLU cut adds dy4 * 0, as the layers' mask does: a NaN or inf there
    makes its channel's sums NaN, as it would unfused."""
    for c in range(dy4.shape[0]):
        m, total, along = mean[c], 0.0, 0.0
        for oh in range(dy4.shape[1]):
            for ow in range(dy4.shape[2]):
                for n in range(dy4.shape[3]):
                    cut = np.float64(dy4[c, oh, ow, n]) * 0.0 if where[c, oh, ow, n] == kh * kw else 0.0
                    total += cut
                    along += cut
                for t in range(kh * kw):
                    h, w = oh * sh + t // kw, ow * sw + t % kw
                    for n in range(dy4.shape[3]):
                        g = np.float64(dy4[c, oh, ow, n]) if where[c, oh, ow, n] == t else 0.0
                        total += g
                        along += g * (x4[c, h, w, n] - m)
        sums[c], centred_sums[c] = total, along


@_kernel
def _routed_input_gradient(dy4: np.ndarray, where: np.ndarray, x4: np.ndarray, mean: np.ndarray,
                           dy_mean: np.ndarray, a: np.ndarray, b: np.ndarray, kh: int, kw: int, sh: int, sw: int,
                           dx4: np.ndarray) -> None:
    """_input_gradient of that same gradient, written window by window (they tile dx4)."""
    for c in range(dy4.shape[0]):
        m, g, ac, bc = mean[c], dy_mean[c], a[c], b[c]
        for oh in range(dy4.shape[1]):
            for ow in range(dy4.shape[2]):
                for t in range(kh * kw):
                    h, w = oh * sh + t // kw, ow * sw + t % kw
                    for n in range(dy4.shape[3]):
                        d = dy4[c, oh, ow, n] - g if where[c, oh, ow, n] == t else -g  # -g: 0 - g, in dy's dtype
                        dx4[c, h, w, n] = d * ac + (x4[c, h, w, n] - m) * bc


@implements(fused.normalise_pool_relu)
def normalise_pool_relu(x4: np.ndarray, gamma: np.ndarray, beta: np.ndarray, count: int, eps: float,
                        kernel: tuple[int, int], stride: tuple[int, int],
                        out_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
    """fused.normalise_pool_relu in three passes over x4: two for the statistics, one that
    normalises, pools and cuts as it reads, so the normalised values are never stored.
    It saves x4, the mean, 1 / sqrt(var + eps) and where each window's gradient goes
    (windows that tile x4: fused.NormPoolReLU.fits)."""
    x4 = np.ascontiguousarray(x4)
    mean, var, inv_std = _statistics(np.reshape(x4, (x4.shape[0], -1)), count, eps)
    (kh, kw), (sh, sw) = kernel, stride
    y4 = np.empty((x4.shape[0], *out_hw, x4.shape[3]), dtype=x4.dtype)
    where = np.empty(y4.shape, dtype=_tap_index_dtype(kh * kw))
    _normalise_pool_relu(x4, *(np.reshape(v, -1) for v in (mean, gamma * inv_std, beta)), kh, kw, sh, sw, y4, where)
    return y4, mean, var, (x4, mean, inv_std, where)


@implements(fused.scale_pool_relu)
def scale_pool_relu(x4: np.ndarray, scale: np.ndarray, shift: np.ndarray, kernel: tuple[int, int],
                    stride: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """fused.scale_pool_relu in one pass over x4 ((x - 0) * scale + shift: the standard
    path's x * scale + shift exactly)."""
    x4 = np.ascontiguousarray(x4)
    (kh, kw), (sh, sw) = kernel, stride
    y4 = np.empty((x4.shape[0], *out_hw, x4.shape[3]), dtype=x4.dtype)
    where = np.empty(y4.shape, dtype=_tap_index_dtype(kh * kw))  # unused: no gradient
    _normalise_pool_relu(x4, np.zeros(x4.shape[0], x4.dtype), *(np.reshape(v, -1) for v in (scale, shift)),
                         kh, kw, sh, sw, y4, where)
    return y4


@implements(fused.normalise_pool_relu_gradient)
def normalise_pool_relu_gradient(dy4: np.ndarray, saved: Any, gamma: np.ndarray, count: int,
                                 kernel: tuple[int, int], stride: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """fused.normalise_pool_relu_gradient in two passes, each reading dy4 at the windows'
    first maxima: the sums for gamma and beta, then dx4."""
    x4, mean, inv_std, where = saved
    dy4 = np.ascontiguousarray(dy4)
    (kh, kw), (sh, sw) = kernel, stride
    sums = np.empty((2, x4.shape[0]))
    _routed_gradient_sums(dy4, where, x4, np.reshape(mean, -1), kh, kw, sh, sw, sums[0], sums[1])
    grad_weight, grad_bias, coefficients = _gradient_terms(sums, mean, inv_std, gamma, count, x4.dtype)
    dx4 = np.empty_like(x4)
    _routed_input_gradient(dy4, where, x4, *coefficients, kh, kw, sh, sw, dx4)
    return dx4, grad_weight, grad_bias


@_kernel
def _scale_centred_relu(rows: np.ndarray, mean: np.ndarray, scale: np.ndarray, shift: np.ndarray,
                        y: np.ndarray) -> None:
    """y = max((rows - mean) * scale + shift, 0) per channel row, as NumPy's maximum
    gives it: a NaN kept, -0.0 kept."""
    for c in range(rows.shape[0]):
        row, out, m, a, b = rows[c], y[c], mean[c], scale[c], shift[c]
        for i in range(row.shape[0]):
            v = (row[i] - m) * a + b
            out[i] = v if (v >= 0 or v != v) else 0


@implements(fused.scale_relu)
def scale_relu(rows: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """fused.scale_relu in one pass ((x - 0) * scale + shift: the standard's arithmetic)."""
    rows = np.ascontiguousarray(rows)
    y = np.empty_like(rows)
    _scale_centred_relu(rows, np.zeros(rows.shape[0], rows.dtype), *(np.reshape(v, -1) for v in (scale, shift)), y)
    return y


@implements(fused.normalise_relu)
def normalise_relu(rows: np.ndarray, gamma: np.ndarray, beta: np.ndarray, count: int,
                   eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
    """fused.normalise_relu in three passes over rows, as normalise's, ReLU in the last;
    it saves rows, the mean and y (whose sign is ReLU's mask)."""
    y, mean, var, rows, inv_std = _batch_norm(rows, gamma, beta, count, eps, _scale_centred_relu)
    return y, mean, var, (rows, mean, inv_std, y)


@_reduction
def _cut_gradient_sums(dy: np.ndarray, y: np.ndarray, rows: np.ndarray, mean: np.ndarray, sums: np.ndarray,
                       centred_sums: np.ndarray) -> None:
    """_gradient_sums of dy times ReLU's mask (y > 0)."""
    for c in range(rows.shape[0]):
        grad, out, row, m, total, along = dy[c], y[c], rows[c], mean[c], 0.0, 0.0
        for i in range(row.shape[0]):
            g = np.float64(grad[i] if out[i] > 0 else grad[i] - grad[i])  # dy * 0: NaN stays NaN
            total += g
            along += g * (row[i] - m)
        sums[c], centred_sums[c] = total, along


@_kernel
def _cut_input_gradient(dy: np.ndarray, y: np.ndarray, rows: np.ndarray, mean: np.ndarray, dy_mean: np.ndarray,
                        a: np.ndarray, b: np.ndarray, dx: np.ndarray) -> None:
    """_input_gradient of dy times ReLU's mask (y > 0)."""
    for c in range(rows.shape[0]):
        grad, out, row, result = dy[c], y[c], rows[c], dx[c]
        m, g, ac, bc = mean[c], dy_mean[c], a[c], b[c]
        for i in range(row.shape[0]):
            cut = grad[i] if out[i] > 0 else grad[i] - grad[i]  # dy * 0 in dy's dtype: NaN stays NaN
            result[i] = (cut - g) * ac + (row[i] - m) * bc


@implements(fused.normalise_relu_gradient)
def normalise_relu_gradient(dy_rows: np.ndarray, saved: Any, gamma: np.ndarray,
                            count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """fused.normalise_relu_gradient in two passes, ReLU's mask applied as dy is read."""
    *batch_norm, y = saved
    return _batch_norm_gradient(dy_rows, batch_norm, gamma, count, _cut_gradient_sums, _cut_input_gradient, y)


DECAY = {None: 0, "l2": 1, "decoupled": 2}  # adam_update's decay, as the kernel takes it


@_kernel
def _adam(param: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray, coefficients: np.ndarray,
          decay: int) -> None:
    beta1, rest1, beta2, rest2, correction2, step_size, eps, rate, shrink = coefficients
    for i in range(param.shape[0]):
        p, g = param[i], grad[i]
        if decay == 2:
            p *= shrink
        elif decay == 1:
            g = g + rate * p
        m[i] = m[i] * beta1 + rest1 * g
        v[i] = v[i] * beta2 + rest2 * (g * g)
        param[i] = p - m[i] / (np.sqrt(v[i]) / correction2 + eps) * step_size


@implements(optim.adam_update)
def adam_update(param: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray, coefficients: list[Any],
                decay: str | None) -> None:
    """optim.adam_update in one pass over the four arrays instead of about ten, the same
    operations in the same order, bit for bit; arrays not in C order or not all of one
    dtype take the standard path."""
    arrays = (param, grad, m, v)
    if not all(a.flags.c_contiguous and a.dtype == param.dtype for a in arrays):
        optim.adam_update(param, grad, m, v, coefficients, decay)
        return
    flat = [np.reshape(a, -1) for a in arrays]
    _adam(*flat, np.asarray(coefficients, dtype=param.dtype), DECAY[decay])


def _in_memory_order(like: np.ndarray, *arrays: np.ndarray) -> tuple[tuple[int, ...], list[np.ndarray]]:
    """The axis order in which `like` lies in memory (largest stride first), and each of
    `arrays` flattened in that order: a view where its memory allows, else a copy."""
    order = tuple(int(axis) for axis in np.argsort([-abs(stride) for stride in like.strides], kind="stable"))
    return order, [np.ravel(np.transpose(array, order)) for array in arrays]


def _in_layout(like: np.ndarray, order: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A new array shaped as `like` whose memory follows `order`, and its flat view."""
    flat = np.empty(like.size, like.dtype)
    return np.transpose(flat.reshape([like.shape[axis] for axis in order]), np.argsort(order)), flat


@_kernel
def _tanh(u: Any, one: Any) -> Any:
    """tanh(u) from exp(-2|u|), which the compiler vectorises (its tanh it does not), in
    u's own precision (`one` is 1 in it): within two ulps of NumPy's."""
    e = np.exp(-(one + one) * abs(u))
    t = (one - e) / (one + e)
    return t if u >= 0 else -t


@_kernel
def _clipped(v: Any, bound: Any) -> Any:
    """v clipped to +-bound; NaN stays NaN."""
    return v if abs(v) <= bound else (bound if v > 0 else (-bound if v < 0 else v))


@_kernel
def _gelu(x: np.ndarray, y: np.ndarray, t: np.ndarray, keep: bool, k: Any) -> None:
    """y = 0.5 x (1 + t), t = tanh(scale (c + cubic c^3)) with c = x clipped to +-bound;
    t kept where `keep`. Flat arrays; the constants `k` in their dtype (_gelu_constants)."""
    bound, scale, cubic, half, one = k
    for i in range(x.shape[0]):
        v = x[i]
        near = _clipped(v, bound)
        ti = _tanh(scale * (near + cubic * (near * near * near)), one)
        y[i] = half * v * (one + ti)
        if keep:
            t[i] = ti


def _gelu_constants(dtype: np.dtype) -> tuple[Any, ...]:
    """(bound, scale, cubic, 1/2, 1) in `dtype`: numba computes a float32 times a Python
    float or int in float64, which would not vectorise."""
    values = (activation.GELU_BOUND, activation.GELU_SCALE, activation.GELU_CUBIC, 0.5, 1.0)
    return tuple(dtype.type(value) for value in values)


@implements(activation.gelu)
def gelu(x: np.ndarray, training: bool) -> tuple[np.ndarray, Any]:
    """activation.gelu in one pass; it keeps x and t (a view of the input and one array)."""
    order, (flat_x,) = _in_memory_order(x, x)
    y, flat_y = _in_layout(x, order)
    t, flat_t = _in_layout(x, order) if training else (None, np.empty(0, x.dtype))
    _gelu(flat_x, flat_y, flat_t, training, _gelu_constants(x.dtype))
    return y, ((x, t) if training else None)


@_kernel
def _gelu_gradient(dy: np.ndarray, x: np.ndarray, t: np.ndarray, dx: np.ndarray, k: Any) -> None:
    bound, scale, cubic, half, one = k
    for i in range(dy.shape[0]):
        near, ti = _clipped(x[i], bound), t[i]
        slope = scale * (one + (cubic + cubic + cubic) * (near * near))
        dx[i] = dy[i] * (half * (one + ti) + half * near * (one - ti * ti) * slope)


@implements(activation.gelu_gradient)
def gelu_gradient(dy: np.ndarray, saved: Any) -> np.ndarray:
    """activation.gelu_gradient in one pass over dy, x and t, in t's memory order."""
    x, t = saved
    order, flats = _in_memory_order(t, dy, x, t)
    dx, flat_dx = _in_layout(t, order)
    _gelu_gradient(*flats, flat_dx, _gelu_constants(t.dtype))
    return dx
