"""SoftmaxCrossEntropy (xpcnn/losses.py): gradients against finite differences, loss and
gradient against torch, with and without label smoothing, huge logits, label, shape and
smoothing checks."""

from __future__ import annotations

import numpy as np
import pytest
from array_api_compat import array_namespace, device
from hypothesis import given
from hypothesis import strategies as st

import xpcnn
from xpcnn import backend, gradcheck_loss

from .helpers import GRAD_TOL, ORACLE_DTYPES, ORACLE_TOLERANCE, rel, seeds


@given(n=st.integers(1, 6), k=st.integers(2, 10), scale=st.sampled_from([0.1, 1.0, 10.0]),
       smoothing=st.sampled_from([0.0, 0.1, 0.9]), seed=seeds)
def test_gradient_matches_finite_differences(target, to_target, n, k, scale, smoothing, seed):
    rng = np.random.default_rng(seed)
    logits = to_target(rng.standard_normal((n, k)) * scale, "float64")
    labels = to_target(rng.integers(0, k, n))
    gradcheck_loss(xpcnn.SoftmaxCrossEntropy(label_smoothing=smoothing), logits, labels, tol=GRAD_TOL)


@pytest.mark.parametrize("dtype", ORACLE_DTYPES)
@pytest.mark.parametrize("scale", [1.0, 1e4])
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5])
def test_matches_torch(target, dtype, scale, smoothing):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(4)
    logits_host, labels_host = rng.standard_normal((9, 10)) * scale, rng.integers(0, 10, 9)
    name, device = target
    logits = backend.to_backend(logits_host, name, device, dtype)
    loss_fn = xpcnn.SoftmaxCrossEntropy(label_smoothing=smoothing)
    loss = backend.to_numpy(loss_fn.forward(logits, backend.to_backend(labels_host, name, device)))
    dlogits = backend.to_numpy(loss_fn.backward())
    t_logits = torch.tensor(logits_host, dtype=getattr(torch, dtype), requires_grad=True)
    t_loss = F.cross_entropy(t_logits, torch.tensor(labels_host), label_smoothing=smoothing)
    t_loss.backward()
    assert np.isfinite(loss) and np.all(np.isfinite(dlogits))
    assert rel(loss, t_loss.detach().numpy()) <= ORACLE_TOLERANCE[dtype]
    assert rel(dlogits, t_logits.grad.numpy()) <= ORACLE_TOLERANCE[dtype]


def test_loss_is_stable_for_huge_logits(to_target):
    logits = to_target(np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 3.0]]), "float32")
    labels = to_target(np.array([1, 1]))
    loss_fn = xpcnn.SoftmaxCrossEntropy()
    loss = float(loss_fn.forward(logits, labels))
    grad = backend.to_numpy(loss_fn.backward())
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    assert loss == pytest.approx(1e4, rel=1e-6)


def test_loss_rejects_float_labels_and_bad_shapes(to_target):
    loss_fn = xpcnn.SoftmaxCrossEntropy()
    with pytest.raises(TypeError, match="labels must be integers"):
        loss_fn.forward(to_target(np.zeros((2, 3)), "float32"), to_target(np.zeros(2), "float32"))
    with pytest.raises(ValueError, match=r"logits \(N, K\) and labels \(N,\)"):
        loss_fn.forward(to_target(np.zeros((2, 3)), "float32"), to_target(np.zeros(3, np.int64)))


def test_labels_of_another_backend_or_device_than_the_logits_are_named():
    # array_api_compat's "Multiple namespaces for array inputs: [<module ...>]" came out instead
    loss, logits = xpcnn.SoftmaxCrossEntropy(), backend.to_backend(np.zeros((2, 3)), "array_api_strict")
    with pytest.raises(TypeError, match=r"^SoftmaxCrossEntropy: logits and labels must be arrays of one backend, got "
                                        r"array_api_strict\..* and numpy.ndarray; move the labels"):
        loss.forward(logits, np.array([0, 1]))
    elsewhere = backend.to_backend(np.array([0, 1]), "array_api_strict", "device1")
    with pytest.raises(ValueError, match=r"^SoftmaxCrossEntropy: logits are on device .*CPU_DEVICE.* but labels on "
                                         r".*device1"):
        loss.forward(logits, elsewhere)


