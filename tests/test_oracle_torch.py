"""xpcnn against an independent oracle: torch.nn.functional and autograd.

Forward outputs and every gradient must agree: float64 within 1e-10, float32 within 1e-5
(relative, max norm). xpcnn runs on every CPU backend; torch is always the reference.
"""

from __future__ import annotations

import numpy as np
import pytest

import xpcnn
from xpcnn import backend

torch = pytest.importorskip("torch")
F = torch.nn.functional

TOLERANCE = {"float64": 1e-10, "float32": 1e-5}
DTYPES = ["float64", "float32"]


def rel(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = max(np.abs(expected).max(initial=0.0), 1e-12)
    return float(np.abs(actual - expected).max(initial=0.0) / scale)


def run_xpcnn(layer, x_host, dy_host, name, device, dtype):
    layer.to(name, device, dtype)
    x = backend.to_backend(x_host, name, device, dtype)
    y = layer.forward(x)
    dx = layer.backward(backend.to_backend(dy_host, name, device, dtype))
    grads = {k: backend.to_numpy(v) for k, v in layer.grads.items()}
    return backend.to_numpy(y), backend.to_numpy(dx), grads


def run_torch(fn, x_host, dy_host, params_host, dtype):
    tdtype = getattr(torch, dtype)
    x = torch.tensor(x_host, dtype=tdtype, requires_grad=True)
    params = {k: torch.tensor(v, dtype=tdtype, requires_grad=True) for k, v in params_host.items()}
    y = fn(x, **params)
    y.backward(torch.tensor(dy_host, dtype=tdtype))
    return y.detach().numpy(), x.grad.numpy(), {k: p.grad.numpy() for k, p in params.items()}


def check(layer, fn, x_host, target, dtype, params_host=None):
    """Same weights, input and upstream gradient through xpcnn and through torch."""
    params_host = params_host or {k: backend.to_numpy(v).astype(np.float64) for k, v in layer.params.items()}
    for key, value in params_host.items():
        layer.params[key] = value
    tdtype = getattr(torch, dtype)
    with torch.no_grad():
        probe = fn(torch.tensor(x_host, dtype=tdtype), **{k: torch.tensor(v, dtype=tdtype) for k, v in params_host.items()})
    dy_host = np.random.default_rng(7).standard_normal(tuple(probe.shape))
    ref_y, ref_dx, ref_grads = run_torch(fn, x_host, dy_host, params_host, dtype)
    y, dx, grads = run_xpcnn(layer, x_host, dy_host, target[0], target[1], dtype)
    tol = TOLERANCE[dtype]
    assert y.shape == ref_y.shape
    assert rel(y, ref_y) <= tol, f"forward differs: {rel(y, ref_y):.2e}"
    assert rel(dx, ref_dx) <= tol, f"input gradient differs: {rel(dx, ref_dx):.2e}"
    assert set(grads) == set(ref_grads)
    for key in grads:
        assert rel(grads[key], ref_grads[key]) <= tol, f"{key} gradient differs: {rel(grads[key], ref_grads[key]):.2e}"


CONV_CASES = [
    # (in, out, kernel, stride, padding, input H, W)
    (1, 8, 3, 1, 0, 28, 28),
    (3, 4, (2, 5), (2, 1), (1, 2), 11, 9),
    (2, 3, 5, 3, 2, 13, 10),
    (4, 2, 1, 2, 0, 7, 7),
    (2, 5, (4, 3), 1, "same", 8, 9),
]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv2d(target, dtype, case):
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


POOL_CASES = [(2, None, 28, 28), (3, 2, 13, 13), (2, 2, 7, 9), ((2, 3), (1, 2), 6, 8), (3, 1, 5, 5)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=str)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pooling(target, dtype, case, kind):
    kernel, stride, h, w = case
    rng = np.random.default_rng(1)
    # Rounded inputs make ties common: first-maximum routing must match torch's.
    x = np.round(rng.standard_normal((2, 3, h, w)) * 2) / 2
    if kind == "max":
        layer, fn = xpcnn.MaxPool2D(kernel, stride), lambda x: F.max_pool2d(x, kernel, stride)
    else:
        layer, fn = xpcnn.AvgPool2D(kernel, stride), lambda x: F.avg_pool2d(x, kernel, stride)
    check(layer, fn, x, target, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense(target, dtype):
    rng = np.random.default_rng(2)
    layer = xpcnn.Dense(20, 7, rng=rng)
    params = {"weight": backend.to_numpy(layer.params["weight"]).astype(np.float64), "bias": rng.standard_normal(7)}
    check(layer, F.linear, rng.standard_normal((5, 20)), target, dtype, params)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_training_and_running_stats(target, dtype):
    rng = np.random.default_rng(3)
    layer = xpcnn.BatchNorm2D(4, momentum=0.2)
    params = {"weight": rng.uniform(0.5, 2, 4), "bias": rng.standard_normal(4)}
    x = rng.standard_normal((3, 4, 5, 6)) * 2 + 1

    def fn(x, weight, bias):  # fresh running buffers: only the batch statistics matter here
        return F.batch_norm(x, torch.zeros(4, dtype=x.dtype), torch.ones(4, dtype=x.dtype), weight, bias, True, 0.2, 1e-5)

    check(layer, fn, x, target, dtype, params)
    # One training step from (0, 1) moves the running statistics as torch's does.
    running_mean, running_var = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    F.batch_norm(torch.tensor(x), running_mean, running_var, None, None, True, 0.2, 1e-5)
    tol = TOLERANCE[dtype]
    assert rel(backend.to_numpy(layer.buffers["running_mean"]), running_mean.numpy()) <= tol
    assert rel(backend.to_numpy(layer.buffers["running_var"]), running_var.numpy()) <= tol
    # Evaluation mode normalises with the running statistics.
    xt = backend.to_backend(x, target[0], target[1], dtype)
    weight, bias = torch.tensor(params["weight"]), torch.tensor(params["bias"])
    expected = F.batch_norm(torch.tensor(x), running_mean, running_var, weight, bias, False)
    assert rel(backend.to_numpy(layer.forward(xt, training=False)), expected.numpy()) <= tol


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_softmax_cross_entropy(target, dtype, scale):
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
    assert rel(loss, t_loss.detach().numpy()) <= TOLERANCE[dtype]
    assert rel(dlogits, t_logits.grad.numpy()) <= TOLERANCE[dtype]
