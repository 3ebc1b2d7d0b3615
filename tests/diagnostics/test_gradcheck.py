"""The gradient checker (xpcnn/diagnostics/gradcheck.py): it catches a wrong backward, refuses float32,
and checks a whole network end to end, float64, on every backend.

The gradient checks of each layer live with that layer's tests (tests/layers/), the loss's
in tests/test_losses.py.
"""

from __future__ import annotations

import numpy as np
import pytest

import xpcnn
from xpcnn import gradcheck, gradcheck_loss
from xpcnn.diagnostics.gradcheck import GradcheckError, GradcheckResult

from ..helpers import GRAD_TOL


def test_small_network_end_to_end(target, to_target):
    rng = np.random.default_rng(3)
    net = xpcnn.Sequential([
        xpcnn.Conv2D(1, 3, 3, padding=1, rng=rng), xpcnn.BatchNorm2D(3), xpcnn.Tanh(),
        xpcnn.AvgPool2D(2), xpcnn.Conv2D(3, 2, (2, 3), stride=(1, 2), rng=rng), xpcnn.Sigmoid(),
        xpcnn.Flatten(), xpcnn.Dense(2 * 2 * 1, 4, rng=rng),
    ]).to(target[0], target[1], "float64")
    gradcheck(net, to_target(rng.standard_normal((2, 1, 7, 6)), "float64"), tol=GRAD_TOL)


def test_gradcheck_catches_a_wrong_backward(target, to_target):
    class WrongTanh(xpcnn.Tanh):
        def backward(self, dy):
            return super().backward(dy) * 1.001

    x = to_target(np.random.default_rng(0).standard_normal((2, 3)), "float64")
    with pytest.raises(GradcheckError, match="input"):
        gradcheck(WrongTanh(), x, tol=GRAD_TOL)
    assert gradcheck(WrongTanh(), x, raise_on_fail=False).worst > 1e-4


def test_gradcheck_catches_a_wrong_parameter_gradient(target, to_target):
    class WrongWeight(xpcnn.Dense):  # the input's and the bias's gradients right, the weight's 0.1 % off
        def backward(self, dy, input_grad=True):
            dx = super().backward(dy, input_grad)
            self.grads["weight"] = self.grads["weight"] * 1.001
            return dx

    rng = np.random.default_rng(0)
    x = to_target(rng.standard_normal((4, 5)), "float64")
    with pytest.raises(GradcheckError, match=r"failed: worst relative error .*weight: "):
        gradcheck(WrongWeight(5, 3, rng=rng).to(target[0], target[1], "float64"), x, tol=GRAD_TOL)
    errors = gradcheck(WrongWeight(5, 3, rng=rng).to(target[0], target[1], "float64"), x, raise_on_fail=False).errors
    assert errors["weight"] > 1e-4 and errors["input"] <= GRAD_TOL and errors["bias"] <= GRAD_TOL, errors


def test_a_gradient_that_is_truly_zero_is_judged_against_the_rounding_of_the_terms():
    # A bias before batch norm changes nothing: its finite differences are rounding noise of
    # the summed terms, which cancel in the objective; scaled by the objective alone they
    # read as 6e-7, close to the tolerance.
    for seed in range(3):
        rng = np.random.default_rng(seed)
        net = xpcnn.Sequential([xpcnn.Conv2D(3, 6, 3, rng=seed), xpcnn.BatchNorm2D(6)]).to("numpy", dtype="float64")
        result = gradcheck(net, rng.standard_normal((8, 3, 8, 8)), seed=seed)
        assert result.errors["0.bias"] < 1e-7, result


def test_gradcheck_refuses_float32(to_target):
    with pytest.raises(TypeError, match="float64"):
        gradcheck(xpcnn.Tanh(), to_target(np.zeros((2, 2)), "float32"))


def test_a_network_with_dropout_is_checked_with_one_mask():
    rng = np.random.default_rng(0)
    net = xpcnn.Sequential([xpcnn.Flatten(), xpcnn.Dense(12, 8, rng=rng), xpcnn.Dropout(0.5, seed=1),
                            xpcnn.Tanh(), xpcnn.Dense(8, 3, rng=rng)]).to("numpy", dtype="float64")
    result = gradcheck(net, rng.standard_normal((4, 1, 3, 4)), tol=GRAD_TOL)
    assert result.worst <= GRAD_TOL and net[2].calls == 1  # every evaluation drew the first mask


def test_a_network_failing_its_check_is_named_in_one_line():
    class Doubling(xpcnn.ReLU):
        def backward(self, dy):  # twice the right gradient
            return 2 * super().backward(dy)

    net = xpcnn.Sequential([xpcnn.Dense(3, 2, rng=0), Doubling()]).to("numpy", dtype="float64")  # not all ReLUs off
    x = np.random.default_rng(0).standard_normal((2, 3))
    with pytest.raises(xpcnn.GradcheckError, match=r"^gradcheck of Sequential\(Dense, Doubling\) failed") as error:
        xpcnn.gradcheck(net, x)
    assert "\n" not in str(error.value)
    with pytest.raises(TypeError, match="gradcheck x must be an array of the layer's backend, got list"):
        xpcnn.gradcheck(net, [[1.0, 2.0, 3.0]])


