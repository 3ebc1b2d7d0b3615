"""CuPy's CUDA fast paths (xpcnn/kernels/cupy.py) give what the standard path gives: im2col,
col2im, ReLU, dropout's mask, Adam and max pooling bit for bit (GELU too on a GPU, where
its tanh is CuPy's), batch norm, the fused blocks and the loss within TOLERANCE (their
sums run in double, in another order).

Each test runs twice: on a GPU (marked gpu: the GPU check runs it, the standard path on
CuPy as the reference), and with the same CUDA source compiled for the CPU
(tests/kernels/cuda_on_cpu.py: where g++ is installed, CuPy or not, against NumPy's
standard path), which checks the kernels' logic and arguments where no GPU is, CI too.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import xpcnn
from xpcnn import backend, capture, losses, optim, presets
from xpcnn.layers import activation, dropout, fused, norm, pool, product, windows

from ..layers.test_windows import ADJOINT_CASES
from ..test_kernels import calls_of_each_fast_path
from . import cuda_on_cpu
from .test_numpy import FUSED_POOLS, POOLS, fused_case, pooling_case

try:
    import cupy
except ImportError:  # the kernels run on the CPU alone
    cupy = None
fast = cuda_on_cpu.kernel_module()

TOLERANCE = {"float32": 1e-5, "float64": 1e-12}  # of a reduction's results, relative to the largest


@dataclass
class Place:
    """Where the kernels run: `put` moves host data there, `get` brings it back; `exact_math`:
    their exp and tanh are the standard path's (a GPU, not the CPU's glibc)."""

    xp: Any
    exact_math: bool

    def put(self, a: Any, dtype: Any = None) -> Any:
        return self.xp.asarray(np.asarray(a, dtype=dtype))

    def get(self, a: Any) -> np.ndarray:
        return a.get() if hasattr(a, "get") else np.asarray(a)


def _on_gpu() -> Place:
    reason = backend.device_unusable_reason("cupy")
    if reason is not None:
        if os.environ.get("XPCNN_REQUIRE_GPU") == "1":
            pytest.fail(f"XPCNN_REQUIRE_GPU is set but CuPy cannot run here: {reason}")
        pytest.skip(f"cupy: {reason}")
    return Place(cupy, exact_math=True)


@pytest.fixture(params=[pytest.param("gpu", marks=pytest.mark.gpu), "cpu"])
def place(request, monkeypatch, tmp_path_factory):
    """The GPU, or the kernels compiled for the CPU behind a stand-in for `cupy`; the
    standard path as the reference (XPCNN_STANDARD_PATH=1 for the functions it calls)."""
    monkeypatch.setenv("XPCNN_STANDARD_PATH", "1")
    monkeypatch.setattr(fast, "_COUNTERS", {})  # each test's own, as the counter tests count on
    monkeypatch.setattr(fast, "_OUTGROWN", [])
    if request.param == "gpu":
        yield _on_gpu()
        return
    reason = cuda_on_cpu.compilable()
    if reason is not None:
        pytest.skip(reason)
    monkeypatch.setattr(fast, "cupy", cuda_on_cpu.fake_cupy(tmp_path_factory.getbasetemp()))
    for name, value in (("BLOCK", cuda_on_cpu.BLOCK), ("MAX_BLOCKS", 3), ("ITEMS_PER_THREAD", 1),
                        ("MAX_CHANNEL_BLOCKS", 3), ("PRODUCT_BLOCKS", 4)):
        monkeypatch.setattr(fast, name, value)  # few threads, several blocks a channel: the grid strides and sums
    for cached in (fast._module, fast._kernel):
        cached.cache_clear()
    yield Place(np, exact_math=False)
    for cached in (fast._module, fast._kernel):
        cached.cache_clear()


def assert_close(got: Any, want: Any, dtype: str, name: str = "") -> None:
    """Within TOLERANCE of the largest finite value, NaN where `want` is NaN."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, name
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=name)
    finite = np.isfinite(want)
    scale = max(float(np.max(np.abs(want[finite]), initial=0.0)), 1e-30)
    assert np.max(np.abs(got - want)[finite], initial=0.0) <= TOLERANCE[dtype] * scale, name


