"""Initialisation (xpcnn/init.py): the same seed gives the same network and the same
dropout masks on every backend; He scaling."""

from __future__ import annotations

import numpy as np
import pytest

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


def test_layers_given_no_generator_differ_from_each_other():
    first, second = xpcnn.Dense(8, 8), xpcnn.Dense(8, 8)
    assert not np.array_equal(first.params["weight"], second.params["weight"])
    narrow, wide = xpcnn.Dense(64, 32), xpcnn.Dense(64, 64)
    assert not np.array_equal(narrow.params["weight"], wide.params["weight"][:32])
    more, fewer = xpcnn.Conv2D(16, 32, 3), xpcnn.Conv2D(16, 16, 3)
    assert not np.array_equal(more.params["weight"][:16], fewer.params["weight"])
    one, two = xpcnn.Dropout(0.5), xpcnn.Dropout(0.5)
    assert one.seed != two.seed  # different masks


def test_a_seeded_script_builds_the_same_network_on_every_backend(target):
    def build():
        xpcnn.seed(11)
        return xpcnn.Sequential([xpcnn.Conv2D(1, 4, 3), xpcnn.ReLU(), xpcnn.Flatten(), xpcnn.Dropout(0.5),
                                 xpcnn.Dense(4 * 26 * 26, 10)])

    reference, moved = build(), build().to(*target)
    for name, value in reference.params.items():
        np.testing.assert_array_equal(backend.to_numpy(moved.params[name]), value, err_msg=name)
    assert reference.config() == moved.config()  # the dropout seed too
    xpcnn.seed(12)
    assert not np.array_equal(build().params["0.weight"], xpcnn.Conv2D(1, 4, 3).params["weight"])


def test_rebuilding_a_saved_network_leaves_the_library_generator_alone(tmp_path):
    xpcnn.seed(3)
    expected = xpcnn.Dense(8, 8).params["weight"]
    xpcnn.seed(3)
    xpcnn.Sequential.from_config(xpcnn.presets.build("lenet").config())
    np.testing.assert_array_equal(xpcnn.Dense(8, 8).params["weight"], expected)


def test_the_seed_is_an_integer():
    for bad, error in ((1.5, TypeError), ("3", TypeError), (True, TypeError), (-1, ValueError)):
        with pytest.raises(error, match="seed must be"):
            xpcnn.seed(bad)


@pytest.mark.parametrize("bad, error, message", [
    (True, TypeError, r"^Dense rng must be an integer seed or a numpy.random.Generator, got True$"),  # was seed 1
    (1.5, TypeError, r"^Dense rng must be an integer seed or a numpy.random.Generator, got 1.5$"),
    ("7", TypeError, r"^Dense rng must be an integer seed or a numpy.random.Generator, got '7'$"),
    (-1, ValueError, r"^Dense rng must be >= 0, got -1$"),  # was NumPy's "expected non-negative integer"
])
def test_a_layer_s_generator_is_a_seed_or_a_generator_and_the_error_names_the_layer(bad, error, message):
    with pytest.raises(error, match=message):
        xpcnn.Dense(2, 2, rng=bad)
    with pytest.raises(error, match=message.replace("Dense", "Conv2D")):
        xpcnn.Conv2D(1, 2, 3, rng=bad)
    np.testing.assert_array_equal(xpcnn.Dense(2, 2, rng=np.int64(3)).params["weight"],
                                  xpcnn.Dense(2, 2, rng=np.random.default_rng(3)).params["weight"])
