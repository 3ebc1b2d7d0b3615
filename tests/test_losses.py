"""SoftmaxCrossEntropy (xpcnn/losses.py): gradients against finite differences, loss and
gradient against torch, huge logits, label and shape checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import xpcnn
from xpcnn import backend, gradcheck_loss

from .helpers import GRAD_TOL, ORACLE_DTYPES, ORACLE_TOLERANCE, rel, seeds


@given(n=st.integers(1, 6), k=st.integers(2, 10), scale=st.sampled_from([0.1, 1.0, 10.0]), seed=seeds)
def test_gradient_matches_finite_differences(target, to_target, n, k, scale, seed):
    rng = np.random.default_rng(seed)
    logits = to_target(rng.standard_normal((n, k)) * scale, "float64")
    labels = to_target(rng.integers(0, k, n))
    gradcheck_loss(xpcnn.SoftmaxCrossEntropy(), logits, labels, tol=GRAD_TOL)


@pytest.mark.parametrize("dtype", ORACLE_DTYPES)
@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_matches_torch(target, dtype, scale):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(4)
    logits_host, labels_host = rng.standard_normal((9, 10)) * scale, rng.integers(0, 10, 9)
    name, device = target
    logits = backend.to_backend(logits_host, name, device, dtype)
    loss_fn = xpcnn.SoftmaxCrossEntropy()
    loss = backend.to_numpy(loss_fn.forward(logits, backend.to_backend(labels_host, name, device)))
    dlogits = backend.to_numpy(loss_fn.backward())
    t_logits = torch.tensor(logits_host, dtype=getattr(torch, dtype), requires_grad=True)
    t_loss = F.cross_entropy(t_logits, torch.tensor(labels_host))
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


def test_labels_outside_the_classes_are_refused(to_target):
    loss = xpcnn.SoftmaxCrossEntropy()
    logits = to_target(np.zeros((3, 4)), "float32")
    for labels in ([0, 4, 1], [-1, 0, 0]):
        with pytest.raises(ValueError, match=r"labels must be in \[0, 4\) for 4 logits"):
            loss.forward(logits, to_target(np.array(labels)))
    unchecked = xpcnn.SoftmaxCrossEntropy(check_labels=False)  # the training loop's: Dataset checked them
    assert float(unchecked.forward(logits, to_target(np.array([0, 3, 1])))) == pytest.approx(np.log(4))