@pytest.mark.parametrize("with_nan", [False, True], ids=["finite", "nan"])
@pytest.mark.parametrize("kernel, stride, h, w", POOLS, ids=str)
def test_max_pool_is_the_standard_paths(place, kernel, stride, h, w, with_nan):
    layer, x, dy = pooling_case(kernel, stride, h, w, with_nan)
    x4, dy4 = (place.put(windows.batch_innermost(a)) for a in (x, dy))
    out_hw = dy.shape[2:]
    results = []
    for module in (pool, fast):
        y4, saved = module.max_pool(x4, layer.kernel_size, layer.stride, out_hw, True)
        results.append((y4, module.max_pool_gradient(dy4, saved, layer.kernel_size, layer.stride)))
    (y_ref, dx_ref), (y, dx) = ([place.get(a) for a in pair] for pair in results)
    np.testing.assert_array_equal(y, y_ref)
    if all(pool.windows_tile(k, s, o, n) for k, s, o, n in zip(layer.kernel_size, layer.stride, out_hw, x.shape[2:])):
        np.testing.assert_array_equal(dx, dx_ref)
    else:  # a value in several windows sums their gradients in another order
        np.testing.assert_allclose(dx, dx_ref, rtol=1e-6, atol=1e-6)
    assert fast.max_pool(x4, layer.kernel_size, layer.stride, out_hw, False)[1] is None


def test_max_pool_over_more_taps_than_a_byte_counts(place):
    """And a last row no window covers."""
    x = np.random.default_rng(5).standard_normal((2, 1, 18, 17)).astype(np.float32)
    x[:, 0, 16, 16] = 100  # the maximum at the last of 289 taps: its index needs more than a byte
    x4 = place.put(windows.batch_innermost(x))
    dy4 = place.put(np.ones((1, 1, 1, 2), np.float32))
    results = []
    for module in (pool, fast):
        y4, saved = module.max_pool(x4, (17, 17), (17, 17), (1, 1), True)
        results.append([place.get(a) for a in (y4, module.max_pool_gradient(dy4, saved, (17, 17), (17, 17)))])
    for got, want in zip(results[1], results[0]):
        np.testing.assert_array_equal(got, want)


def batch_norm_case(shape, dtype, place):
    """Channel rows (C, M) with |mean| >> std, dy, gamma and beta (C, 1), on `place`."""
    rng = np.random.default_rng(1)
    rows = (rng.standard_normal(shape) * 3 + 100).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    gamma, beta = rng.uniform(0.5, 2, (shape[0], 1)).astype(dtype), rng.standard_normal((shape[0], 1)).astype(dtype)
    return [place.put(a) for a in (rows, dy, gamma, beta)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(3, 100), (16, 72), (2, 256), (5, 3001), (1, 5)], ids=str)
def test_batch_norm_is_the_standard_paths(place, dtype, shape):
    rows, dy, gamma, beta = batch_norm_case(shape, dtype, place)
    results = []
    for module in (norm, fast):
        y, mean, var, saved = module.normalise(rows, gamma, beta, shape[1], 1e-5)
        results.append([y, mean, var, *module.normalise_gradient(dy, saved, gamma, shape[1])])
    for name, want, got in zip(["y", "mean", "var", "dx", "grad weight", "grad bias"], *results):
        assert_close(place.get(got), place.get(want), dtype, name)


def test_batch_norm_sums_a_channel_across_blocks_as_the_standard_path(place):
    """Several blocks a channel on a GPU too (4,096 values a block), whose last block adds
    the others' partial sums once their writes are visible. In float64: the float32
    standard path's own sums of 20,000 values are off by more than TOLERANCE."""
    test_batch_norm_is_the_standard_paths(place, "float64", (2, 20000))