class Centred(xpcnn.Layer):
    """y = x - running_mean, the buffer updated from each training batch after it is used:
    backward is exactly dy, which gradcheck must find though every forward moves the buffer."""

    buffer_names = ("running_mean",)

    def __init__(self):
        super().__init__()
        self.buffers = {"running_mean": xpcnn.init.zeros((1,))}

    def forward(self, x, training=True):
        xp = self._namespace(x)
        y = x - self.buffers["running_mean"]
        if training:
            self.buffers["running_mean"] = 0.5 * self.buffers["running_mean"] + 0.5 * xp.mean(x)
        return self._save_for_backward(training, None, y)

    def backward(self, dy):
        self._saved_for_backward(dy)
        return dy


def test_a_forward_that_reads_a_buffer_it_updates_is_checked_on_one_function():
    layer, x = Centred().to("numpy", dtype="float64"), np.random.default_rng(0).standard_normal((2, 3))
    assert gradcheck(layer, x).worst < 1e-8
    np.testing.assert_array_equal(layer.buffers["running_mean"], [0.5 * x.mean()])  # as after one training step


class Scaled(xpcnn.Layer):
    def __init__(self, grad):
        super().__init__()
        self.grad = grad
        self.params = {"gain": xpcnn.init.ones((3,))}

    def forward(self, x, training=True):
        self._namespace(x)
        return self._save_for_backward(training, x, x * self.params["gain"])

    def backward(self, dy):
        x = self._saved_for_backward(dy)
        self.grads = self.grad(dy * x)
        return dy * self.params["gain"]


@pytest.mark.parametrize("grad, message", [
    (lambda g: {"gain": g.sum(axis=0)[None]}, r"the gradient of 'gain' is float64 \(1, 3\), the array float64 \(3,\)"),
    (lambda g: {}, "backward set no gradient for 'gain'"),
    (lambda g: {"gain": g.sum(axis=0).astype(np.float32)}, r"'gain' is float32 \(3,\), the array float64 \(3,\)"),
    (lambda g: {"gain": g.sum(axis=0).tolist()}, "the gradient of 'gain' is a list, not an array"),
])
def test_a_gradient_of_another_shape_or_none_is_named_not_scored(grad, message):
    with pytest.raises(GradcheckError, match=message):
        gradcheck(Scaled(grad).to("numpy", dtype="float64"), np.ones((2, 3)))


class NaNBackward(xpcnn.Tanh):
    def backward(self, dy):
        return super().backward(dy) * float("nan")


def test_a_backward_returning_nan_fails_instead_of_passing():
    x = np.random.default_rng(0).standard_normal((2, 3))
    with pytest.raises(GradcheckError, match="input: NaN or Inf in the backward's gradient"):
        gradcheck(NaNBackward(), x)
    assert np.isnan(gradcheck(NaNBackward(), x, raise_on_fail=False).worst)


def test_gradcheck_loss_catches_a_wrong_gradient(target, to_target):
    class OffLoss(xpcnn.SoftmaxCrossEntropy):  # 0.1 % off: finite, and wrong
        def backward(self):
            return super().backward() * 1.001

    rng = np.random.default_rng(0)
    logits, labels = to_target(rng.standard_normal((4, 3)), "float64"), to_target(np.array([0, 1, 2, 0]))
    with pytest.raises(GradcheckError, match=r"^gradcheck of SoftmaxCrossEntropy\(\) failed: worst relative error "
                                             r".* \(logits: "):
        gradcheck_loss(OffLoss(), logits, labels, tol=GRAD_TOL)
    assert gradcheck_loss(OffLoss(), logits, labels, raise_on_fail=False).worst > 1e-4
    assert gradcheck_loss(xpcnn.SoftmaxCrossEntropy(), logits, labels).worst <= GRAD_TOL


def test_a_loss_whose_gradient_is_inf_fails():
    class InfLoss(xpcnn.SoftmaxCrossEntropy):
        def backward(self):
            return super().backward() * float("inf")

    with pytest.raises(GradcheckError, match="logits: NaN or Inf"):
        gradcheck_loss(InfLoss(), np.random.default_rng(0).standard_normal((4, 3)), np.array([0, 1, 2, 0]))


def test_the_worst_error_is_nan_wherever_one_is():
    assert np.isnan(GradcheckResult({"input": 1e-9, "weight": float("nan")}).worst)


def test_a_backward_that_returns_no_input_gradient_is_named():
    class ReturnsNothing(xpcnn.Tanh):
        def backward(self, dy):
            super().backward(dy)

    with pytest.raises(GradcheckError, match=r"gradcheck of ReturnsNothing\(\): backward returned no input gradient"):
        gradcheck(ReturnsNothing(), np.ones((2, 3)))


@pytest.mark.parametrize("arguments, error, message", [
    ({"eps": 0}, ValueError, r"gradcheck_loss eps must be in \[1e-300, 1.0\], got 0"),
    ({"tol": "1e-6"}, TypeError, "gradcheck_loss tol must be a finite real number, got .1e-6."),
    ({"labels": [0, 1, 2, 0]}, TypeError, "gradcheck_loss labels must be an array of the loss's backend, got list"),
    ({"loss": xpcnn.SoftmaxCrossEntropy}, TypeError, r"takes a loss with forward\(logits, labels\) and backward\(\)"),
    ({"loss": "cross-entropy"}, TypeError, "takes a loss with forward"),
])
def test_gradcheck_loss_refuses_wrong_arguments_naming_them(arguments, error, message):
    given = {"loss": xpcnn.SoftmaxCrossEntropy(), "logits": np.zeros((4, 3)), "labels": np.array([0, 1, 2, 0]),
             **arguments}
    with pytest.raises(error, match=message):
        gradcheck_loss(given.pop("loss"), given.pop("logits"), given.pop("labels"), **given)
