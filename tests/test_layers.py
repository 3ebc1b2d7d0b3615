"""Layer behaviour beyond gradients: validation, shapes, ties, determinism, state."""

from __future__ import annotations

import numpy as np
import pytest

import xpcnn
from xpcnn import backend
from xpcnn.model import Sequential


def seed_net(rng=0):
    rng = np.random.default_rng(rng)
    return Sequential([
        xpcnn.Conv2D(1, 8, 3, rng=rng), xpcnn.ReLU(), xpcnn.MaxPool2D(2), xpcnn.Flatten(),
        xpcnn.Dense(8 * 13 * 13, 128, rng=rng), xpcnn.ReLU(), xpcnn.Dense(128, 10, rng=rng),
    ])


@pytest.mark.parametrize(
    "layer, shape, message",
    [
        (xpcnn.Conv2D(3, 4, 3), (2, 1, 8, 8), r"expected input \(N, 3, H, W\).*got shape \(2, 1, 8, 8\)"),
        (xpcnn.Conv2D(1, 4, 5), (2, 1, 4, 8), r"padded H >= 5"),
        (xpcnn.Conv2D(1, 4, 3), (1, 8, 8), r"expected a 4-D input \(N, C, H, W\), got shape \(1, 8, 8\)"),
        (xpcnn.Dense(10, 2), (4, 9), r"Dense\(in_features=10, out_features=2\): expected input \(N, 10\), got shape \(4, 9\)"),
        (xpcnn.MaxPool2D(3), (1, 1, 2, 5), r"H >= 3"),
        (xpcnn.BatchNorm2D(3), (2, 4, 5, 5), r"expected input \(N, 3, H, W\)"),
        (xpcnn.Flatten(), (5,), r"batch axis"),
    ],
)
def test_bad_shapes_name_layer_expected_and_actual(target, to_target, layer, shape, message):
    layer.to(*target)
    with pytest.raises(ValueError, match=message):
        layer.forward(to_target(np.zeros(shape), "float32"))


def test_dtype_mismatch_and_integer_input(target, to_target):
    layer = xpcnn.Dense(3, 2).to(*target)  # float32 parameters
    with pytest.raises(TypeError, match="does not match parameter dtype"):
        layer.forward(to_target(np.zeros((1, 3)), "float64"))
    with pytest.raises(TypeError, match="floating-point input"):
        xpcnn.ReLU().forward(to_target(np.zeros((1, 3), np.int64)))


def test_mixing_backends_is_refused():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="move the model"):
        xpcnn.Dense(3, 2).forward(torch.zeros((1, 3)))


def test_backward_needs_forward_and_matching_dy(to_target):
    layer = xpcnn.Tanh()
    with pytest.raises(RuntimeError, match="preceding forward"):
        layer.backward(to_target(np.zeros((2, 2)), "float32"))
    layer.forward(to_target(np.zeros((2, 2)), "float32"), training=False)
    with pytest.raises(RuntimeError, match="training=True"):
        layer.backward(to_target(np.zeros((2, 2)), "float32"))
    layer.forward(to_target(np.zeros((2, 2)), "float32"))
    with pytest.raises(ValueError, match=r"dy of shape \(2, 2\), got \(1, 2\)"):
        layer.backward(to_target(np.zeros((1, 2)), "float32"))


@pytest.mark.parametrize("kwargs", [dict(kernel_size=0), dict(kernel_size=(2, 2, 2)), dict(kernel_size=2, stride=0),
                                    dict(kernel_size=3, padding=-1), dict(kernel_size=3, stride=2, padding="same")])
def test_bad_constructor_arguments(kwargs):
    with pytest.raises(ValueError):
        xpcnn.Conv2D(1, 1, **kwargs)


@pytest.mark.parametrize("kernel, stride, hw", [(2, None, (7, 9)), (3, 2, (13, 13)), ((3, 2), (2, 3), (10, 11)), (1, 2, (5, 4))])
def test_pool_shapes_floor_semantics(to_target, kernel, stride, hw):
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