def test_batch_norm_of_no_values_or_of_more_channels_than_a_grid_counts_is_the_standard_paths(place, monkeypatch):
    """No kernel reads an empty batch (a null pointer on a GPU) or launches more rows of
    blocks than CUDA allows: the standard path takes them."""
    rows, dy, gamma, beta = batch_norm_case((3, 8), "float32", place)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's mean of nothing
        for function in (fast.normalise, fast.normalise_relu):
            y, mean, var, saved = function(rows[:, :0], gamma, beta, 0, 1e-5)
            assert y.shape == (3, 0) and saved[0] is None  # marked as the standard path's
    monkeypatch.setattr(fast, "MAX_GRID_Y", 2)
    assert fast.normalise(rows, gamma, beta, 8, 1e-5)[3][0] is None


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batch_norm_and_relu_are_the_standard_paths(place, dtype):
    """A NaN in dy where ReLU cut spreads over its channel, as dy * 0 spreads it."""
    rng = np.random.default_rng(4)
    rows = (rng.standard_normal((3, 40)) * 2).astype(dtype)
    gamma, beta = rng.uniform(-2, 2, (3, 1)).astype(dtype), rng.standard_normal((3, 1)).astype(dtype)
    dy = rng.standard_normal(rows.shape).astype(dtype)
    dy[2, np.argmin(rows[2] * gamma[2, 0])] = np.nan  # where ReLU cut, most likely
    rows, gamma, beta, dy = (place.put(a) for a in (rows, gamma, beta, dy))
    results = []
    for module in (fused, fast):
        y, mean, var, saved = module.normalise_relu(rows, gamma, beta, 40, 1e-5)
        results.append([y, *module.normalise_relu_gradient(dy, saved, gamma, 40), module.scale_relu(rows, gamma, beta)])
    reference, got = ([place.get(a) for a in result] for result in results)
    np.testing.assert_array_equal(got[4], reference[4])  # inference: one formula per value
    for name, g, want in zip(["y", "dx", "grad weight", "grad bias"], got, reference):
        assert_close(g, want, dtype, name)
    assert np.isnan(got[1][2]).all() and not np.isnan(got[1][:2]).any()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_running_statistics_are_the_standard_paths(place, dtype):
    rng = np.random.default_rng(6)
    mean, var = (place.put(rng.uniform(0.1, 2, (5, 1)), dtype) for _ in range(2))
    states = [[place.put(rng.uniform(0.1, 2, 5), dtype) for _ in range(2)] for _ in range(2)]
    states[1] = [place.put(place.get(a)) for a in states[0]]
    for module, (running_mean, running_var) in zip((norm, fast), states):
        module.update_running(running_mean, running_var, mean, var, 0.1, 37)
    for got, want in zip(*([place.get(a) for a in state] for state in reversed(states))):
        np.testing.assert_allclose(got, want, rtol=TOLERANCE[dtype])


def fused_on(place, kernel, h, w, dtype, with_nan=False):
    """test_numpy.fused_case on `place`: [x4, gamma, beta], out_hw, dy4."""
    x4, gamma, beta, out_hw, dy4 = fused_case(kernel, h, w, dtype, with_nan)
    return [place.put(a) for a in (x4, gamma, beta)], out_hw, place.put(dy4)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kernel, h, w", FUSED_POOLS, ids=str)
