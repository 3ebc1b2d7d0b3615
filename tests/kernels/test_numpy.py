"""NumPy's fast paths without numba (xpcnn/kernels/numpy.py) give what the standard path gives, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

import xpcnn
from xpcnn import backend
from xpcnn.kernels import numpy as fast_numpy
from xpcnn.layers import conv, pool, windows

from ..layers.test_windows import ADJOINT_CASES


@pytest.fixture(autouse=True)
def numpy_alone(monkeypatch):
    """These fast paths, not the compiled ones that come first where numba is installed."""
    monkeypatch.setenv("XPCNN_NUMBA", "0")


# (kernel, stride, H, W): tiling windows (the fast path) and others (handed back).
POOLS = [(2, 2, 8, 6), (3, 3, 9, 6), ((2, 3), (2, 3), 6, 9), (2, 2, 7, 9), (3, 2, 9, 9), (1, 1, 4, 4)]


def pooling_case(kernel, stride, h, w, with_nan):
    """A MaxPool2D, an input full of ties (and -inf; two NaNs in one window if asked) and
    an output gradient."""
    rng = np.random.default_rng(0)
    x = np.round(rng.standard_normal((5, 3, h, w)) * 2).astype(np.float32) / 2  # many ties
    x[0, 0] = 1.0  # windows that tie everywhere
    x[2, 2] = -np.inf
    if with_nan:
        x[1, 1, 0, 0] = x[1, 1, 1, 1] = np.nan  # the first takes the gradient
    layer = xpcnn.MaxPool2D(kernel, stride)
    return layer, x, rng.standard_normal(layer.output_shape(x.shape)).astype(np.float32)


FUSED_POOLS = [((2, 2), 8, 6), ((3, 3), 9, 6), ((2, 3), 6, 9), ((1, 1), 4, 4), ((17, 17), 17, 17)]


def fused_case(kernel, h, w, dtype, with_nan=False):
    """Batch norm's input, gamma and beta, and the gradient of a fused block's output; the
    input has ties inside windows, windows whose maximum ReLU cuts and (asked) a NaN."""
    rng = np.random.default_rng(7)
    x4 = rng.integers(-3, 4, (3, h, w, 5)).astype(dtype) * 0.5 + 7  # |mean| >> std, many ties
    if with_nan:
        x4[1, 0, 0, 2] = np.nan
    gamma, beta = rng.uniform(-2, 2, (3, 1)).astype(dtype), rng.standard_normal((3, 1)).astype(dtype)
    out_hw = (h // kernel[0], w // kernel[1])
    dy4 = rng.standard_normal((3, *out_hw, 5)).astype(dtype)
    return x4, gamma, beta, out_hw, dy4


@pytest.mark.parametrize("with_nan", [False, True], ids=["finite", "nan"])
@pytest.mark.parametrize("kernel, stride, h, w", POOLS, ids=str)
def test_max_pool_is_the_standard_paths(monkeypatch, kernel, stride, h, w, with_nan):
    layer, x, dy = pooling_case(kernel, stride, h, w, with_nan)
    results = []
    for standard in ("1", "0"):
        monkeypatch.setenv("XPCNN_STANDARD_PATH", standard)
        results.append((layer.forward(x), layer.backward(dy)))
    for fast, reference in zip(results[1], results[0]):
        np.testing.assert_array_equal(fast, reference)


def test_max_pool_masks_skip_the_nan_test_only_where_there_is_none():
    rng = np.random.default_rng(1)
    x4 = rng.standard_normal((2, 4, 4, 3)).astype(np.float32)
    layer = xpcnn.MaxPool2D(2)
    for poison in (False, True):
        if poison:
            x4[1, 2, 3, 0] = np.nan
        columns = pool._max_along(x4, 2, 2, 2, 2)
        y4 = pool._max_along(columns, 1, 2, 2, 2)
        fast = fast_numpy.sweep_masks(x4, columns, y4, layer.kernel_size, layer.stride)
        for nan_free in (False, True):
            reference = pool.sweep_masks(x4, columns, y4, layer.kernel_size, layer.stride, nan_free=nan_free)
            same = all(np.array_equal(f, r) for (_, fs), (_, rs) in zip(fast, reference) for f, r in zip(fs, rs))
            assert same == (not (poison and nan_free))  # the NaN-free test misses a NaN maximum


def test_the_layer_takes_the_fast_path_on_numpy_only(monkeypatch):
    monkeypatch.delenv("XPCNN_STANDARD_PATH", raising=False)
    assert backend.fast_path(pool.route_to_first_maxima, np.zeros(1)) is fast_numpy.route_to_first_maxima
    monkeypatch.setenv("XPCNN_STANDARD_PATH", "1")
    assert backend.fast_path(pool.route_to_first_maxima, np.zeros(1)) is pool.route_to_first_maxima
    if backend.unavailable_reason("array_api_strict") is None:
        monkeypatch.delenv("XPCNN_STANDARD_PATH")
        strict = backend.to_backend(np.zeros(1), "array_api_strict")
        assert backend.fast_path(pool.route_to_first_maxima, strict) is pool.route_to_first_maxima


def windows_case(kernel, stride, padding, h, w):
    """An input x (3, 4, h, w), its output size, the shape of its im2col buffer, the
    standard path's im2col of it (into a buffer of NaN: every value is written), and
    columns for col2im of that shape."""
    n, c = 3, 4
    (kh, kw), (sh, sw), (top, bottom, left, right) = kernel, stride, padding
    out_hw = (windows.output_size(h, kh, sh, top + bottom), windows.output_size(w, kw, sw, left + right))
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    shape = (c, kh, kw, *out_hw, n)
    standard = windows.im2col(x, kernel, stride, padding, out_hw, np.full(shape, np.nan, np.float32))
    cols = rng.standard_normal((c * kh * kw, out_hw[0] * out_hw[1] * n)).astype(np.float32)
    return x, out_hw, shape, standard, cols


@pytest.mark.parametrize("kernel, stride, padding, h, w", ADJOINT_CASES, ids=str)
def test_im2col_and_col2im_are_the_standard_paths(monkeypatch, kernel, stride, padding, h, w):
    x, out_hw, shape, standard, cols = windows_case(kernel, stride, padding, h, w)
    fast = fast_numpy.im2col(x, kernel, stride, padding, out_hw, np.full(shape, np.nan, np.float32))
    np.testing.assert_array_equal(fast, standard)
    monkeypatch.setenv("XPCNN_STANDARD_PATH", "1")
    reference = windows.col2im(cols, x.shape, kernel, stride, padding, out_hw)
    monkeypatch.setenv("XPCNN_STANDARD_PATH", "0")  # col2im's folding takes the fast path
    for block_bytes in (1, h * w * len(x) * 4 * 2, fast_numpy.FOLD_BLOCK_BYTES):  # one channel, two, all at once
        monkeypatch.setattr(fast_numpy, "FOLD_BLOCK_BYTES", block_bytes)
        np.testing.assert_array_equal(windows.col2im(cols, x.shape, kernel, stride, padding, out_hw), reference)


def test_relu_is_the_standard_paths(monkeypatch):
    x = np.array([[-1.0, 0.0, -0.0, 2.0, np.nan, np.inf, -np.inf]], dtype=np.float32)
    dy = np.array([[1.0, -2.0, 3.0, -4.0, 5.0, 6.0, 7.0]], dtype=np.float32)
    layer = xpcnn.ReLU()
    results = []
    for standard in ("1", "0"):
        monkeypatch.setenv("XPCNN_STANDARD_PATH", standard)
        y = layer.forward(x)
        dx = layer.backward(dy)
        layer.forward(x)
        results.append((y, dx, layer.backward(-dy)))  # -dy: zeros of both signs
    for fast, reference in zip(results[1], results[0]):
        np.testing.assert_array_equal(fast, reference)
        assert np.array_equal(np.signbit(fast), np.signbit(reference))  # -0.0 where the standard path has it


def test_input_columns_are_the_standard_paths_written_into_the_spent_columns():
    rng = np.random.default_rng(4)
    weight_rows, dy2 = rng.standard_normal((5, 12)), rng.standard_normal((5, 30))
    spent = rng.standard_normal((13, 30))  # a convolution with bias: one row more
    got = fast_numpy.input_columns(weight_rows, dy2, spent)
    np.testing.assert_array_equal(got, conv.input_columns(weight_rows, dy2, spent))
    assert np.shares_memory(got, spent)
