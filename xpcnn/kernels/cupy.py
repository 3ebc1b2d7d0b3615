"""CuPy's fast paths (see backend.fast_path): the layers' standard functions as CUDA kernels
of our own (kernels/cupy.cu), so that a step launches a few kernels where CuPy's
array operations launch one for every operation of a formula (a lenet step: about 50
launches instead of 338, each costing some 10-20 us of Python and driver time).

Batch norm, alone, with ReLU and fused with max pooling and ReLU (layers/fused.py): one
kernel for the statistics and one for y, one for the gradient's sums and one for dx, one
for the running statistics; max pooling, im2col, col2im, ReLU, dropout's mask, GELU and
Adam's update one kernel each; softmax cross-entropy and its gradient one. Matrix products
stay cuBLAS's, except in every training step of a run with CUDA graphs
(capture.recordable): a recording cannot hold cuBLAS calls on CuPy, so there a product
kernel of our own. Each function is named like the standard function it replaces and
takes and returns the same.

The kernels compile on first use (NVRTC, a second or so; CuPy 14.2 and later keep them on
disk for the next process, older versions compile them in each), so importing this module
needs no GPU. Element-wise work is the standard path's bit for
bit: the same operations in the same order, compiled without fused multiply-adds
(--fmad=false) and, as CuPy compiles its own kernels, flushing float32 subnormals
(-ftz=true). Channel sums run in double and add up in another order than CuPy's: batch
norm and the loss differ from the standard path by rounding. A batch split over processes
(count larger than the values here) takes the standard path for batch norm: its
statistics need the other processes' sums between the passes.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import cupy
import numpy as np

from .. import capture, losses, optim
from ..layers import activation, dropout, fused, norm, pool, product, windows
from . import implements

BLOCK = 256  # threads a block, in every kernel but the product's
PRODUCT_DEPTH, PRODUCT_THREADS = 16, 256  # the product's depth of k a pass through shared memory, threads a block
PRODUCT_GEOMETRY = {"DEPTH": PRODUCT_DEPTH, "PRODUCT_THREADS": PRODUCT_THREADS}  # for cupy.cu
# The product's tiles of out, (rows, columns), 16 values a thread, squarest first: the thin
# ones serve the products of 16 or 32 channels (a convolution's forward: (O, K) @ (K, M);
# its weight gradient: (K, M) @ (M, O)), where 64 x 64 tiles would multiply zeros 4 times in 5.
PRODUCT_TILES = ((64, 64), (32, 128), (128, 32), (16, 256), (256, 16))
OPTIONS = ("--fmad=false", f"-DBLOCK={BLOCK}",  # CuPy adds -ftz=true, as to its own kernels
           *(f"-D{name}={value}" for name, value in PRODUCT_GEOMETRY.items()))
SOURCE = (Path(__file__).parent / "cupy.cu").read_text()
MAX_BLOCKS = 1 << 16  # a grid-strided kernel covers the rest
ITEMS_PER_THREAD = 16  # what a reduction's thread sums at least, before blocks share a channel
MAX_CHANNEL_BLOCKS = 256
# Blocks a product aims at: one with fewer tiles splits its k into shares. A constant, not
# the GPU's count of multiprocessors, so that the sums' order is the same on every GPU.
PRODUCT_BLOCKS = 256
MAX_GRID_Y = 65535  # CUDA's limit on a grid's second dimension: a product's row tiles times its shares
# Kernel -> the C++ template arguments each of its parameters is instantiated for (T, then W,
# L or the product's tile).
FLOATS = ("float", "double")
TEMPLATES: dict[str, tuple[tuple[str, ...], ...]] = {
    **{name: (FLOATS,) for name in ("statistics", "scale_rows", "gradient_sums", "input_gradient", "running_update",
                                    "im2col", "fold", "adam", "relu", "dropout", "gelu", "gelu_gradient",
                                    "add_shares")},
    "product": (FLOATS, tuple(f"{rows}, {cols}" for rows, cols in PRODUCT_TILES)),
    **{name: (FLOATS, ("unsigned char", "int")) for name in ("pool", "pool_gradient", "pooled_gradient_sums",
                                                             "pooled_input_gradient")},
    "softmax_cross_entropy": (FLOATS, ("int", "long long")),
}
TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double", np.dtype(np.uint8): "unsigned char",
         np.dtype(np.int32): "int", np.dtype(np.int64): "long long"}
DECAY = {None: 0, "l2": 1, "decoupled": 2}  # adam_update's decay, as the kernel takes it


def _name(kernel: str, *types: str) -> str:
    """The C++ name of one instance, as NVRTC and CuPy's RawModule look it up."""
    return f"{kernel}<{', '.join(types)}>"