def test_fused_block_is_the_standard_paths(place, dtype, kernel, h, w):
    (x4, gamma, beta), out_hw, dy4 = fused_on(place, kernel, h, w, dtype)
    count = x4[0].size
    results = []
    for module in (fused, fast):
        y4, mean, var, saved = module.normalise_pool_relu(x4, gamma, beta, count, 1e-5, kernel, kernel, out_hw)
        gradient = module.normalise_pool_relu_gradient(dy4, saved, gamma, count, kernel, kernel)
        results.append([y4, mean, var, *gradient])
    for name, want, got in zip(["y", "mean", "var", "dx", "grad weight", "grad bias"], *results):
        assert_close(place.get(got), place.get(want), dtype, name)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_fused_block_gradient_keeps_a_non_finite_gradient_where_relu_cut(place, bad):
    (x4, gamma, beta), out_hw, dy4 = fused_on(place, (2, 2), 4, 4, "float64")
    y4 = place.get(fast.normalise_pool_relu(x4, gamma, beta, x4[0].size, 1e-5, (2, 2), (2, 2), out_hw)[0])
    cut = tuple(np.argwhere(y4 == 0)[0])
    dy_bad = place.get(dy4).copy()
    dy_bad[cut] = bad
    results = []
    for module in (fused, fast):
        saved = module.normalise_pool_relu(x4, gamma, beta, x4[0].size, 1e-5, (2, 2), (2, 2), out_hw)[3]
        with np.errstate(invalid="ignore"):  # inf * 0 on the standard path
            gradient = module.normalise_pool_relu_gradient(place.put(dy_bad), saved, gamma, x4[0].size, (2, 2), (2, 2))
        results.append([place.get(a) for a in gradient])
    for got, want in zip(results[1], results[0]):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(results[1][2][cut[0]]).all()


@pytest.mark.parametrize("kernel, h, w", FUSED_POOLS, ids=str)
def test_fused_inference_is_the_standard_paths_bit_for_bit(place, kernel, h, w):
    (x4, scale, shift), out_hw, _ = fused_on(place, kernel, h, w, "float32", with_nan=True)
    outputs = [place.get(m.scale_pool_relu(x4, scale, shift, kernel, kernel, out_hw)) for m in (fused, fast)]
    np.testing.assert_array_equal(outputs[1], outputs[0])


def test_fused_block_keeps_a_nan_and_passes_it_no_gradient(place):
    (x4, gamma, beta), out_hw, _ = fused_on(place, (2, 2), 4, 4, "float64", with_nan=True)
    y4, _, _, (_, _, _, where) = fast.normalise_pool_relu(x4, gamma, beta, x4[0].size, 1e-5, (2, 2), (2, 2), out_hw)
    assert np.isnan(place.get(y4)[1]).all()  # the NaN makes its channel's statistics NaN
    assert (place.get(where)[1] == 4).all()  # past the last tap: no gradient goes through


@pytest.mark.parametrize("layout", ["nchw", "chwn"])
@pytest.mark.parametrize("kernel, stride, padding, h, w", ADJOINT_CASES, ids=str)
def test_im2col_and_col2im_are_the_standard_paths(place, kernel, stride, padding, h, w, layout):
    (kh, kw), (sh, sw), (top, bottom, left, right) = kernel, stride, padding
    out_hw = (windows.output_size(h, kh, sh, top + bottom), windows.output_size(w, kw, sw, left + right))
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, h, w)).astype(np.float32)
    x = place.put(x) if layout == "nchw" else windows.to_nchw(place.put(windows.batch_innermost(x)))
    shape = (4, kh, kw, *out_hw, 3)
    got, want = (m.im2col(x, kernel, stride, padding, out_hw, place.put(np.full(shape, np.nan, np.float32)))
                 for m in (fast, windows))
    np.testing.assert_array_equal(place.get(got), place.get(want))  # the padding written, not left as it was
    cols6 = place.put(rng.standard_normal(shape).astype(np.float32))
    folded = []
    for module in (windows, fast):
        dx4 = place.put(np.full((4, h, w, 3), 0.25, np.float32))  # fold adds into what is there
        module.fold(cols6, dx4, kernel, stride, padding, out_hw)
        folded.append(place.get(dx4))
    np.testing.assert_array_equal(folded[1], folded[0])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("decay", [None, "l2", "decoupled"])
