"""Conv2D (xpcnn/layers/conv.py): argument and shape checks, gradients against finite
differences, and outputs and gradients against torch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import xpcnn
from xpcnn import backend, gradcheck

from ..helpers import GRAD_TOL, ORACLE_DTYPES, check, seeds, torch_functional


@pytest.mark.parametrize(
    "layer, shape, message",
    [
        (xpcnn.Conv2D(3, 4, 3), (2, 1, 8, 8), r"expected input \(N, 3, H, W\).*got shape \(2, 1, 8, 8\)$"),
        (xpcnn.Conv2D(1, 4, 5), (2, 1, 4, 8),
         r"expected input \(N, 1, H, W\) with padded H >= 5 and W >= 5, got shape \(2, 1, 4, 8\)$"),
        (xpcnn.Conv2D(1, 4, 3), (1, 8, 8), r"expected a 4-D input \(N, C, H, W\), got shape \(1, 8, 8\)"),
        (xpcnn.Conv2D(3, 4, 3), (2, 8, 8, 3),
         r"expected input \(N, 3, H, W\).*got shape \(2, 8, 8, 3\); channels last\? pass x.transpose\(0, 3, 1, 2\)$"),
    ],
    ids=["channels", "kernel-taller-than-input", "not-4-d", "channels-last"],
)
def test_bad_shapes_name_layer_expected_and_actual(target, to_target, layer, shape, message):
    layer.to(*target)
    with pytest.raises(ValueError, match=r"^Conv2D\(in_channels=.*\): " + message):
        layer.forward(to_target(np.zeros(shape), "float32"))


@pytest.mark.parametrize("kwargs", [dict(kernel_size=0), dict(kernel_size=(2, 2, 2)), dict(kernel_size=2, stride=0),
                                    dict(kernel_size=3, padding=-1), dict(kernel_size=3, stride=2, padding="same")])
def test_bad_constructor_arguments(kwargs):
    with pytest.raises(ValueError):
        xpcnn.Conv2D(1, 1, **kwargs)


@pytest.mark.parametrize("padding", [(1, 2, 3), [], (1, 1, 1, 1, 1)])
def test_padding_of_another_length_is_refused_naming_every_form(padding):
    """The message named only "an integer or a pair" (pair's), though four are taken too."""
    with pytest.raises(ValueError, match=r"^Conv2D padding must be 'valid', 'same', an integer, a pair \(h, w\) or "
                                         r"four \(top, bottom, left, right\), got"):
        xpcnn.Conv2D(1, 1, 3, padding=padding)


def test_four_paddings_are_top_bottom_left_right_as_the_docstring_says():
    """Not torch.nn.functional.pad's (left, right, top, bottom): the docstring says which."""
    conv = xpcnn.Conv2D(1, 1, 1, padding=(1, 0, 0, 2), bias=False)
    conv.params["weight"] = np.ones((1, 1, 1, 1), np.float32)
    y = conv.forward(np.ones((1, 1, 2, 3), np.float32), training=False)
    assert y.shape == (1, 1, 3, 5)
    assert y[0, 0].tolist() == [[0] * 5, [1, 1, 1, 0, 0], [1, 1, 1, 0, 0]]


# -- gradients against central finite differences, float64, on every backend ---------------
# Hypothesis draws the configurations: kernels 1..5, strides 1..3, paddings 0..2,
# non-square inputs and kernels, odd sizes, batch 1.


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
def test_gradient_matches_finite_differences(target, to_target, cfg):
    rng = np.random.default_rng(cfg["seed"])
    layer = xpcnn.Conv2D(cfg["c"], cfg["o"], cfg["kernel"], cfg["stride"], cfg["padding"], rng=rng)
    layer.to(target[0], target[1], "float64")
    # Non-zero biases so the bias gradient is checked against a non-trivial output.
    layer.params["bias"] = to_target(rng.standard_normal(cfg["o"]), "float64")
    x = to_target(rng.standard_normal((cfg["n"], cfg["c"], *cfg["hw"])), "float64")
    assert gradcheck(layer, x, tol=GRAD_TOL).worst <= GRAD_TOL


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("kernel", [(2, 4), (3, 3), (5, 2)])
def test_gradient_with_string_padding(target, to_target, padding, kernel):
    rng = np.random.default_rng(1)
    layer = xpcnn.Conv2D(2, 3, kernel, padding=padding, rng=rng).to(target[0], target[1], "float64")
    x = to_target(rng.standard_normal((1, 2, 6, 7)), "float64")
    if padding == "same":
        assert tuple(layer.forward(x).shape) == (1, 3, 6, 7)
    gradcheck(layer, x, tol=GRAD_TOL)


# -- against torch.nn.functional.conv2d -------------------------------------------------------

CONV_CASES = [
    # (in, out, kernel, stride, padding, input H, W)
    (1, 8, 3, 1, 0, 28, 28),
    (3, 4, (2, 5), (2, 1), (1, 2), 11, 9),
    (2, 3, 5, 3, 2, 13, 10),
    (4, 2, 1, 2, 0, 7, 7),
    (2, 5, (4, 3), 1, "same", 8, 9),
]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("dtype", ORACLE_DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_matches_torch(target, dtype, case):
    F = torch_functional()
    cin, cout, kernel, stride, padding, h, w = case
    rng = np.random.default_rng(0)
    layer = xpcnn.Conv2D(cin, cout, kernel, stride, padding, rng=rng)
    params = {"weight": backend.to_numpy(layer.params["weight"]).astype(np.float64), "bias": rng.standard_normal(cout)}

    def fn(x, weight, bias):
        if padding == "same":
            return F.conv2d(x, weight, bias, stride, padding="same")
        ph, pw = (padding, padding) if isinstance(padding, int) else padding
        return F.conv2d(x, weight, bias, stride, (ph, pw))

    check(layer, fn, rng.standard_normal((2, cin, h, w)), target, dtype, params)


def test_a_second_step_reuses_the_spent_columns_and_gets_the_same_results(target, to_target):
    """The columns of one step are work memory for the next (and for the gradient on a
    fast path): nothing of the first step may leak into the second."""
    rng = np.random.default_rng(8)
    layer = xpcnn.Conv2D(2, 3, 3, padding=1, rng=rng).to(*target)
    x, dy = (to_target(rng.standard_normal(shape), "float32") for shape in ((4, 2, 5, 5), (4, 3, 5, 5)))
    steps = []
    for _ in range(2):
        y = backend.to_numpy(layer.forward(x))
        steps.append((y, backend.to_numpy(layer.backward(dy)), *map(backend.to_numpy, layer.grads.values())))
    for first, second in zip(*steps):
        np.testing.assert_array_equal(second, first)


@pytest.mark.parametrize("bias", [True, False])
def test_inference_in_chunks_gives_the_whole_batch_s_result(target, to_target, monkeypatch, bias):

    layer = xpcnn.Conv2D(3, 5, 3, stride=(1, 2), padding=1, bias=bias, rng=0).to(*target)
    layer.params = {key: to_target(np.random.default_rng(1).standard_normal(value.shape), "float32")
                    for key, value in layer.params.items()}  # a bias that is not zero
    x = to_target(np.random.default_rng(2).standard_normal((11, 3, 6, 7)), "float32")
    whole = backend.to_numpy(layer.forward(x, training=False))
    monkeypatch.setattr(backend, "scratch_bytes", lambda x: (27 + 1) * 6 * 4 * 4 * 4)  # 4 images a chunk: 4, 4, 3
    chunked = layer.forward(x, training=False)
    assert tuple(chunked.shape) == (11, 5, 6, 4)
    np.testing.assert_allclose(backend.to_numpy(chunked), whole, rtol=1e-6, atol=1e-6)
    trained = layer.forward(x, training=True)  # training keeps the whole batch's columns for backward
    np.testing.assert_allclose(backend.to_numpy(trained), whole, rtol=1e-6, atol=1e-6)
    assert layer.backward(trained).shape == x.shape


def test_a_backward_after_a_chunked_inference_forward_is_refused():
    """A large inference batch runs in chunks (backend.scratch_bytes): it too forgets the
    training forward before it."""
    layer = xpcnn.Conv2D(16, 4, 3, rng=0)
    x = np.random.default_rng(0).standard_normal((64, 16, 32, 32)).astype(np.float32)
    layer.forward(x, training=True)
    assert backend.scratch_bytes(x) // (145 * 30 * 30 * 4) < 64  # this batch is taken in chunks
    y = layer.forward(x + 1, training=False)
    with pytest.raises(RuntimeError, match="needs a preceding forward"):
        layer.backward(np.ones(tuple(y.shape), np.float32))