def _names() -> list[str]:
    """Every instance the module compiles."""
    names = []
    for kernel, parameters in TEMPLATES.items():
        combos: list[tuple[str, ...]] = [()]
        for choices in parameters:
            combos = [(*combo, choice) for combo in combos for choice in choices]
        names += [_name(kernel, *combo) for combo in combos]
    return names


@functools.cache
def _module() -> Any:
    """All the kernels, compiled on first use (CuPy loads them on each device it runs on)."""
    return cupy.RawModule(code=SOURCE, options=OPTIONS, name_expressions=_names())


@functools.cache
def _kernel(name: str, *arguments: Any) -> Any:
    """Kernel `name` instantiated for `arguments` (dtypes, or C++ text such as a tile's
    "16, 256"), looked up once: RawModule.get_function makes a new RawKernel and asks the
    driver for it at every call, microseconds a launch. A RawKernel keeps a function per
    device, so one serves every GPU."""
    return _module().get_function(_name(name, *(a if isinstance(a, str) else TYPES[np.dtype(a)] for a in arguments)))


def _run(name: str, dtypes: tuple[Any, ...], total: int, *args: Any) -> None:
    """Kernel `name`, instantiated for `dtypes`, over `total` items (grid-strided)."""
    blocks = int(min(max(1, -(-total // BLOCK)), MAX_BLOCKS))
    _kernel(name, *dtypes)((blocks,), (BLOCK,), args)


_COUNTERS: dict[int, Any] = {}
_OUTGROWN: list[Any] = []  # counters replaced by larger ones: a recorded step may still count in them


def _counters(channels: int) -> Any:
    """One zeroed counter per channel on the current device, for the reductions, whose last
    blocks leave them zeroed. Shared by all the reductions of a device: they must run one
    after another, as on one stream (worker threads split a batch, which sends batch norm
    to the standard path; a recorded step replays its kernels in order on one stream)."""
    device = cupy.cuda.runtime.getDevice()
    counters = _COUNTERS.get(device)
    if counters is None or counters.size < channels:
        if capture.recording():  # their zeroing would be recorded, not run: wrong counts if the recording fails
            raise RuntimeError(f"{channels} reduction counters are made by a step's direct run, not its recording")
        if counters is not None:
            _OUTGROWN.append(counters)
        counters = _COUNTERS[device] = cupy.zeros(max(channels, 1024), dtype=np.uint32)
    return counters


def _per_channel(name: str, dtypes: tuple[Any, ...], channels: int, items: int, *args: Any) -> None:
    """Reduction kernel `name` over `items` per channel: a grid of (blocks, channels),
    given its partial sums and the counters after `args`."""
    blocks = int(min(max(1, -(-items // (BLOCK * ITEMS_PER_THREAD))), MAX_CHANNEL_BLOCKS))
    partials = cupy.empty(2 * blocks * channels, dtype=np.float64)
    _kernel(name, *dtypes)((blocks, channels), (BLOCK,), (*args, partials, _counters(channels)))


def _i64(value: int) -> Any:
    return np.int64(value)


def _i32(value: int) -> Any:
    return np.int32(value)


def _f64(value: float) -> Any:
    return np.float64(value)


def _flat(a: Any) -> Any:
    """a in C order (itself where it is)."""
    return cupy.ascontiguousarray(a)


def _by_standard(x: Any, count: int) -> bool:
    """Whether the standard path takes a batch norm of x (C, ...): the batch's `count`
    values per channel are not all in x (some are in other processes, xpcnn.distributed),
    x is empty (a kernel would read a channel's first value at a null pointer), or it has
    more channels than a grid's y counts (one channel a row of blocks)."""
    return count != x.size // max(1, x.shape[0]) or x.size == 0 or x.shape[0] > MAX_GRID_Y


def _standard(result: tuple[Any, ...]) -> tuple[Any, ...]:
    """A standard batch norm forward's result, what it saved marked for the gradient."""
    *values, saved = result
    return (*values, (None, saved))


def _statistics(rows: Any, gamma: Any, count: int, eps: float) -> list[Any]:
    """The mean, variance, 1 / sqrt(var + eps) and gamma / sqrt(var + eps), each (C, 1),
    of contiguous channel rows (C, M)."""
    out = [cupy.empty((rows.shape[0], 1), dtype=rows.dtype) for _ in range(4)]
    _per_channel("statistics", (rows.dtype,), rows.shape[0], rows.shape[1], rows, _i64(count), _flat(gamma),
                 _f64(eps), *out)
    return out


def _batch_norm(rows: Any, gamma: Any, beta: Any, count: int, eps: float, relu: bool) -> tuple[Any, ...]:
    """y (cut by ReLU if `relu`), the mean, the variance, contiguous rows and 1 / std."""
    rows = _flat(rows)
    mean, var, inv_std, scale = _statistics(rows, gamma, count, eps)
    y = cupy.empty_like(rows)
    _run("scale_rows", (rows.dtype,), rows.size, rows, _i64(rows.shape[1]), _i64(rows.size), mean, scale,
         _flat(beta), _i32(1), _i32(relu), y)
    return y, mean, var, rows, inv_std


@implements(norm.normalise)
def normalise(rows: Any, gamma: Any, beta: Any, count: int, eps: float) -> tuple[Any, Any, Any, Any]:
    """norm.normalise in two kernels (the statistics, then y); it saves rows and the mean
    instead of the centred values, which the gradient recomputes as it reads."""
    if _by_standard(rows, count):
        return _standard(norm.normalise(rows, gamma, beta, count, eps))
    y, mean, var, rows, inv_std = _batch_norm(rows, gamma, beta, count, eps, relu=False)
    return y, mean, var, (rows, mean, inv_std)


def _batch_norm_gradient(dy_rows: Any, saved: Any, y: Any, gamma: Any, count: int) -> tuple[Any, Any, Any]:
    """dx and the gradients of gamma and beta (C, 1) in two kernels: the sums (and from
    them the per-channel terms), then dx; dy cut by ReLU where its output y is given."""
    rows, mean, inv_std = saved
    dy_rows = _flat(dy_rows)
    channels, values = rows.shape
    cut = (_i32(1), y) if y is not None else (_i32(0), dy_rows)  # a stand-in, never read
    terms = cupy.empty((5, channels), dtype=rows.dtype)
    _per_channel("gradient_sums", (rows.dtype,), channels, values, dy_rows, cut[1], cut[0], rows, _i64(count), mean,
                 inv_std, _flat(gamma), terms)
    dx = cupy.empty_like(rows)
    _run("input_gradient", (rows.dtype,), rows.size, dy_rows, cut[1], cut[0], rows, _i64(values), _i64(rows.size),
         mean, terms, _i64(channels), dx)
    return dx, cupy.reshape(terms[0], (channels, 1)), cupy.reshape(terms[1], (channels, 1))


@implements(norm.normalise_gradient)
def normalise_gradient(dy_rows: Any, saved: Any, gamma: Any, count: int) -> tuple[Any, Any, Any]:
    """norm.normalise_gradient in two kernels: the sums of dy and dy * centred, then dx."""
    if saved[0] is None:  # the standard forward's: a split batch
        return norm.normalise_gradient(dy_rows, saved[1], gamma, count)
    return _batch_norm_gradient(dy_rows, saved, None, gamma, count)


@implements(fused.normalise_relu)
def normalise_relu(rows: Any, gamma: Any, beta: Any, count: int, eps: float) -> tuple[Any, Any, Any, Any]:
    """fused.normalise_relu in two kernels, as normalise's, ReLU in the second; it saves
    rows, the mean and y (whose sign is ReLU's mask)."""
    if _by_standard(rows, count):
        return _standard(fused.normalise_relu(rows, gamma, beta, count, eps))
    y, mean, var, rows, inv_std = _batch_norm(rows, gamma, beta, count, eps, relu=True)
    return y, mean, var, (rows, mean, inv_std, y)


@implements(fused.normalise_relu_gradient)
def normalise_relu_gradient(dy_rows: Any, saved: Any, gamma: Any, count: int) -> tuple[Any, Any, Any]:
    """fused.normalise_relu_gradient in two kernels, ReLU's mask applied as dy is read."""
    if saved[0] is None:
        return fused.normalise_relu_gradient(dy_rows, saved[1], gamma, count)
    *batch_norm, y = saved
    return _batch_norm_gradient(dy_rows, batch_norm, y, gamma, count)


@implements(fused.scale_relu)
def scale_relu(rows: Any, scale: Any, shift: Any) -> Any:
    """fused.scale_relu in one kernel (x * scale + shift, then ReLU)."""
    rows = _flat(rows)
    y = cupy.empty_like(rows)
    scale = _flat(scale)
    _run("scale_rows", (rows.dtype,), rows.size, rows, _i64(rows.shape[1]), _i64(rows.size), scale, scale,
         _flat(shift), _i32(0), _i32(1), y)
    return y


@implements(norm.update_running)
def update_running(running_mean: Any, running_var: Any, mean: Any, var: Any, momentum: float, count: int) -> None:
    """norm.update_running in one kernel; buffers not in C order take the standard path."""
    if not (running_mean.flags.c_contiguous and running_var.flags.c_contiguous):
        norm.update_running(running_mean, running_var, mean, var, momentum, count)
        return
    channels = running_mean.shape[0]
    _run("running_update", (running_mean.dtype,), channels, running_mean, running_var, _flat(mean), _flat(var),
         _i64(channels), _f64(1 - momentum), _f64(momentum), _f64(count / (count - 1)))


def _tap_index_dtype(kernel: tuple[int, int]) -> Any:
    """The dtype of a window's tap index, and of the one past the last that marks a window
    ReLU cut: a byte where it counts them."""
    return np.uint8 if kernel[0] * kernel[1] <= 255 else np.int32


def _pooling(x4_shape: tuple[int, ...], kernel: tuple[int, int], stride: tuple[int, int],
             out_hw: tuple[int, ...]) -> tuple[Any, ...]:
    """A pooling's shape as the kernels take it (POOLING in cupy.cu)."""
    _, h, w, n = x4_shape
    return (*map(_i64, (h, w, n, *out_hw)), *map(_i32, (*kernel, *stride)))


def _pool(x4: Any, kernel: tuple[int, int], stride: tuple[int, int], out_hw: tuple[int, int], affine: Any,
          relu: bool, keep: bool) -> tuple[Any, Any]:
    """y4 and, if `keep`, where (the first maxima) of kernel `pool` over contiguous x4;
    affine: (mean or None, scale, shift) applied before the max, or None."""
    y4 = cupy.empty((x4.shape[0], *out_hw, x4.shape[3]), dtype=x4.dtype)
    where = cupy.empty(y4.shape if keep else (1,), dtype=_tap_index_dtype(kernel))
    mean, scale, shift = (None, x4, x4) if affine is None else affine  # x4: stand-ins, never read
    centred = mean is not None
    _run("pool", (x4.dtype, where.dtype), y4.size, x4, *_pooling(x4.shape, kernel, stride, out_hw),
         _flat(mean) if centred else x4, _flat(scale), _flat(shift), _i32(affine is not None), _i32(centred),
         _i32(relu), _i64(y4.size), y4, where, _i32(keep))
    return y4, (where if keep else None)


@implements(pool.max_pool)
def max_pool(x4: Any, kernel: tuple[int, int], stride: tuple[int, int], out_hw: tuple[int, int],
             training: bool) -> tuple[Any, Any]:
    """pool.max_pool in one kernel; it saves the index of each window's first maximum
    (one byte per output up to 255 taps) instead of the standard path's masks."""
    x4 = _flat(x4)
    y4, where = _pool(x4, kernel, stride, out_hw, None, relu=False, keep=training)
    return y4, ((tuple(x4.shape), where) if training else None)


@implements(pool.max_pool_gradient)
def max_pool_gradient(dy4: Any, saved: Any, kernel: tuple[int, int], stride: tuple[int, int]) -> Any:
    """pool.max_pool_gradient in one kernel, which gathers each value's gradient from the
    windows that hold it."""
    shape, where = saved
    dy4 = _flat(dy4)
    dx4 = cupy.empty(shape, dtype=dy4.dtype)
    _run("pool_gradient", (dy4.dtype, where.dtype), dx4.size, dy4, where,
         *_pooling(shape, kernel, stride, dy4.shape[1:3]), _i64(dx4.size), dx4)
    return dx4


@implements(fused.normalise_pool_relu)
def normalise_pool_relu(x4: Any, gamma: Any, beta: Any, count: int, eps: float, kernel: tuple[int, int],
                        stride: tuple[int, int], out_hw: tuple[int, int]) -> tuple[Any, Any, Any, Any]:
    """fused.normalise_pool_relu in two kernels: the statistics, then one that normalises,
    pools and cuts as it reads, so the normalised values are never stored. It saves x4,
    the mean, 1 / sqrt(var + eps) and where each window's gradient goes (windows that
    tile x4: fused.NormPoolReLU.fits)."""
    if _by_standard(x4, count):
        return _standard(fused.normalise_pool_relu(x4, gamma, beta, count, eps, kernel, stride, out_hw))
    x4 = _flat(x4)
    mean, var, inv_std, scale = _statistics(cupy.reshape(x4, (x4.shape[0], -1)), gamma, count, eps)
    y4, where = _pool(x4, kernel, stride, out_hw, (mean, scale, beta), relu=True, keep=True)
    return y4, mean, var, (x4, mean, inv_std, where)


@implements(fused.scale_pool_relu)
def scale_pool_relu(x4: Any, scale: Any, shift: Any, kernel: tuple[int, int], stride: tuple[int, int],
                    out_hw: tuple[int, int]) -> Any:
    """fused.scale_pool_relu in one kernel (x * scale + shift, pooled, cut)."""
    return _pool(_flat(x4), kernel, stride, out_hw, (None, scale, shift), relu=True, keep=False)[0]


@implements(fused.normalise_pool_relu_gradient)
def normalise_pool_relu_gradient(dy4: Any, saved: Any, gamma: Any, count: int, kernel: tuple[int, int],
                                 stride: tuple[int, int]) -> tuple[Any, Any, Any]:
    """fused.normalise_pool_relu_gradient in two kernels, each reading dy4 at the windows'
    first maxima: the sums for gamma and beta (and dx's terms), then dx4."""
    if saved[0] is None:
        return fused.normalise_pool_relu_gradient(dy4, saved[1], gamma, count, kernel, stride)
    x4, mean, inv_std, where = saved
    dy4, channels, taps = _flat(dy4), x4.shape[0], kernel[0] * kernel[1]
    pooling = _pooling(x4.shape, kernel, stride, dy4.shape[1:3])
    terms = cupy.empty((5, channels), dtype=x4.dtype)
    _per_channel("pooled_gradient_sums", (x4.dtype, where.dtype), channels, where.size // channels * taps, dy4,
                 where, x4, *pooling, mean, inv_std, _flat(gamma), _i64(count), terms)
    dx4 = cupy.empty_like(x4)
    _run("pooled_input_gradient", (x4.dtype, where.dtype), where.size * taps, dy4, where, x4, *pooling, mean,
         terms, _i64(channels), dx4)
    return dx4, cupy.reshape(terms[0], (channels, 1)), cupy.reshape(terms[1], (channels, 1))


def _windows(x_shape: tuple[int, ...], strides: tuple[int, ...], kernel: tuple[int, int], stride: tuple[int, int],
             padding: tuple[int, int, int, int], out_hw: tuple[int, int]) -> tuple[Any, ...]:
    """A convolution's windows as the kernels take them (WINDOWS in cupy.cu): x (N, C,
    H, W) with its element strides."""
    top, _, left, _ = padding
    return (*map(_i64, (*x_shape, *out_hw, *strides)), *map(_i32, (*kernel, *stride, top, left)))


@implements(windows.im2col)
def im2col(x: Any, kernel: tuple[int, int], stride: tuple[int, int], padding: windows.Padding,
           out_hw: tuple[int, int], buffer: Any) -> Any:
    """windows.im2col in one kernel that reads x where it lies (no copy to the layout)
    and writes every value of the buffer, padding included; a buffer not in C order takes
    the standard path."""
    if not buffer.flags.c_contiguous or buffer.dtype != x.dtype:
        return windows.im2col(x, kernel, stride, padding, out_hw, buffer)
    strides = tuple(s // x.itemsize for s in x.strides)
    _run("im2col", (x.dtype,), buffer.size, x, *_windows(tuple(x.shape), strides, kernel, stride, padding, out_hw),
         _i64(buffer.size), buffer)
    return buffer


@implements(windows.fold)
def fold(cols6: Any, dx4: Any, kernel: tuple[int, int], stride: tuple[int, int], padding: windows.Padding,
         out_hw: tuple[int, int]) -> None:
    """windows.fold in one kernel, each value of dx4 adding its taps in the standard's
    order, bit for bit; a dx4 not in C order takes the standard path."""
    if not dx4.flags.c_contiguous:
        windows.fold(cols6, dx4, kernel, stride, padding, out_hw)
        return
    c, h, w, n = dx4.shape
    geometry = _windows((n, c, h, w), (0, 0, 0, 0), kernel, stride, padding, out_hw)
    _run("fold", (dx4.dtype,), dx4.size, _flat(cols6), *geometry, _i64(dx4.size), dx4)


@implements(optim.adam_update)
def adam_update(param: Any, grad: Any, m: Any, v: Any, coefficients: list[Any], decay: str | None) -> None:
    """optim.adam_update in one kernel instead of about ten, the same operations in the
    same order, bit for bit, its coefficients read from the device. The gradient may lie
    in any order (a convolution's does not lie in C order); param and its moments in C or
    Fortran order, all alike, else the standard path takes them."""
    if all(a.flags.f_contiguous and not a.flags.c_contiguous for a in (param, m, v)):
        param, grad, m, v = (a.T for a in (param, grad, m, v))  # C order, the same values in the same places
    if not all(a.flags.c_contiguous for a in (param, m, v)) or grad.ndim > 4 or any(
            a.dtype != param.dtype for a in (grad, m, v)):
        optim.adam_update(param, grad, m, v, coefficients, decay)
        return
    sizes = (1,) * (4 - grad.ndim) + tuple(grad.shape)
    strides = (0,) * (4 - grad.ndim) + tuple(s // grad.itemsize for s in grad.strides)
    values = [cupy.asarray(c, dtype=param.dtype) for c in coefficients]  # the optimizer's 0-d arrays as they are
    _run("adam", (param.dtype,), param.size, param, grad, m, v, *map(_i64, (param.size, *sizes[1:], *strides)),
         *values, _i32(DECAY[decay]))


def _dense(x: Any) -> Any:
    """x where its values fill their memory in some order of its axes, else a C-order copy:
    a kernel then reads it flat."""
    step = x.itemsize
    for stride, size in sorted((s, n) for s, n in zip(x.strides, x.shape) if n > 1):
        if stride != step:
            return _flat(x)
        step *= size
    return x


def _same_layout(a: Any, b: Any) -> bool:
    """Whether a and b (of one shape) put each value at the same place in their memory."""
    return all(s == t for s, t, n in zip(a.strides, b.strides, a.shape) if n > 1)


def _operands(x: Any) -> tuple[Any, Any]:
    """x dense (or a C-order copy) and an empty result laid out as it, both read flat."""
    x = _dense(x)
    y = cupy.empty_like(x)  # keeps the order of x's axes in memory
    if not _same_layout(x, y):
        x = _flat(x)
        y = cupy.empty_like(x)
    return x, y


def _laid_out_as(a: Any, like: Any) -> Any:
    """a, or a copy of it laid out as `like` (of its shape), so both read flat alike."""
    if _same_layout(a, like):
        return a
    copy = cupy.empty_like(like)
    copy[...] = a
    return copy


@implements(activation.relu)
def relu(x: Any, training: bool) -> tuple[Any, Any]:
    """activation.relu in one kernel that writes y and the mask, in x's memory order."""
    x, y = _operands(x)
    mask = cupy.empty_like(y) if training else y  # y: a stand-in, never written
    _run("relu", (x.dtype,), x.size, x, _i64(x.size), y, mask, _i32(training))
    return y, (mask if training else None)


@implements(dropout.apply_mask)
def apply_mask(x: Any, mask: Any, p: float) -> tuple[Any, Any]:
    """dropout.apply_mask in one kernel for 2-d x and mask, each read where it lies;
    others take the standard path."""
    y, scaled = cupy.empty_like(x), cupy.empty_like(mask)
    if x.ndim != 2 or mask.shape != x.shape or mask.dtype != x.dtype or y.strides != x.strides or (
            scaled.strides != mask.strides):
        return dropout.apply_mask(x, mask, p)
    strides = (s // x.itemsize for s in (*x.strides, *mask.strides))
    _run("dropout", (x.dtype,), x.size, x, mask, *map(_i64, (*x.shape, *strides)), _f64(1 - p), y, scaled)
    return y, scaled


@implements(activation.gelu)
def gelu(x: Any, training: bool) -> tuple[Any, Any]:
    """activation.gelu in one kernel, in x's memory order; it saves what the standard
    path saves (x clipped, and t)."""
    x, y = _operands(x)
    near, t = (cupy.empty_like(y), cupy.empty_like(y)) if training else (y, y)  # y: stand-ins, never written
    _run("gelu", (x.dtype,), x.size, x, _i64(x.size), _f64(activation.GELU_BOUND), _f64(activation.GELU_SCALE),
         _f64(activation.GELU_CUBIC), y, near, t, _i32(training))
    return y, ((near, t) if training else None)


@implements(activation.gelu_gradient)
def gelu_gradient(dy: Any, saved: Any) -> Any:
    """activation.gelu_gradient in one kernel, in the saved arrays' memory order."""
    near, t = saved
    dy, dx = _laid_out_as(dy, near), cupy.empty_like(near)
    _run("gelu_gradient", (dy.dtype,), dy.size, dy, near, t, _i64(dy.size), _f64(activation.GELU_SCALE),
         _f64(3 * activation.GELU_CUBIC), dx)
    return dx


def _tile(m: int, n: int) -> tuple[int, int]:
    """The product's tile (rows, columns) for an out of (m, n): the one that pads it least,
    the squarest of equals (it reads the fewest values a multiply-add)."""
    return min(PRODUCT_TILES, key=lambda tile: -(-m // tile[0]) * tile[0] * -(-n // tile[1]) * tile[1])


def _shares(m: int, k: int, n: int, tile: tuple[int, int]) -> tuple[int, int]:
    """(span, shares): a product (m, k) @ (k, n) with fewer than PRODUCT_BLOCKS tiles sums
    its k in shares of `span`, a multiple of PRODUCT_DEPTH, one block each."""
    tiles = -(-m // tile[0]) * -(-n // tile[1])
    depths = -(-k // PRODUCT_DEPTH)
    span = -(-depths // max(1, min(depths, PRODUCT_BLOCKS // tiles))) * PRODUCT_DEPTH
    return span, -(-k // span)


@implements(product.matmul)
def matmul(a: Any, b: Any) -> Any:
    """product.matmul: CuPy's (cuBLAS), or, in a training step of a run with CUDA graphs
    (capture.must_be_recordable: recorded or not), a kernel of our own, which a graph can
    hold. Both round each sum once per multiply-add; they add in other orders."""
    if not capture.must_be_recordable() or a.ndim != 2 or b.ndim != 2 or a.dtype != b.dtype or (
            a.dtype not in (np.float32, np.float64)) or 0 in (*a.shape, *b.shape):
        return a @ b
    return _product(a, b, _tile(a.shape[0], b.shape[1]))


def _product(a: Any, b: Any, tile: tuple[int, int]) -> Any:
    """a @ b (2-d, float32 or float64, none empty) by the product kernel in `tile`s, one of
    PRODUCT_TILES; cuBLAS's beyond the grid CUDA allows."""
    (m, k), n = a.shape, b.shape[1]
    rows, cols = tile
    span, shares = _shares(m, k, n, tile)
    row_tiles = -(-m // rows)
    if row_tiles * shares > MAX_GRID_Y:  # a million rows or more: no layer's product has them
        return a @ b
    out = cupy.empty((shares, m, n) if shares > 1 else (m, n), dtype=a.dtype)
    am, ak, bk, bn = (s // a.itemsize for s in (*a.strides, *b.strides))
    _kernel("product", a.dtype, f"{rows}, {cols}")(
        (-(-n // cols), row_tiles * shares), (PRODUCT_THREADS,),
        (a, _i64(m), _i64(k), _i64(am), _i64(ak), b, _i64(n), _i64(bk), _i64(bn), _i64(span), out))
    if shares == 1:
        return out
    total = cupy.empty((m, n), dtype=a.dtype)
    _run("add_shares", (a.dtype,), m * n, out, _i64(m * n), _i64(shares), total)
    return total


@implements(losses.softmax_cross_entropy)
def softmax_cross_entropy(logits: Any, labels: Any, smoothing: float) -> tuple[Any, Any]:
    """losses.softmax_cross_entropy in one kernel of one block, which also writes the
    gradient (C order): what it saves. Logits of no classes take the standard path."""
    rows, classes = logits.shape
    if classes == 0:  # the kernel reads each row's first logit: past the end of an empty array on a GPU
        return losses.softmax_cross_entropy(logits, labels, smoothing)
    if labels.dtype not in (np.int32, np.int64):
        labels = labels.astype(np.int64)
    grad, loss = cupy.empty((rows, classes), dtype=logits.dtype), cupy.empty((), dtype=logits.dtype)
    keep, spread = (1 - smoothing, smoothing / classes) if smoothing else (1.0, 0.0)
    strides = (s // logits.itemsize for s in logits.strides)
    _kernel("softmax_cross_entropy", logits.dtype, labels.dtype)(
        (1,), (BLOCK,), (logits, _i64(rows), _i64(classes), *map(_i64, strides), labels,
                         _i64(labels.strides[0] // labels.itemsize), _f64(keep), _f64(spread), grad, loss))
    return loss, grad


@implements(losses.softmax_cross_entropy_gradient)
def softmax_cross_entropy_gradient(saved: Any) -> Any:
    """The gradient the forward kernel wrote."""
    return saved
