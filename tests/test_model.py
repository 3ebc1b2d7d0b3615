"""Sequential (xpcnn/model.py): parameter names, summary, config round trip, and the
seed-shaped network memorising a fixed random batch with plain SGD on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import xpcnn
from xpcnn import backend, presets
from xpcnn.model import Sequential

from .helpers import seed_net


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


def test_seed_network_overfits_64_random_images(target):
    name, device = target
    rng = np.random.default_rng(0)
    images = backend.to_backend(rng.standard_normal((64, 1, 28, 28)), name, device, "float32")
    labels_host = rng.integers(0, 10, 64)
    labels = backend.to_backend(labels_host, name, device)
    net, loss_fn, lr = seed_net(0).to(name, device), xpcnn.SoftmaxCrossEntropy(), 0.05
    for step in range(200):
        logits = net.forward(images)
        loss_fn.forward(logits, labels)
        net.backward(loss_fn.backward())
        for layer in net:
            for key in layer.params:
                layer.params[key] -= lr * layer.grads[key]
        if step % 20 == 19:
            predictions = np.argmax(backend.to_numpy(net.forward(images, training=False)), axis=1)
            if np.all(predictions == labels_host):
                break
    accuracy = np.mean(np.argmax(backend.to_numpy(net.forward(images, training=False)), axis=1) == labels_host)
    assert accuracy == 1.0, f"{name}: {accuracy:.1%} after {step + 1} steps"


def test_a_layer_object_is_used_once_per_network():
    relu = xpcnn.ReLU()
    with pytest.raises(ValueError, match=r"the same ReLU\(\) object is at positions 1 and 3"):
        xpcnn.Sequential([xpcnn.Flatten(), relu, xpcnn.Dense(4, 4), relu])


def torch_lenet(torch):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.3), nn.Linear(128, 10),
    ).double()


def test_weights_move_from_a_torch_sequential_and_back():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    theirs = torch_lenet(torch)
    theirs(torch.randn(16, 1, 28, 28, dtype=torch.float64))  # a training pass: running statistics move
    theirs.eval()
    ours = presets.build("lenet").to("numpy", dtype="float64")
    ours.load_state_dict(theirs.state_dict())  # torch tensors, taken as they are
    x = np.random.default_rng(1).standard_normal((8, 1, 28, 28))
    expected = theirs(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(ours.forward(x, training=False), expected, rtol=0, atol=1e-10)
    assert ours[1].batches_tracked == 1

    again = torch_lenet(torch)
    again.load_state_dict({key: torch.from_numpy(value) for key, value in ours.state_dict().items()}, strict=True)
    again.eval()
    np.testing.assert_allclose(again(torch.from_numpy(x)).detach().numpy(), expected, rtol=0, atol=1e-10)


def test_load_state_dict_names_what_does_not_fit():
    ours = presets.build("tutorial")
    state = ours.state_dict()
    state["4.weight"] = np.zeros((128, 10), np.float32)
    state["9.weight"] = np.zeros(3, np.float32)
    del state["0.bias"]
    with pytest.raises(ValueError, match=r"4.weight: shape \(128, 10\), this network needs \(128, 1352\); "
                                         r"missing 0.bias; unexpected 9.weight"):
        ours.load_state_dict(state)
    before = ours.state_dict()["4.weight"].copy()
    with pytest.raises(ValueError):
        ours.load_state_dict(state, strict=False)  # a wrong shape is refused even then, changing nothing
    np.testing.assert_array_equal(ours.state_dict()["4.weight"], before)


def test_training_flops_count_the_products_of_convolutions_and_dense_layers():
    net = xpcnn.Sequential([xpcnn.Conv2D(1, 8, 3), xpcnn.ReLU(), xpcnn.Flatten(), xpcnn.Dense(8 * 26 * 26, 10)])
    forward = 2 * (1 * 3 * 3 * 8 * 26 * 26) + 2 * (8 * 26 * 26 * 10)  # multiply-adds of the two products
    assert net.training_flops((1, 28, 28)) == 3 * forward  # forward, input gradient, weight gradient


def test_a_network_that_knows_its_data_summarises_one_image_of_it():
    net = xpcnn.Sequential([xpcnn.Flatten(), xpcnn.Dense(784, 10, rng=0)])
    with pytest.raises(ValueError, match="summary needs an input shape"):
        net.summary()
    net.data = {"input_shape": [1, 28, 28]}
    assert net.summary() == net.summary((1, 1, 28, 28))
