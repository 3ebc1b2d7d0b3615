"""ReLU, Tanh, Sigmoid and GELU (xpcnn/layers/activation.py): gradients against finite differences,
GELU against torch, at huge inputs and with inputs it refuses."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import xpcnn
from xpcnn import backend, gradcheck
from xpcnn.layers.activation import GELU

from ..helpers import GRAD_TOL, ORACLE_DTYPES, away_from_zero, check, seeds, torch_functional


@pytest.mark.parametrize("activation", [xpcnn.ReLU, xpcnn.Tanh, xpcnn.Sigmoid, GELU])
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple), seed=seeds)
def test_gradient_matches_finite_differences(target, to_target, activation, shape, seed):
    rng = np.random.default_rng(seed)
    x = to_target(away_from_zero(shape, rng) * 2, "float64")
    gradcheck(activation(), x, tol=GRAD_TOL)


@pytest.mark.parametrize("dtype", ORACLE_DTYPES)
@pytest.mark.parametrize("scale", [1.0, 10.0])  # 10: past |x| = 20, where GELU clips its cubic
def test_gelu_matches_torch(target, dtype, scale):
    F = torch_functional()
    x = np.random.default_rng(6).standard_normal((4, 3, 5, 5)) * scale
    check(GELU(), lambda t: F.gelu(t, approximate="tanh"), x, target, dtype)


@pytest.mark.parametrize("dtype", ORACLE_DTYPES)
def test_gelu_of_huge_inputs_is_x_or_0_and_so_is_its_gradient(to_target, dtype):
    # x^3 overflows float32 beyond ~7e12 (torch's gradient is NaN there); no warning either
    huge = np.array([1e20, -1e20, 3e38, -3e38, 1e13, -1e13, 25.0, -25.0])
    layer = GELU()
    y = backend.to_numpy(layer.forward(to_target(huge, dtype)))
    dx = backend.to_numpy(layer.backward(to_target(np.full(8, 2.0), dtype)))
    np.testing.assert_array_equal(y, np.where(huge > 0, huge, 0.0).astype(dtype))
    np.testing.assert_array_equal(dx, np.where(huge > 0, 2.0, 0.0))


def test_gelu_refuses_integers_and_a_gradient_of_another_shape(to_target):
    layer = GELU()
    assert layer.config() == {} and repr(layer) == "GELU()" and layer.output_shape((2, 3)) == (2, 3)
    with pytest.raises(TypeError, match=r"GELU\(\): expected a floating-point input, got dtype"):
        layer.forward(to_target(np.arange(6).reshape(2, 3)))
    layer.forward(to_target(np.zeros((2, 3)), "float32"))
    with pytest.raises(ValueError, match=r"GELU\(\): backward expected dy of shape \(2, 3\), got \(3, 2\)"):
        layer.backward(to_target(np.zeros((3, 2)), "float32"))
