"""NumPy's fast paths (xpcnn/fast_numpy.py) give what the standard path gives, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

import xpcnn
from xpcnn import backend, fast_numpy
from xpcnn.layers import pool

# (kernel, stride, H, W): tiling windows (the fast path) and others (handed back).
POOLS = [(2, 2, 8, 6), (3, 3, 9, 6), ((2, 3), (2, 3), 6, 9), (2, 2, 7, 9), (3, 2, 9, 9), (1, 1, 4, 4)]


@pytest.mark.parametrize("kernel, stride, h, w", POOLS, ids=str)
def test_max_pool_backward_is_the_standard_paths(monkeypatch, kernel, stride, h, w):
    rng = np.random.default_rng(0)
    x = np.round(rng.standard_normal((5, 3, h, w)) * 2).astype(np.float32) / 2  # many ties
    x[0, 0] = 1.0  # windows that tie everywhere
    x[1, 1, 0, 0] = np.nan
    layer = xpcnn.MaxPool2D(kernel, stride)
    dy = rng.standard_normal(layer.output_shape(x.shape)).astype(np.float32)
    results = []
    for standard in ("1", "0"):
        monkeypatch.setenv("XPCNN_STANDARD_PATH", standard)
        layer.forward(x)
        results.append(layer.backward(dy))
    np.testing.assert_array_equal(results[1], results[0])


def test_the_layer_takes_the_fast_path_on_numpy_only(monkeypatch):
    monkeypatch.delenv("XPCNN_STANDARD_PATH", raising=False)
    assert backend.fast_path(pool.route_to_first_maxima, np.zeros(1)) is fast_numpy.route_to_first_maxima
    monkeypatch.setenv("XPCNN_STANDARD_PATH", "1")
    assert backend.fast_path(pool.route_to_first_maxima, np.zeros(1)) is pool.route_to_first_maxima
    if backend.unavailable_reason("array_api_strict") is None:
        monkeypatch.delenv("XPCNN_STANDARD_PATH")
        strict = backend.to_backend(np.zeros(1), "array_api_strict")
        assert backend.fast_path(pool.route_to_first_maxima, strict) is pool.route_to_first_maxima