@pytest.mark.parametrize("order", ["C", "F", "mixed"])
def test_adam_update_is_the_standard_paths(place, dtype, decay, order):
    rng = np.random.default_rng(4)
    host = [np.asarray(rng.standard_normal((6, 37)), dtype=dtype, order="F" if order == "F" else "C")
            for _ in range(4)]
    host[3] = np.abs(host[3])
    host[1][2, 3], host[1][4, 5] = np.nan, np.inf  # passed on, as the standard passes them
    if order == "mixed":  # the gradient in another order than the rest, as a convolution's
        host[1] = np.asfortranarray(host[1])
    coefficients = place.put(np.asarray([0.9, 0.1, 0.999, 1e-3, 0.3, 1e-2, 1e-8, 5e-3, 0.99995], dtype=dtype))
    values = [coefficients[i] for i in range(9)]  # 0-d arrays, as Optimizer.step hands them
    states = [[place.put(a) if order != "F" else place.xp.asfortranarray(place.put(a)) for a in host]
              for _ in range(2)]
    with np.errstate(invalid="ignore"):
        for _ in range(3):
            optim.adam_update(*states[0], values, decay)
            fast.adam_update(*states[1], values, decay)
    for got, want in zip(states[1], states[0]):
        np.testing.assert_array_equal(place.get(got), place.get(want))


# (m, k, n) and which operand is a transposed view: partial tiles, k below one depth, a long
# k over one tile (a weight gradient's), which splits into shares, and every tile's shape.
PRODUCTS = [((70, 50, 90), ""), ((64, 16, 64), "a"), ((5, 3, 130), "b"), ((6, 2000, 26), "ab"), ((1, 1, 1), ""),
            ((100, 50, 30), "b"), ((200, 30, 16), "a"), ((144, 500, 16), "ab")]


def test_products_of_few_channels_take_thin_tiles_and_every_tile_is_tested():
    assert fast._tile(16, 256 * 32 * 32) == (16, 256)  # resnet20's first stage, forward: (O, K) @ (K, M)
    assert fast._tile(32, 256 * 28 * 28) == (32, 128)  # lenet's first convolution, forward
    assert fast._tile(144, 16) == (256, 16) and fast._tile(288, 32) == (128, 32)  # weight gradients: (K, M) @ (M, O)
    assert fast._tile(64, 256 * 14 * 14) == (64, 64) and fast._tile(288, 64) == (64, 64)
    assert {fast._tile(m, n) for (m, _, n), _ in PRODUCTS} == set(fast.PRODUCT_TILES)


def operands(place, shape, transposed, dtype, rng):
    """a (m, k) and b (k, n) on `place`, made as their transposes and viewed where asked."""
    (m, k, n), made = shape, {}
    for name, rows, cols in (("a", m, k), ("b", k, n)):
        host = rng.standard_normal((cols, rows) if name in transposed else (rows, cols)).astype(dtype)
        made[name] = place.put(host).T if name in transposed else place.put(host)
    return made["a"], made["b"]


def test_counters_outgrown_are_kept_for_the_graphs_that_count_in_them(place):
    small = fast._counters(8)
    large = fast._counters(5000)
    assert large.size >= 5000 and fast._counters(10) is large and fast._OUTGROWN[-1] is small


def test_counters_are_made_by_a_direct_step_not_a_recording(place, monkeypatch):
    """A recording does not run what it records: counters made in one would stay unzeroed
    for the direct steps that follow a failed recording."""
    counters = fast._counters(8)
    monkeypatch.setattr(capture, "recording", lambda: True)
    assert fast._counters(8) is counters
    with pytest.raises(RuntimeError, match="made by a step's direct run, not its recording"):
        fast._counters(counters.size + 1)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape, transposed", PRODUCTS, ids=str)
def test_product_is_the_standard_paths_within_rounding(place, dtype, shape, transposed):
    a, b = operands(place, shape, transposed, dtype, np.random.default_rng(2))
    want = place.get(product.matmul(a, b))
    with capture.recordable():
        got = fast.matmul(a, b)
    assert got.dtype == a.dtype and got.flags.c_contiguous
    assert_close(place.get(got), want, dtype)
    np.testing.assert_array_equal(place.get(fast.matmul(a, b)), want)  # not recorded: the library's own


