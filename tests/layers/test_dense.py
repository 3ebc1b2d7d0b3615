"""Dense (xpcnn/layers/dense.py): shape checks, gradients against finite differences, and
outputs and gradients against torch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import xpcnn
from xpcnn import backend, gradcheck

from ..helpers import GRAD_TOL, ORACLE_DTYPES, check, seeds, torch_functional


def test_bad_shape_names_layer_expected_and_actual(target, to_target):
    layer = xpcnn.Dense(10, 2)
    layer.to(*target)
    message = r"Dense\(in_features=10, out_features=2\): expected input \(N, 10\), got shape \(4, 9\)"
    with pytest.raises(ValueError, match=message):
        layer.forward(to_target(np.zeros((4, 9)), "float32"))


@given(n=st.integers(1, 4), fin=st.integers(1, 12), fout=st.integers(1, 6), seed=seeds)
def test_gradient_matches_finite_differences(target, to_target, n, fin, fout, seed):
    rng = np.random.default_rng(seed)
    layer = xpcnn.Dense(fin, fout, rng=rng).to(target[0], target[1], "float64")
    layer.params["bias"] = to_target(rng.standard_normal(fout), "float64")
    gradcheck(layer, to_target(rng.standard_normal((n, fin)), "float64"), tol=GRAD_TOL)


@pytest.mark.parametrize("dtype", ORACLE_DTYPES)
def test_matches_torch(target, dtype):
    F = torch_functional()
    rng = np.random.default_rng(2)
    layer = xpcnn.Dense(20, 7, rng=rng)
    params = {"weight": backend.to_numpy(layer.params["weight"]).astype(np.float64), "bias": rng.standard_normal(7)}
    check(layer, F.linear, rng.standard_normal((5, 20)), target, dtype, params)
