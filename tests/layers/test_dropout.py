"""Dropout (xpcnn/layers/dropout.py): reproducible masks on every backend, identity in
evaluation, gradients against finite differences."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import xpcnn
from xpcnn import backend, gradcheck

from ..helpers import GRAD_TOL, seeds


def test_reproducible_everywhere_and_identity_in_eval(to_target, target):
    x_host = np.ones((4, 50), np.float32)
    masks = []
    for _ in range(2):
        layer = xpcnn.Dropout(0.3, seed=5)
        masks.append([backend.to_numpy(layer.forward(to_target(x_host, "float32"))) for _ in range(2)])
    np.testing.assert_array_equal(masks[0][0], masks[1][0])
    assert not np.array_equal(masks[0][0], masks[0][1])  # a new mask each step
    assert set(np.unique(masks[0][0])) <= {0.0, np.float32(1 / 0.7)}
    host_layer = xpcnn.Dropout(0.3, seed=5)
    np.testing.assert_array_equal(host_layer.forward(x_host), masks[0][0])  # same mask as NumPy
    y = xpcnn.Dropout(0.3).forward(to_target(x_host, "float32"), training=False)
    np.testing.assert_array_equal(backend.to_numpy(y), x_host)


class _FixedMaskDropout(xpcnn.Dropout):
    """Dropout drawing the same mask on every call, so finite differences see one function."""

    def forward(self, x, training=True):
        self.calls = 0
        return super().forward(x, training)


@given(p=st.sampled_from([0.0, 0.2, 0.5, 0.9]), shape=st.lists(st.integers(1, 5), min_size=2, max_size=4).map(tuple),
       seed=seeds)
def test_gradient_matches_finite_differences(target, to_target, p, shape, seed):
    x = to_target(np.random.default_rng(seed).standard_normal(shape), "float64")
    gradcheck(_FixedMaskDropout(p, seed=seed % 1000), x, tol=GRAD_TOL)