def test_every_tile_sums_each_value_alike(place, monkeypatch):
    """Without shares each value is one chain of multiply-adds along k, whatever the tile."""
    monkeypatch.setattr(fast, "PRODUCT_BLOCKS", 1)  # every tile computes its sums in one share
    a, b = operands(place, (130, 50, 130), "b", "float32", np.random.default_rng(4))
    assert all(fast._shares(130, 50, 130, tile)[1] == 1 for tile in fast.PRODUCT_TILES)
    results = [place.get(fast._product(a, b, tile)) for tile in fast.PRODUCT_TILES]
    for tile, got in zip(fast.PRODUCT_TILES[1:], results[1:]):
        np.testing.assert_array_equal(got, results[0], err_msg=str(tile))
    assert_close(results[0], place.get(product.matmul(a, b)), "float32")


def test_product_passes_nan_and_inf_on(place):
    a, b = (place.put(np.ones(shape, np.float32)) for shape in ((3, 40), (40, 2)))
    a[0, 7], a[1, 39], b[5, 1] = np.nan, np.inf, -np.inf
    with capture.recordable():
        got = place.get(fast.matmul(a, b))
    assert np.isnan(got[0]).all() and got[1, 0] == np.inf and np.isnan(got[1, 1]) and got[2].tolist() == [40, -np.inf]