def test_dropout_reproducible_everywhere_and_identity_in_eval(to_target, target):
    x_host = np.ones((4, 50), np.float32)
    masks = []
    for _ in range(2):
        layer = xpcnn.Dropout(0.3, seed=5)
        masks.append([backend.to_numpy(layer.forward(to_target(x_host, "float32"))) for _ in range(2)])
    np.testing.assert_array_equal(masks[0][0], masks[1][0])
    assert not np.array_equal(masks[0][0], masks[0][1])  # a new mask each step
    assert set(np.unique(masks[0][0])) <= {0.0, np.float32(1 / 0.7)}
    host_layer = xpcnn.Dropout(0.3, seed=5)
    np.testing.assert_array_equal(host_layer.forward(x_host), masks[0][0])  # same mask as NumPy
    y = xpcnn.Dropout(0.3).forward(to_target(x_host, "float32"), training=False)
    np.testing.assert_array_equal(backend.to_numpy(y), x_host)


def test_same_seed_same_network_on_every_backend(target):
    reference = {k: backend.to_numpy(v) for k, v in seed_net(7).params.items()}
    moved = seed_net(7).to(target[0], target[1])
    for name, value in moved.params.items():
        np.testing.assert_array_equal(backend.to_numpy(value), reference[name])
    assert moved.backend == target[0] and moved.dtype == "float32"
    other = seed_net(8).params["0.weight"]
    assert not np.array_equal(backend.to_numpy(other), reference["0.weight"])


def test_float64_copy_differs_from_float32_only_by_rounding():
    net32, net64 = seed_net(1), seed_net(1).to("numpy", dtype="float64")
    for name, value in net64.params.items():
        assert value.dtype == np.float64
        np.testing.assert_array_equal(value.astype(np.float32), net32.params[name])


def test_he_initialisation_scale():
    weight = backend.to_numpy(xpcnn.Conv2D(16, 64, 3, rng=0).params["weight"])
    assert abs(weight.std() - np.sqrt(2 / (16 * 9))) < 0.01


def test_sequential_names_summary_and_config():
    net = seed_net()
    assert list(net.params) == ["0.weight", "0.bias", "4.weight", "4.bias", "6.weight", "6.bias"]
    assert net.num_params() == 80 + 1352 * 128 + 128 + 1290
    table = net.summary((1, 1, 28, 28))
    assert "(1, 8, 26, 26)" in table and "(1, 10)" in table and f"{net.num_params():,} parameters" in table
    rebuilt = Sequential.from_config(net.config())
    assert rebuilt.config() == net.config()
    with pytest.raises(ValueError, match="unknown layer type 'Evil'"):
        Sequential.from_config([{"type": "Evil", "config": {}}])
    with pytest.raises(ValueError, match=r"expected input \(N, 1352\)"):
        net.summary((1, 1, 30, 30))


def test_layer_grads_follow_param_keys(target, to_target):
    for layer in (xpcnn.Conv2D(2, 3, 2), xpcnn.Dense(4, 2), xpcnn.BatchNorm2D(2)):
        layer.to(*target, dtype="float64")
        shape = (3, 4) if isinstance(layer, xpcnn.Dense) else (3, 2, 4, 4)
        y = layer.forward(to_target(np.random.default_rng(0).standard_normal(shape), "float64"))
        layer.backward(to_target(np.ones(tuple(y.shape)), "float64"))
        assert set(layer.grads) == set(layer.params)
        for key in layer.params:
            assert layer.grads[key].shape == layer.params[key].shape


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


def test_skipping_the_input_gradient_keeps_parameter_gradients(target, to_target):
    x = to_target(np.random.default_rng(0).standard_normal((4, 1, 28, 28)), "float64")
    full, skipped = seed_net(1).to(*target, "float64"), seed_net(1).to(*target, "float64")
    for net, input_grad in ((full, True), (skipped, False)):
        y = net.forward(x)
        result = net.backward(to_target(np.ones(tuple(y.shape)), "float64"), input_grad=input_grad)
        assert (result is None) == (not input_grad)
    for name in full.grads:
        np.testing.assert_array_equal(backend.to_numpy(skipped.grads[name]), backend.to_numpy(full.grads[name]))
