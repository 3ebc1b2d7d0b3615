"""NumPy's compiled fast paths (xpcnn/kernels/numba.py) give what the standard path gives: im2col,
col2im and Adam bit for bit, max pooling too where windows tile, batch norm to float32 rounding
(its sums run in another order, in float64)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import xpcnn
from xpcnn import backend, optim
from xpcnn.layers import norm, pool, windows

from ..layers.test_windows import ADJOINT_CASES
from .test_numpy import FUSED_POOLS, POOLS, fused_case, pooling_case, windows_case

if os.environ.get("CI"):
    import numba  # CI installs the test extra, numba with it: fail, do not skip
else:
    numba = pytest.importorskip("numba")
fast_numba = pytest.importorskip("xpcnn.kernels.numba")


@pytest.fixture(autouse=True)
def compiled_paths_on(monkeypatch):
    """These fast paths, also in a run with XPCNN_NUMBA=0 set for the rest."""
    monkeypatch.delenv("XPCNN_NUMBA", raising=False)


def both_paths(monkeypatch, run):
    """run() on the standard path, then on the compiled fast paths."""
    results = []
    for standard in ("1", "0"):
        monkeypatch.setenv("XPCNN_STANDARD_PATH", standard)
        results.append(run())
    return results


@pytest.mark.parametrize("with_nan", [False, True], ids=["finite", "nan"])
@pytest.mark.parametrize("kernel, stride, h, w", POOLS, ids=str)
def test_max_pool_is_the_standard_paths(monkeypatch, kernel, stride, h, w, with_nan):
    layer, x, dy = pooling_case(kernel, stride, h, w, with_nan)
    reference, fast = both_paths(monkeypatch, lambda: (layer.forward(x), layer.backward(dy)))
    np.testing.assert_array_equal(fast[0], reference[0])
    tiling = all(pool.windows_tile(k, s, o, n) for k, s, o, n in
                 zip(layer.kernel_size, layer.stride, dy.shape[2:], x.shape[2:]))
    if tiling:
        np.testing.assert_array_equal(fast[1], reference[1])
    else:  # a value in several windows sums their gradients in another order
        np.testing.assert_allclose(fast[1], reference[1], rtol=1e-6, atol=1e-6)


def test_max_pool_takes_the_first_maximum_in_row_major_order():
    x4 = np.array([[1, 3], [3, 3]], dtype=np.float32).reshape(1, 2, 2, 1)
    y4, (_, where) = fast_numba.max_pool(x4, (2, 2), (2, 2), (1, 1), training=True)
    assert y4.item() == 3 and where.item() == 1
    dx4 = fast_numba.max_pool_gradient(np.full((1, 1, 1, 1), 2.0, np.float32), (x4.shape, where), (2, 2), (2, 2))
    assert dx4.reshape(2, 2).tolist() == [[0, 2], [0, 0]]


def test_max_pool_in_inference_saves_nothing():
    x4 = np.zeros((1, 4, 4, 2), np.float32)
    assert fast_numba.max_pool(x4, (2, 2), (2, 2), (2, 2), training=False)[1] is None


@pytest.mark.parametrize("dtype, tol", [("float32", 2e-6), ("float64", 1e-13)])
@pytest.mark.parametrize("shape", [(4, 3, 5, 5), (2, 16, 6, 6), (64, 2, 1, 2)], ids=str)
def test_batch_norm_is_the_standard_paths(monkeypatch, dtype, tol, shape):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(shape) * 3 + 100).astype(dtype)  # |mean| >> std: the centred sums must stay accurate
    dy = rng.standard_normal(shape).astype(dtype)
    weight, bias = rng.uniform(0.5, 2, shape[1]).astype(dtype), rng.standard_normal(shape[1]).astype(dtype)

    def run():
        layer = xpcnn.BatchNorm2D(shape[1]).to("numpy", None, dtype)
        layer.params.update(weight=weight, bias=bias)
        y = layer.forward(x)
        return y, layer.backward(dy), layer.grads, layer.buffers

    reference, fast = both_paths(monkeypatch, run)
    for name, got, want in [("y", fast[0], reference[0]), ("dx", fast[1], reference[1]),
                            *((f"grad {k}", fast[2][k], v) for k, v in reference[2].items())]:
        scale = np.max(np.abs(want))
        assert np.max(np.abs(got - want)) <= tol * scale, name
    for k, v in reference[3].items():  # the running statistics
        np.testing.assert_allclose(fast[3][k], v, rtol=tol)


def test_batch_norm_fast_and_standard_functions_pair_up(monkeypatch):
    """A backward reads what its own forward saved, even if the paths changed in between."""
    x = np.random.default_rng(2).standard_normal((3, 2, 4, 4)).astype(np.float32)
    layer = xpcnn.BatchNorm2D(2)
    monkeypatch.setenv("XPCNN_STANDARD_PATH", "0")
    layer.forward(x)
    monkeypatch.setenv("XPCNN_STANDARD_PATH", "1")
    layer.backward(np.ones_like(x))  # the standard gradient would unpack (centred, inv_std)
    assert backend.fast_path(norm.normalise, x) is norm.normalise


@pytest.mark.parametrize("kernel, stride, padding, h, w", ADJOINT_CASES, ids=str)
def test_im2col_and_col2im_are_the_standard_paths(monkeypatch, kernel, stride, padding, h, w):
    x, out_hw, shape, standard, cols = windows_case(kernel, stride, padding, h, w)
    fast = fast_numba.im2col(x, kernel, stride, padding, out_hw, np.full(shape, np.nan, np.float32))
    np.testing.assert_array_equal(fast, standard)  # the padding written, not left as it was
    reference, fast = both_paths(monkeypatch, lambda: windows.col2im(cols, x.shape, kernel, stride, padding,
                                                                     out_hw))
    np.testing.assert_array_equal(fast, reference)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("decay", [None, "l2", "decoupled"])
@pytest.mark.parametrize("order", ["C", "F"], ids=["c-order", "fortran-order"])
def test_adam_update_is_the_standard_paths(dtype, decay, order):
    rng = np.random.default_rng(4)
    param, grad, m, v = (np.asarray(rng.standard_normal((6, 5)), dtype=dtype, order=order) for _ in range(4))
    v = np.abs(v)
    coefficients = list(np.asarray([0.9, 0.1, 0.999, 1e-3, 0.3, 1e-2, 1e-8, 5e-3, 0.99995], dtype=dtype))
    states = [[a.copy(order="K") for a in (param, grad, m, v)] for _ in range(2)]
    for _ in range(3):
        optim.adam_update(*states[0], coefficients, decay)
        fast_numba.adam_update(*states[1], coefficients, decay)
    for fast, reference in zip(states[1], states[0]):
        np.testing.assert_array_equal(fast, reference)


def test_numpy_takes_the_compiled_paths_first(monkeypatch):
    monkeypatch.delenv("XPCNN_STANDARD_PATH", raising=False)
    x = np.zeros(1)
    assert backend.fast_path(norm.normalise, x) is fast_numba.normalise
    assert backend.fast_path(pool.max_pool, x) is fast_numba.max_pool
    assert backend.fast_path(windows.fold, x) is fast_numba.fold
    assert backend.fast_path(windows.im2col, x) is fast_numba.im2col
    assert backend.fast_path(optim.adam_update, x) is fast_numba.adam_update
    monkeypatch.setenv("XPCNN_NUMBA", "0")
    assert backend.fast_path(norm.normalise, x) is norm.normalise


def test_kernels_compile_without_a_cache_where_numba_has_no_place_for_one():
    source = {}
    exec("def twice(x):\n    return 2 * x\n", source)  # no file: numba finds nowhere to cache it
    with pytest.warns(RuntimeWarning, match="compiled anew by each process"):
        twice = fast_numba._compiled()(source["twice"])
    assert twice(3) == 6


def test_kernels_are_cached_outside_the_package():
    """Files beside an installed package outlive its uninstall and hide the next install."""
    package = Path(xpcnn.__file__).resolve().parent
    cache = Path(fast_numba._row_sums._cache.cache_path).resolve()
    assert package not in cache.parents and cache != package / "__pycache__"


def test_an_unwritable_cache_folder_compiles_each_process_anew(monkeypatch, tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("")
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(blocker / "cache"))  # not a folder even for root
    with pytest.warns(RuntimeWarning, match="no writable cache folder"):
        triple = fast_numba._compiled()(lambda x: 3 * x)
    assert triple(2) == 6 and numba.config.CACHE_DIR == str(blocker / "cache")


def test_max_pool_over_more_taps_than_a_byte_counts(monkeypatch):
    """And a last row no window covers."""
    x = np.random.default_rng(5).standard_normal((2, 1, 18, 17)).astype(np.float32)
    x[:, 0, 16, 16] = 100  # the maximum at the last of 289 taps: its index needs more than a byte
    layer = xpcnn.MaxPool2D(17)
    dy = np.ones(layer.output_shape(x.shape), np.float32)
    reference, fast = both_paths(monkeypatch, lambda: (layer.forward(x), layer.backward(dy)))
    for got, want in zip(fast, reference):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype, tol", [("float32", 2e-6), ("float64", 1e-13)])
@pytest.mark.parametrize("kernel, h, w", FUSED_POOLS, ids=str)
def test_fused_block_is_the_standard_paths(dtype, tol, kernel, h, w):
    """Forward bit for bit (the same formula for each value, the same comparisons); the
    gradient to rounding (its float64 sums skip the zeros the standard path adds)."""
    from xpcnn.layers import fused

    x4, gamma, beta, out_hw, dy4 = fused_case(kernel, h, w, dtype)
    count = x4[0].size
    results = []
    for module in (fused, fast_numba):
        y4, mean, var, saved = module.normalise_pool_relu(x4, gamma, beta, count, 1e-5, kernel, kernel, out_hw)
        results.append((y4, mean, var, *module.normalise_pool_relu_gradient(dy4, saved, gamma, count, kernel, kernel)))
    reference, fast = results
    for name, got, want in zip(["y", "mean", "var"], fast[:3], reference[:3]):
        np.testing.assert_array_equal(got, want, err_msg=name)
    for name, got, want in zip(["dx", "grad weight", "grad bias"], fast[3:], reference[3:]):
        assert np.max(np.abs(got - want)) <= tol * np.max(np.abs(want)), name


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_fused_block_gradient_keeps_a_non_finite_gradient_where_relu_cut(bad):
    """The layers multiply dy by ReLU's mask, 0 there: NaN * 0 and inf * 0 are NaN, which
    the batch norm's sums spread over the channel. The fused gradient must not drop it."""
    from xpcnn.layers import fused

    x4, gamma, beta, out_hw, dy4 = fused_case((2, 2), 4, 4, "float64")
    results = []
    for module in (fused, fast_numba):
        y4, _, _, saved = module.normalise_pool_relu(x4, gamma, beta, x4[0].size, 1e-5, (2, 2), (2, 2), out_hw)
        cut = np.argwhere(y4 == 0)[0]
        dy_bad = dy4.copy()
        dy_bad[tuple(cut)] = bad
        with np.errstate(invalid="ignore"):  # inf * 0 on the standard path
            results.append(module.normalise_pool_relu_gradient(dy_bad, saved, gamma, x4[0].size, (2, 2), (2, 2)))
    for got, want in zip(results[1], results[0]):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(results[1][2][cut[0]]).all()