def layouts(place, dtype):
    """An NCHW array with NaN, +-1e30 and 0 among its values, in the layouts layers hand on."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 3, 5, 7)) * 4
    x.flat[:4] = [np.nan, 1e30, -1e30, 0.0]
    x = place.put(x.astype(dtype))
    xp = place.xp
    return {"nchw": x, "chwn": windows.to_nchw(xp.ascontiguousarray(windows.to_chwn(x))), "sliced": x[:, :, 1:4, ::2],
            "2-d": xp.reshape(x, (6, -1)), "fortran": xp.asfortranarray(xp.reshape(x, (6, -1)))}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_relu_is_the_standard_paths(place, dtype):
    for layout, x in layouts(place, dtype).items():
        for training in (True, False):
            got, want = (m.relu(x, training) for m in (fast, activation))
            np.testing.assert_array_equal(place.get(got[0]), place.get(want[0]), err_msg=layout)
            if training:
                np.testing.assert_array_equal(place.get(got[1]), place.get(want[1]), err_msg=layout)
            else:
                assert got[1] is None


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gelu_is_the_standard_paths(place, dtype):
    """Bit for bit on a GPU; on the CPU its tanh is glibc's, NumPy's another."""
    for layout, x in layouts(place, dtype).items():
        dy = place.put(np.random.default_rng(8).standard_normal(x.shape).astype(dtype))
        got, want = ([m.gelu(x, True)[0], m.gelu_gradient(dy, m.gelu(x, True)[1]), m.gelu(x, False)[0]]
                     for m in (fast, activation))
        for g, w in zip(got, want):
            if place.exact_math:
                np.testing.assert_array_equal(place.get(g), place.get(w), err_msg=layout)
            else:
                tol = 1e-5 if dtype == "float32" else 1e-13  # 1 + t cancels for negative x: absolute
                np.testing.assert_allclose(place.get(g), place.get(w), rtol=tol, atol=tol, err_msg=layout)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layout", ["C", "F", "3-d"])
def test_dropout_mask_is_the_standard_paths(place, dtype, layout):
    rng = np.random.default_rng(9)
    shape = (7, 3, 5) if layout == "3-d" else (33, 10)
    x = rng.standard_normal(shape).astype(dtype)
    x.flat[0] = np.nan
    x = place.put(np.asfortranarray(x) if layout == "F" else x)
    mask = place.put((rng.random(shape) >= 0.3).astype(dtype))
    got, want = (m.apply_mask(x, mask, 0.3) for m in (fast, dropout))
    for g, w in zip(got, want):
        np.testing.assert_array_equal(place.get(g), place.get(w))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("rows, labels_dtype", [(1, "int64"), (300, "int32"), (7, "uint8")], ids=str)
def test_softmax_cross_entropy_is_the_standard_paths(place, dtype, smoothing, rows, labels_dtype):
    rng = np.random.default_rng(10)
    logits = rng.standard_normal((rows, 10)) * 5
    logits[0, 3] = 80  # far above the rest: the row's maximum must be taken out first
    logits = place.put(logits.astype(dtype))
    labels = place.put(rng.integers(0, 10, rows).astype(labels_dtype))
    for view in (logits, place.xp.asfortranarray(logits)):
        got, want = (m.softmax_cross_entropy(view, labels, smoothing) for m in (fast, losses))
        assert_close(place.get(got[0]), place.get(want[0]), dtype, "loss")
        assert_close(place.get(fast.softmax_cross_entropy_gradient(got[1])),
                     place.get(losses.softmax_cross_entropy_gradient(want[1])), dtype, "gradient")


def test_softmax_cross_entropy_passes_a_nan_on(place):
    logits = place.put(np.array([[1.0, np.nan, 2.0], [0.5, 0.25, 0.0]], np.float32))
    loss, grad = fast.softmax_cross_entropy(logits, place.put(np.array([0, 2])), 0.0)
    assert np.isnan(place.get(loss)) and np.isnan(place.get(grad)[0]).all() and not np.isnan(place.get(grad)[1]).any()


def test_softmax_cross_entropy_of_no_classes_is_the_standard_paths(place):
    """No kernel reads the first logit of rows that have none (an illegal address on a GPU,
    which ends the CUDA context): the standard path refuses them, for both."""
    logits, labels = place.put(np.zeros((2, 0), np.float32)), place.put(np.zeros(2, np.int64))
    for module in (losses, fast):
        with pytest.raises(ValueError, match="zero-size"):
            module.softmax_cross_entropy(logits, labels, 0.0)


def nvrtc_unusable_reason() -> str | None:
    try:
        from cupy.cuda import compiler
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()
        compiler._NVRTCProgram  # noqa: B018  (CuPy's, private: gone in a CuPy that moved it)
    except Exception as exc:  # noqa: BLE001  (a missing library raises CuPy's own errors)
        return f"NVRTC is not usable here ({type(exc).__name__}: {exc})"
    return None


@pytest.mark.parametrize("arch", ["compute_80", "compute_90", "sm_90"])
def test_every_kernel_compiles_with_nvrtc(arch):
    """NVRTC compiles without a GPU: every instance, with the options CuPy's RawModule
    gives (ours, then its -ftz=true), for an A100's and an H100's architecture, and as
    CuPy compiles on an H100: sm_90's machine code, whose assembler (ptxas) has limits
    that PTX has not, such as 48 KiB of static shared memory a block."""
    reason = nvrtc_unusable_reason()
    if reason is not None:
        pytest.skip(reason)
    from cupy.cuda import compiler

    names, method = fast._names(), "cubin" if arch.startswith("sm_") else "ptx"
    program = compiler._NVRTCProgram(fast.SOURCE, "cupy.cu", name_expressions=names, method=method)
    code, lowered = program.compile((*fast.OPTIONS, "-ftz=true", f"-arch={arch}",
                                     "--device-as-default-execution-space"))
    assert set(lowered) == set(names)
    entries = [f".entry {mangled}(".encode() for mangled in lowered.values()] if method == "ptx" else [
        mangled.encode() for mangled in lowered.values()]  # the cubin's symbols
    assert all(entry in code for entry in entries)


def test_cupy_takes_its_kernels(monkeypatch):
    """The registry entry; CuPy's arrays need a GPU, so the module's own functions stand in."""
    monkeypatch.delenv("XPCNN_STANDARD_PATH", raising=False)
    registry = xpcnn.kernels.registry("xpcnn.kernels.cupy")
    assert registry[norm.normalise] is fast.normalise and registry[optim.adam_update] is fast.adam_update
    assert registry[losses.softmax_cross_entropy] is fast.softmax_cross_entropy
    assert ("xpcnn.kernels.cupy", "cupy") in backend.FAST_PATHS["cupy"]
    monkeypatch.setenv("XPCNN_CUPY", "0")
    assert backend.fast_paths("cupy") == []


def test_each_fast_path_is_dispatched_and_runs(place, monkeypatch):
    """A training step and an inference forward of a network of every kind of layer reach
    each of the module's functions (on the CPU, NumPy takes them in place of its own)."""
    monkeypatch.delenv("XPCNN_STANDARD_PATH")
    if place.xp is np:
        monkeypatch.setitem(backend.FAST_PATHS, "numpy", (("xpcnn.kernels.cupy", None),))
    calls = calls_of_each_fast_path("numpy" if place.xp is np else "cupy", "xpcnn.kernels.cupy", monkeypatch)
    assert all(calls.values()), f"never called: {[name for name, count in calls.items() if not count]}"


