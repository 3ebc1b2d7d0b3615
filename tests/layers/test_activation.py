"""ReLU, Tanh and Sigmoid (xpcnn/layers/activation.py): gradients against finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import xpcnn
from xpcnn import gradcheck

from ..helpers import GRAD_TOL, away_from_zero, seeds


@pytest.mark.parametrize("activation", [xpcnn.ReLU, xpcnn.Tanh, xpcnn.Sigmoid])
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple), seed=seeds)
def test_gradient_matches_finite_differences(target, to_target, activation, shape, seed):
    rng = np.random.default_rng(seed)
    x = to_target(away_from_zero(shape, rng) * 2, "float64")
    gradcheck(activation(), x, tol=GRAD_TOL)
