"""The layers' matrix product (xpcnn/layers/product.py) on every backend, and the layers
reaching it through backend.fast_path."""

from __future__ import annotations

import numpy as np

import xpcnn
from xpcnn import backend, kernels
from xpcnn.layers import product


def test_matmul_multiplies_views_as_numpy_does(target, to_target):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, 3)), rng.standard_normal((5, 3))
    got = product.matmul(to_target(a), to_target(b).T)
    np.testing.assert_allclose(backend.to_numpy(got), a @ b.T, rtol=1e-12)


def test_dense_and_convolution_layers_take_their_products_through_the_fast_path_seam(monkeypatch):
    """Forward and backward: a backend's product kernel (CuPy's, for recorded steps) sees all."""
    calls = []

    def counted(a, b):
        calls.append((tuple(a.shape), tuple(b.shape)))
        return a @ b

    monkeypatch.setattr(backend, "fast_paths", lambda name: ["counting"])
    monkeypatch.setattr(kernels, "registry", lambda module: {product.matmul: counted})
    rng = np.random.default_rng(1)
    net = xpcnn.Sequential([xpcnn.Conv2D(1, 2, 3, rng=rng), xpcnn.Conv2D(2, 2, 3, rng=rng), xpcnn.Flatten(),
                            xpcnn.Dense(8, 3, rng=rng)])
    dy = net.forward(rng.standard_normal((5, 1, 6, 6)).astype(np.float32))
    net.backward(np.ones_like(dy))
    # forward: 2 convolutions, 1 dense; backward: dense weight and input, conv weights and inputs
    assert len(calls) == 3 + 2 + 2 + 2