def five_steps(place, monkeypatch, standard, dtype):
    """Losses of five Adam steps of lenet (12x12 digits, batch 8) and its final logits."""
    monkeypatch.setenv("XPCNN_STANDARD_PATH", "1" if standard else "0")
    net = presets.build("lenet", input_shape=(1, 12, 12))
    net = net.to("cupy", None, dtype) if place.xp is cupy else net.to("numpy", None, dtype)
    rng = np.random.default_rng(11)
    x, y = place.put(rng.standard_normal((8, 1, 12, 12)), dtype), place.put(rng.integers(0, 10, 8))
    loss, optimizer, history = xpcnn.SoftmaxCrossEntropy(check_labels=False), optim.Adam(net, 1e-3), []
    for _ in range(5):
        history.append(float(place.get(loss.forward(net.forward(x), y))))
        net.backward(loss.backward(), input_grad=False)
        optimizer.step()
    return np.array(history), place.get(net.forward(x, training=False))


@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-3), ("float64", 1e-9)])
def test_lenet_trains_as_on_the_standard_path(place, monkeypatch, dtype, rtol):
    """On the CPU, NumPy takes the kernels compiled for it in place of its own fast paths;
    every one of them runs in a step (counted there)."""
    if place.xp is np:
        monkeypatch.setitem(backend.FAST_PATHS, "numpy", (("xpcnn.kernels.cupy", None),))
    reference = five_steps(place, monkeypatch, True, dtype)
    del cuda_on_cpu.LAUNCHES[:]
    got = five_steps(place, monkeypatch, False, dtype)
    for g, want in zip(got, reference):
        np.testing.assert_allclose(g, want, rtol=rtol, atol=rtol * np.max(np.abs(want)))
    if place.xp is np:  # per step: forward 11, backward 5, Adam 10 (its 10 parameters); then one inference forward
        assert len(cuda_on_cpu.LAUNCHES) == 5 * 26 + 5, sorted(set(cuda_on_cpu.LAUNCHES))


def test_lenet_with_recordable_products_trains_as_on_the_standard_path(place, monkeypatch):
    """What a step recorded on CuPy runs (capture.recordable): its products too are kernels
    of our own, two for the weight gradients that sum over the batch in shares."""
    if place.xp is np:
        monkeypatch.setitem(backend.FAST_PATHS, "numpy", (("xpcnn.kernels.cupy", None),))
    reference = five_steps(place, monkeypatch, True, "float64")
    del cuda_on_cpu.LAUNCHES[:]
    with capture.recordable():
        got = five_steps(place, monkeypatch, False, "float64")
    for g, want in zip(got, reference):
        np.testing.assert_allclose(g, want, rtol=1e-9, atol=1e-9 * np.max(np.abs(want)))
    if place.xp is np:  # per step 11 products (forward 4, backward 7), then 4 in the inference forward
        counts = {name: sum(launch.startswith(name + "<") for launch in cuda_on_cpu.LAUNCHES)
                  for name in ("product", "add_shares")}
        assert counts["product"] == 5 * 11 + 4 and counts["add_shares"] > 5
        assert len(cuda_on_cpu.LAUNCHES) - sum(counts.values()) == 5 * 26 + 5  # the rest as without

