"""MaxPool2D, AvgPool2D and GlobalAvgPool2D (xpcnn/layers/pool.py): shape checks, floor semantics, ties,
gradients against finite differences, and outputs and gradients against torch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import xpcnn
from xpcnn import backend, gradcheck

from ..helpers import GRAD_TOL, ORACLE_DTYPES, check, distinct_values, run_torch, run_xpcnn, seeds, torch_functional


def test_bad_shape_names_layer_expected_and_actual(target, to_target):
    layer = xpcnn.MaxPool2D(3)
    layer.to(*target)
    message = (r"^MaxPool2D\(kernel_size=3, stride=3\): "
               r"expected input \(N, C, H, W\) with H >= 3 and W >= 3, got shape \(1, 1, 2, 5\)$")
    with pytest.raises(ValueError, match=message):
        layer.forward(to_target(np.zeros((1, 1, 2, 5)), "float32"))


@pytest.mark.parametrize("kernel, stride, hw", [(2, None, (7, 9)), (3, 2, (13, 13)), ((3, 2), (2, 3), (10, 11)),
                                                (1, 2, (5, 4))])
def test_shapes_floor_semantics(to_target, kernel, stride, hw):
    x = to_target(np.random.default_rng(0).standard_normal((2, 3, *hw)), "float32")
    for layer in (xpcnn.MaxPool2D(kernel, stride), xpcnn.AvgPool2D(kernel, stride)):
        assert tuple(layer.forward(x).shape) == layer.output_shape(tuple(x.shape))


def test_maxpool_ties_route_to_first_maximum(to_target):
    # Overlapping 3/2 windows over constant input: every window ties everywhere.
    x = to_target(np.ones((1, 1, 5, 5)), "float64")
    layer = xpcnn.MaxPool2D(3, 2)
    layer.forward(x)
    dx = backend.to_numpy(layer.backward(to_target(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]), "float64")))
    expected = np.zeros((5, 5))
    expected[0, 0], expected[0, 2], expected[2, 0], expected[2, 2] = 1, 2, 3, 4
    np.testing.assert_array_equal(dx[0, 0], expected)


# -- gradients against central finite differences, float64, on every backend ---------------


@st.composite
def pool_configs(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(kh, kh + 5)), draw(st.integers(kw, kw + 5))
    return dict(n=draw(st.integers(1, 2)), c=draw(st.integers(1, 3)), kernel=(kh, kw),
                stride=(sh, sw), hw=(h, w), seed=draw(seeds))


@pytest.mark.parametrize("pool", [xpcnn.MaxPool2D, xpcnn.AvgPool2D])
@given(cfg=pool_configs())
def test_gradient_matches_finite_differences(target, to_target, pool, cfg):
    rng = np.random.default_rng(cfg["seed"])
    layer = pool(cfg["kernel"], cfg["stride"])
    x = to_target(distinct_values((cfg["n"], cfg["c"], *cfg["hw"]), rng), "float64")
    assert gradcheck(layer, x, tol=GRAD_TOL).worst <= GRAD_TOL


# -- against torch.nn.functional.max_pool2d / avg_pool2d ----------------------------------------

POOL_CASES = [(2, None, 28, 28), (3, 2, 13, 13), (2, 2, 7, 9), ((2, 3), (1, 2), 6, 8), (3, 1, 5, 5)]


@pytest.mark.parametrize("dtype", ORACLE_DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=str)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_matches_torch(target, dtype, case, kind):
    F = torch_functional()
    kernel, stride, h, w = case
    rng = np.random.default_rng(1)
    # Rounded inputs make ties common: first-maximum routing must match torch's.
    x = np.round(rng.standard_normal((2, 3, h, w)) * 2) / 2
    if kind == "max":
        layer, fn = xpcnn.MaxPool2D(kernel, stride), lambda x: F.max_pool2d(x, kernel, stride)
    else:
        layer, fn = xpcnn.AvgPool2D(kernel, stride), lambda x: F.avg_pool2d(x, kernel, stride)
    check(layer, fn, x, target, dtype)


@pytest.mark.parametrize("kernel, stride", [(2, None), (3, 2), ((2, 3), (1, 2))], ids=str)
def test_max_pool_sends_a_nan_windows_gradient_to_the_nan_as_torch_does(target, kernel, stride):
    F = torch_functional()
    x = np.round(np.random.default_rng(3).standard_normal((1, 2, 9, 9)) * 2) / 2
    x[0, 0, 4, 5] = x[0, 1, 0, 0] = np.nan  # at most one NaN in any window, where torch's rule is clear
    layer = xpcnn.MaxPool2D(kernel, stride)
    dy = np.random.default_rng(4).standard_normal(layer.output_shape(x.shape))
    ref_y, ref_dx, _ = run_torch(lambda t: F.max_pool2d(t, kernel, stride), x, dy, {}, "float64")
    y, dx, _ = run_xpcnn(layer, x, dy, target[0], target[1], "float64")
    np.testing.assert_array_equal(y, ref_y)  # NaN where torch has NaN
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-12, atol=0)


# -- global average pooling ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ORACLE_DTYPES)
@pytest.mark.parametrize("hw", [(1, 1), (5, 7), (16, 16)], ids=str)
def test_global_average_pooling_matches_torch(target, dtype, hw):
    F = torch_functional()
    x = np.random.default_rng(2).standard_normal((3, 4, *hw))
    check(xpcnn.GlobalAvgPool2D(), lambda t: F.adaptive_avg_pool2d(t, 1).flatten(1), x, target, dtype)


def test_global_average_pooling_gradient_is_the_mean_spread_back(target, to_target):
    layer = xpcnn.GlobalAvgPool2D().to(*target, "float64")
    x = to_target(np.random.default_rng(5).standard_normal((2, 3, 4, 5)), "float64")
    result = gradcheck(layer, x)
    assert result.worst <= GRAD_TOL, result
    y = layer.forward(x)
    assert tuple(y.shape) == (2, 3) == layer.output_shape((2, 3, 4, 5))
    dx = backend.to_numpy(layer.backward(to_target(np.ones((2, 3)), "float64")))
    np.testing.assert_array_equal(dx, np.full((2, 3, 4, 5), 1 / 20))
    with pytest.raises(ValueError, match=r"GlobalAvgPool2D\(\): expected a 4-D input"):
        layer.forward(to_target(np.zeros((2, 3)), "float64"))
