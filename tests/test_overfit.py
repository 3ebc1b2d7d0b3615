"""The seed-shaped network memorises a fixed random batch with plain SGD, on every backend."""

from __future__ import annotations

import numpy as np

import xpcnn
from xpcnn import backend

from .test_layers import seed_net


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
