"""Flatten (xpcnn/layers/reshape.py): shape checks and gradients against finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import xpcnn
from xpcnn import gradcheck

from ..helpers import GRAD_TOL, seeds


def test_bad_shape_names_layer_expected_and_actual(target, to_target):
    layer = xpcnn.Flatten()
    layer.to(*target)
    message = (r"^Flatten\(\): "
               r"expected an input with a batch axis and at least one more, got shape \(5,\)$")
    with pytest.raises(ValueError, match=message):
        layer.forward(to_target(np.zeros((5,)), "float32"))


@given(shape=st.lists(st.integers(1, 4), min_size=2, max_size=4).map(tuple), seed=seeds)
def test_gradient_matches_finite_differences(target, to_target, shape, seed):
    gradcheck(xpcnn.Flatten(), to_target(np.random.default_rng(seed).standard_normal(shape), "float64"), tol=GRAD_TOL)