@pytest.mark.parametrize("kernel, h, w", FUSED_POOLS, ids=str)
def test_fused_inference_is_the_standard_paths_bit_for_bit(kernel, h, w):
    from xpcnn.layers import fused

    x4, scale, shift, out_hw, _ = fused_case(kernel, h, w, "float32", with_nan=True)
    outputs = [module.scale_pool_relu(x4, scale, shift, kernel, kernel, out_hw) for module in (fused, fast_numba)]
    np.testing.assert_array_equal(outputs[1], outputs[0])


def test_fused_block_keeps_a_nan_and_passes_it_no_gradient():
    """As ReLU after pooling: a NaN window's output stays NaN, its mask is 0."""
    from xpcnn.layers import fused

    x4, gamma, beta, out_hw, dy4 = fused_case((2, 2), 4, 4, "float64", with_nan=True)
    outputs = [module.normalise_pool_relu(x4, gamma, beta, x4[0].size, 1e-5, (2, 2), (2, 2), out_hw)[0]
               for module in (fused, fast_numba)]
    np.testing.assert_array_equal(outputs[1], outputs[0])
    assert np.isnan(outputs[1][1, 0, 0, 2])
    _, _, _, (_, _, _, where) = fast_numba.normalise_pool_relu(x4, gamma, beta, x4[0].size, 1e-5, (2, 2), (2, 2),
                                                               out_hw)
    assert where[1, 0, 0, 2] == 4  # past the last tap: no gradient goes through


