"""Weights by name (xpcnn/weights.py): values that load_state_dict would take wrongly."""

from __future__ import annotations

import numpy as np
import pytest

import xpcnn


def _net():
    return xpcnn.Sequential([xpcnn.Conv2D(1, 2, 3, rng=0), xpcnn.BatchNorm2D(2), xpcnn.Flatten(),
                             xpcnn.Dense(2 * 6 * 6, 3, rng=1)])


@pytest.mark.parametrize("key, value, message", [
    # each was taken: the imaginary part dropped, True as 1.0, NaN kept, 1e300 made Inf in float32
    ("0.weight", np.full((2, 1, 3, 3), 1 + 2j), r"0.weight: complex128 values, not real numbers"),
    ("0.weight", np.ones((2, 1, 3, 3), bool), r"0.weight: bool values, not real numbers"),
    ("3.bias", np.array([0.0, np.nan, 0.0]), r"3.bias: values that are not finite in float32"),
    ("1.running_var", np.full(2, 1e300), r"1.running_var: values that are not finite in float32 \(NaN, Inf or too"),
    # the counter was cast with int(): -5 and 1.5 (as 1) taken, a NaN or a pair failed in Python's int()
    ("1.num_batches_tracked", np.array(-5), r"1.num_batches_tracked: must be a count, one integer >= 0, got int64 "
                                            r"of shape \(\) \(-5\)"),
    ("1.num_batches_tracked", np.array(1.5), r"got float64 of shape \(\) \(1.5\)"),
    ("1.num_batches_tracked", np.array([1, 2]), r"got int64 of shape \(2,\)$"),
])
def test_values_that_would_load_wrongly_are_named_and_nothing_changes(key, value, message):
    net = _net()
    before = net.state_dict()
    with pytest.raises(ValueError, match=message):
        net.load_state_dict({**before, key: value})
    after = net.state_dict()
    assert all(np.array_equal(after[name], before[name]) for name in before)


def test_integer_weights_and_counts_of_torch_load_as_before():
    net = _net()
    state = {**net.state_dict(), "0.weight": np.ones((2, 1, 3, 3), np.int64), "1.num_batches_tracked": np.array(7)}
    net.load_state_dict(state)
    assert net.params["0.weight"].dtype == np.float32 and net.layers[1].extra_state()["num_batches_tracked"] == 7
