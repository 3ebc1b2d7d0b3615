"""BatchNorm2D (xpcnn/layers/norm.py): shape checks, gradients against finite differences,
and training, running statistics and evaluation against torch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import xpcnn
from xpcnn import backend, gradcheck

from ..helpers import GRAD_TOL, ORACLE_DTYPES, ORACLE_TOLERANCE, check, rel, seeds


def test_bad_shape_names_layer_expected_and_actual(target, to_target):
    layer = xpcnn.BatchNorm2D(3)
    layer.to(*target)
    message = (r"^BatchNorm2D\(num_features=3, .*\): "
               r"expected input \(N, 3, H, W\), got shape \(2, 4, 5, 5\)$")
    with pytest.raises(ValueError, match=message):
        layer.forward(to_target(np.zeros((2, 4, 5, 5)), "float32"))


# At least 4 values per channel: with 2, x_hat is +-1 whatever x is, the input gradient
# is ~0 and any relative error measures rounding noise, not the backward.
@given(n=st.integers(1, 3), c=st.integers(1, 3), h=st.integers(2, 4), w=st.integers(2, 4), seed=seeds)
def test_gradient_matches_finite_differences(target, to_target, n, c, h, w, seed):
    rng = np.random.default_rng(seed)
    layer = xpcnn.BatchNorm2D(c).to(target[0], target[1], "float64")
    layer.params["weight"] = to_target(rng.uniform(0.5, 2.0, c), "float64")
    layer.params["bias"] = to_target(rng.standard_normal(c), "float64")
    gradcheck(layer, to_target(rng.standard_normal((n, c, h, w)) * 3 + 1, "float64"), tol=GRAD_TOL)


@pytest.mark.parametrize("dtype", ORACLE_DTYPES)
def test_training_and_running_stats_match_torch(target, dtype):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(3)
    layer = xpcnn.BatchNorm2D(4, momentum=0.2)
    params = {"weight": rng.uniform(0.5, 2, 4), "bias": rng.standard_normal(4)}
    x = rng.standard_normal((3, 4, 5, 6)) * 2 + 1

    def fn(x, weight, bias):  # fresh running buffers: only the batch statistics matter here
        return F.batch_norm(x, torch.zeros(4, dtype=x.dtype), torch.ones(4, dtype=x.dtype), weight, bias, True, 0.2,
                            1e-5)

    check(layer, fn, x, target, dtype, params)
    # One training step from (0, 1) moves the running statistics as torch's does.
    running_mean, running_var = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    F.batch_norm(torch.tensor(x), running_mean, running_var, None, None, True, 0.2, 1e-5)
    tol = ORACLE_TOLERANCE[dtype]
    assert rel(backend.to_numpy(layer.buffers["running_mean"]), running_mean.numpy()) <= tol
    assert rel(backend.to_numpy(layer.buffers["running_var"]), running_var.numpy()) <= tol
    # Evaluation mode normalises with the running statistics.
    xt = backend.to_backend(x, target[0], target[1], dtype)
    weight, bias = torch.tensor(params["weight"]), torch.tensor(params["bias"])
    expected = F.batch_norm(torch.tensor(x), running_mean, running_var, weight, bias, False)
    assert rel(backend.to_numpy(layer.forward(xt, training=False)), expected.numpy()) <= tol


@pytest.mark.parametrize("state", [{"num_batches_tracked": "3"}, {"num_batches_tracked": -1},
                                   {"num_batches_tracked": True}, {"num_batches_tracked": 1.0}, {"count": 3}])
def test_extra_state_is_a_count_of_batches(state):
    """Like Dropout's counter: a value that is no count was kept, and failed at the next
    training forward ("can only concatenate str") or counted from -1."""
    layer = xpcnn.BatchNorm2D(2)
    with pytest.raises(ValueError, match=r"expected extra state \{'num_batches_tracked': int >= 0\}"):
        layer.load_extra_state(state)
    assert layer.batches_tracked == 0
    layer.load_extra_state({"num_batches_tracked": 5})
    assert layer.extra_state() == {"num_batches_tracked": 5}


def test_training_updates_the_running_statistics_in_place(target, to_target):
    """A training step recorded as a CUDA graph keeps writing the arrays it was recorded
    with: the running statistics must be updated there, not replaced."""
    layer = xpcnn.BatchNorm2D(2).to(*target)
    buffers = dict(layer.buffers)
    layer.forward(to_target(np.arange(16.0).reshape(2, 2, 2, 2), "float32"))
    assert all(layer.buffers[name] is array for name, array in buffers.items())
    assert backend.to_numpy(layer.buffers["running_mean"]).tolist() != [0.0, 0.0]
    assert layer.batches_tracked == 1