@pytest.mark.parametrize("dtype, tol", [("float32", 2e-6), ("float64", 1e-14)])
@pytest.mark.parametrize("layout", ["nchw", "chwn", "sliced", "2-d"])
def test_gelu_is_the_standard_paths(monkeypatch, dtype, tol, layout):
    """To rounding, relative to the largest value: the compiled path works in float64,
    where float32's 1 + t cancels for large negative x."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 3, 5, 7)) * 4
    x.flat[:4] = [np.nan, 1e30, -1e30, 0.0]
    x = {"nchw": x, "chwn": np.transpose(np.ascontiguousarray(np.transpose(x, (1, 2, 3, 0))), (3, 0, 1, 2)),
         "sliced": x[:, :, 1:4, ::2], "2-d": x.reshape(6, -1)}[layout].astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)

    def run():
        layer = xpcnn.GELU()
        return layer.forward(x), layer.backward(dy), layer.forward(x, training=False)

    reference, fast = both_paths(monkeypatch, run)
    for got, want in zip(fast, reference):
        assert got.shape == want.shape
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, rtol=0, atol=tol * np.nanmax(np.abs(want)))
    if layout != "sliced":  # a contiguous input's memory order is kept (batch innermost, for the next layer)
        assert fast[0].strides == x.strides


def test_gelu_fast_and_standard_functions_pair_up(monkeypatch):
    x = np.linspace(-3, 3, 24, dtype=np.float32).reshape(2, 12)
    layer = xpcnn.GELU()
    monkeypatch.setenv("XPCNN_STANDARD_PATH", "0")
    layer.forward(x)
    monkeypatch.setenv("XPCNN_STANDARD_PATH", "1")
    assert layer.backward(np.ones_like(x)).shape == x.shape  # the compiled gradient, for the compiled forward


@pytest.mark.parametrize("dtype, tol", [("float32", 2e-6), ("float64", 1e-13)])
def test_batch_norm_and_relu_are_the_standard_paths(dtype, tol):
    """Forward and inference bit for bit where the standard's sums agree (its float64 sums
    give the same mean here), the gradient to rounding; -0.0 and NaN kept as NumPy's
    maximum keeps them, a NaN in dy where ReLU cut spread as dy * 0 spreads it."""
    from xpcnn.layers import fused

    rng = np.random.default_rng(4)
    rows = (rng.standard_normal((3, 40)) * 2).astype(dtype)
    gamma, beta = rng.uniform(-2, 2, (3, 1)).astype(dtype), rng.standard_normal((3, 1)).astype(dtype)
    dy = rng.standard_normal(rows.shape).astype(dtype)
    dy[2, np.argmin(rows[2] * gamma[2, 0])] = np.nan  # where ReLU cut, most likely
    results = []
    for module in (fused, fast_numba):
        y, mean, var, saved = module.normalise_relu(rows, gamma, beta, 40, 1e-5)
        results.append((y, *module.normalise_relu_gradient(dy, saved, gamma, 40),
                        module.scale_relu(rows, gamma, beta)))
    reference, fast = results
    np.testing.assert_allclose(fast[0], reference[0], rtol=0, atol=tol * np.max(np.abs(reference[0])))
    np.testing.assert_array_equal(fast[4], reference[4])  # inference: one formula per value
    for name, got, want in zip(["dx", "grad weight", "grad bias"], fast[1:4], reference[1:4]):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=name)
        finite = ~np.isnan(want)
        assert np.max(np.abs(got - want)[finite]) <= tol * np.max(np.abs(want[finite])), name
    assert np.isnan(fast[1][2]).all() and not np.isnan(fast[1][:2]).any()


def test_batch_norm_and_relu_fused_on_the_compiled_path_train_as_the_layers_alone(monkeypatch):
    monkeypatch.setenv("XPCNN_STANDARD_PATH", "0")
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    results = []
    for fuse in (True, False):
        net = xpcnn.presets.build("resnet20", input_shape=(3, 16, 16), width=0.5)
        net.fuse = fuse
        y = net.forward(x)
        results.append((y, net.backward(np.ones_like(y)), net.grads, net.forward(x, training=False)))
    (y, dx, grads, inferred), alone = results
    pairs = [(y, alone[0]), (dx, alone[1]), (inferred, alone[3]), *((grads[k], v) for k, v in alone[2].items())]
    for got, want in pairs:
        np.testing.assert_array_equal(got, want)