def test_labels_outside_the_classes_are_refused(to_target):
    loss = xpcnn.SoftmaxCrossEntropy()
    logits = to_target(np.zeros((3, 4)), "float32")
    for labels in ([0, 4, 1], [-1, 0, 0]):
        with pytest.raises(ValueError, match=r"labels must be in \[0, 4\) for 4 logits"):
            loss.forward(logits, to_target(np.array(labels)))
    unchecked = xpcnn.SoftmaxCrossEntropy(check_labels=False)  # the training loop's: Dataset checked them
    assert float(unchecked.forward(logits, to_target(np.array([0, 3, 1])))) == pytest.approx(np.log(4))


def unsmoothed(logits, labels):
    """The loss and gradient as SoftmaxCrossEntropy computed them before label smoothing."""
    xp = array_namespace(logits, labels)
    n, k = logits.shape
    classes = xp.arange(k, dtype=labels.dtype, device=device(labels))
    one_hot = xp.astype(xp.reshape(labels, (n, 1)) == xp.reshape(classes, (1, k)), logits.dtype)
    shifted = logits - xp.max(logits, axis=1, keepdims=True)
    exp = xp.exp(shifted)
    sum_exp = xp.sum(exp, axis=1, keepdims=True)
    log_likelihood = xp.sum(one_hot * shifted, axis=1) - xp.log(xp.reshape(sum_exp, (n,)))
    return -xp.mean(log_likelihood), (exp / sum_exp - one_hot) / n


@pytest.mark.parametrize("dtype", ORACLE_DTYPES)
def test_no_smoothing_gives_the_bits_of_the_loss_before_smoothing(to_target, dtype):
    rng = np.random.default_rng(8)
    logits, labels = to_target(rng.standard_normal((33, 10)) * 3, dtype), to_target(rng.integers(0, 10, 33))
    expected = [backend.to_numpy(value) for value in unsmoothed(logits, labels)]
    for loss_fn in (xpcnn.SoftmaxCrossEntropy(), xpcnn.SoftmaxCrossEntropy(label_smoothing=0),
                    xpcnn.SoftmaxCrossEntropy(check_labels=False, label_smoothing=0.0)):
        loss = backend.to_numpy(loss_fn.forward(logits, labels))
        np.testing.assert_array_equal(loss, expected[0])
        np.testing.assert_array_equal(backend.to_numpy(loss_fn.backward()), expected[1])


def test_smoothing_spreads_eps_over_the_classes(to_target):
    # Equal logits: softmax is 1/K whatever the target, so the loss is log K.
    loss_fn = xpcnn.SoftmaxCrossEntropy(label_smoothing=0.3)
    assert float(loss_fn.forward(to_target(np.zeros((2, 4)), "float64"), to_target(np.array([0, 3])))) \
        == pytest.approx(np.log(4))
    target = np.array([[0.775, 0.075, 0.075, 0.075], [0.075, 0.075, 0.075, 0.775]])  # 0.7 one_hot + 0.3 / 4
    np.testing.assert_allclose(backend.to_numpy(loss_fn.backward()), (0.25 - target) / 2, rtol=1e-12)


@pytest.mark.parametrize("value, error, message", [
    (1.0, ValueError, r"SoftmaxCrossEntropy label_smoothing must be in \[0.0, 1.0\), got 1.0"),
    (-0.1, ValueError, r"must be in \[0.0, 1.0\), got -0.1"),
    (float("nan"), ValueError, r"must be in \[0.0, 1.0\), got nan"),
    ("0.1", TypeError, r"SoftmaxCrossEntropy label_smoothing must be a finite real number, got '0.1'"),
    (True, TypeError, "must be a finite real number, got True"),
    (None, TypeError, "must be a finite real number, got None"),
])
def test_label_smoothing_outside_0_to_1_is_refused(value, error, message):
    with pytest.raises(error, match=message):
        xpcnn.SoftmaxCrossEntropy(label_smoothing=value)


def test_repr_shows_what_differs_from_the_defaults():
    assert repr(xpcnn.SoftmaxCrossEntropy(label_smoothing=0.0)) == "SoftmaxCrossEntropy()"
    assert repr(xpcnn.SoftmaxCrossEntropy(label_smoothing=0.1)) == "SoftmaxCrossEntropy(label_smoothing=0.1)"
    assert repr(xpcnn.SoftmaxCrossEntropy(False, np.float32(0.5))) == \
        "SoftmaxCrossEntropy(check_labels=False, label_smoothing=0.5)"
