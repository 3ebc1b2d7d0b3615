"""Initialisation (xpcnn/init.py): the same seed gives the same network and the same
dropout masks on every backend; He scaling."""

from __future__ import annotations

import numpy as np

import xpcnn
from xpcnn import backend, init

from .helpers import seed_net


def test_same_seed_same_network_on_every_backend(target):
    reference = {k: backend.to_numpy(v) for k, v in seed_net(7).params.items()}
    moved = seed_net(7).to(target[0], target[1])
    for name, value in moved.params.items():
        np.testing.assert_array_equal(backend.to_numpy(value), reference[name])
    assert moved.backend == target[0] and moved.dtype == "float32"
    other = seed_net(8).params["0.weight"]
    assert not np.array_equal(backend.to_numpy(other), reference["0.weight"])


def test_float64_copy_differs_from_float32_only_by_rounding():
    net32, net64 = seed_net(1), seed_net(1).to("numpy", dtype="float64")
    for name, value in net64.params.items():
        assert value.dtype == np.float64
        np.testing.assert_array_equal(value.astype(np.float32), net32.params[name])


def test_he_initialisation_scale():
    weight = backend.to_numpy(xpcnn.Conv2D(16, 64, 3, rng=0).params["weight"])
    assert abs(weight.std() - np.sqrt(2 / (16 * 9))) < 0.01


def test_keep_mask_depends_on_seed_and_call_only():
    reference = init.keep_mask(3, 7, 0.5, (400, 50))
    assert reference.shape == (400, 50) and set(np.unique(reference)) == {0.0, 1.0}
    assert abs(reference.mean() - 0.5) < 0.02
    np.testing.assert_array_equal(init.keep_mask(3, 7, 0.5, (400, 50)), reference)
    assert not np.array_equal(init.keep_mask(3, 8, 0.5, (400, 50)), reference)
    assert not np.array_equal(init.keep_mask(4, 7, 0.5, (400, 50)), reference)
