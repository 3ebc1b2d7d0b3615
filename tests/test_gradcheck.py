"""Every layer and the loss against central finite differences, float64, on every backend.

Hypothesis draws the configurations: kernels 1..5, strides 1..3, paddings 0..2,
non-square inputs and kernels, odd sizes, batch 1.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import xpcnn
from xpcnn import gradcheck, gradcheck_loss
from xpcnn.gradcheck import GradcheckError

from .helpers import away_from_zero, distinct_values

TOL = 1e-6
seeds = st.integers(0, 2**32 - 1)


@st.composite
def conv_configs(draw):
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, kh - 2 * ph), kh + 4))
    w = draw(st.integers(max(1, kw - 2 * pw), kw + 4))
    return dict(
        n=draw(st.integers(1, 2)), c=draw(st.integers(1, 2)), o=draw(st.integers(1, 3)),
        kernel=(kh, kw), stride=(sh, sw), padding=(ph, pw), hw=(h, w), seed=draw(seeds),
    )


@given(conv_configs())
def test_conv2d(target, to_target, cfg):
    rng = np.random.default_rng(cfg["seed"])
    layer = xpcnn.Conv2D(cfg["c"], cfg["o"], cfg["kernel"], cfg["stride"], cfg["padding"], rng=rng)
    layer.to(target[0], target[1], "float64")
    # Non-zero biases so the bias gradient is checked against a non-trivial output.
    layer.params["bias"] = to_target(rng.standard_normal(cfg["o"]), "float64")
    x = to_target(rng.standard_normal((cfg["n"], cfg["c"], *cfg["hw"])), "float64")
    assert gradcheck(layer, x, tol=TOL).worst <= TOL


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("kernel", [(2, 4), (3, 3), (5, 2)])
def test_conv2d_string_padding(target, to_target, padding, kernel):
    rng = np.random.default_rng(1)
    layer = xpcnn.Conv2D(2, 3, kernel, padding=padding, rng=rng).to(target[0], target[1], "float64")
    x = to_target(rng.standard_normal((1, 2, 6, 7)), "float64")
    if padding == "same":
        assert tuple(layer.forward(x).shape) == (1, 3, 6, 7)
    gradcheck(layer, x, tol=TOL)


@st.composite
def pool_configs(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(kh, kh + 5)), draw(st.integers(kw, kw + 5))
    return dict(n=draw(st.integers(1, 2)), c=draw(st.integers(1, 3)), kernel=(kh, kw),
                stride=(sh, sw), hw=(h, w), seed=draw(seeds))


@pytest.mark.parametrize("pool", [xpcnn.MaxPool2D, xpcnn.AvgPool2D])
@given(cfg=pool_configs())
def test_pooling(target, to_target, pool, cfg):
    rng = np.random.default_rng(cfg["seed"])
    layer = pool(cfg["kernel"], cfg["stride"])
    x = to_target(distinct_values((cfg["n"], cfg["c"], *cfg["hw"]), rng), "float64")
    assert gradcheck(layer, x, tol=TOL).worst <= TOL


@given(n=st.integers(1, 4), fin=st.integers(1, 12), fout=st.integers(1, 6), seed=seeds)
def test_dense(target, to_target, n, fin, fout, seed):
    rng = np.random.default_rng(seed)
    layer = xpcnn.Dense(fin, fout, rng=rng).to(target[0], target[1], "float64")
    layer.params["bias"] = to_target(rng.standard_normal(fout), "float64")
    gradcheck(layer, to_target(rng.standard_normal((n, fin)), "float64"), tol=TOL)


@pytest.mark.parametrize("activation", [xpcnn.ReLU, xpcnn.Tanh, xpcnn.Sigmoid])
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple), seed=seeds)
def test_activations(target, to_target, activation, shape, seed):
    rng = np.random.default_rng(seed)
    x = to_target(away_from_zero(shape, rng) * 2, "float64")
    gradcheck(activation(), x, tol=TOL)


# At least 4 values per channel: with 2, x_hat is +-1 whatever x is, the input gradient
# is ~0 and any relative error measures rounding noise, not the backward.
@given(n=st.integers(1, 3), c=st.integers(1, 3), h=st.integers(2, 4), w=st.integers(2, 4), seed=seeds)
def test_batchnorm(target, to_target, n, c, h, w, seed):
    rng = np.random.default_rng(seed)
    layer = xpcnn.BatchNorm2D(c).to(target[0], target[1], "float64")
    layer.params["weight"] = to_target(rng.uniform(0.5, 2.0, c), "float64")
    layer.params["bias"] = to_target(rng.standard_normal(c), "float64")
    gradcheck(layer, to_target(rng.standard_normal((n, c, h, w)) * 3 + 1, "float64"), tol=TOL)


class _FixedMaskDropout(xpcnn.Dropout):
    """Dropout drawing the same mask on every call, so finite differences see one function."""

    def forward(self, x, training=True):
        self.calls = 0
        return super().forward(x, training)


@given(p=st.sampled_from([0.0, 0.2, 0.5, 0.9]), shape=st.lists(st.integers(1, 5), min_size=2, max_size=4).map(tuple), seed=seeds)
def test_dropout(target, to_target, p, shape, seed):
    x = to_target(np.random.default_rng(seed).standard_normal(shape), "float64")
    gradcheck(_FixedMaskDropout(p, seed=seed % 1000), x, tol=TOL)


@given(shape=st.lists(st.integers(1, 4), min_size=2, max_size=4).map(tuple), seed=seeds)
def test_flatten(target, to_target, shape, seed):
    gradcheck(xpcnn.Flatten(), to_target(np.random.default_rng(seed).standard_normal(shape), "float64"), tol=TOL)


@given(n=st.integers(1, 6), k=st.integers(2, 10), scale=st.sampled_from([0.1, 1.0, 10.0]), seed=seeds)
def test_softmax_cross_entropy(target, to_target, n, k, scale, seed):
    rng = np.random.default_rng(seed)
    logits = to_target(rng.standard_normal((n, k)) * scale, "float64")
    labels = to_target(rng.integers(0, k, n))
    gradcheck_loss(xpcnn.SoftmaxCrossEntropy(), logits, labels, tol=TOL)


def test_small_network_end_to_end(target, to_target):
    rng = np.random.default_rng(3)
    net = xpcnn.Sequential([
        xpcnn.Conv2D(1, 3, 3, padding=1, rng=rng), xpcnn.BatchNorm2D(3), xpcnn.Tanh(),
        xpcnn.AvgPool2D(2), xpcnn.Conv2D(3, 2, (2, 3), stride=(1, 2), rng=rng), xpcnn.Sigmoid(),
        xpcnn.Flatten(), xpcnn.Dense(2 * 2 * 1, 4, rng=rng),
    ]).to(target[0], target[1], "float64")
    gradcheck(net, to_target(rng.standard_normal((2, 1, 7, 6)), "float64"), tol=TOL)


def test_gradcheck_catches_a_wrong_backward(target, to_target):
    class WrongTanh(xpcnn.Tanh):
        def backward(self, dy):
            return super().backward(dy) * 1.001

    x = to_target(np.random.default_rng(0).standard_normal((2, 3)), "float64")
    with pytest.raises(GradcheckError, match="input"):
        gradcheck(WrongTanh(), x, tol=TOL)
    assert gradcheck(WrongTanh(), x, raise_on_fail=False).worst > 1e-4


def test_gradcheck_refuses_float32(to_target):
    with pytest.raises(TypeError, match="float64"):
        gradcheck(xpcnn.Tanh(), to_target(np.zeros((2, 2)), "float32"))
