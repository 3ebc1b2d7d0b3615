"""BatchNorm2D -> MaxPool2D -> ReLU and BatchNorm2D -> ReLU as one step (xpcnn/layers/fused.py):
which blocks fuse, and a fused network trains exactly as its layers run alone, on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import xpcnn
from xpcnn.diagnostics.anomaly import AnomalyHook
from xpcnn.hooks import LayerHook, TraceHook
from xpcnn.layers.fused import NormPoolReLU, NormReLU, block_at
from xpcnn.optim import SGD

from ..helpers import rel


def block(kernel=2, stride=None):
    return [xpcnn.BatchNorm2D(3), xpcnn.MaxPool2D(kernel, stride), xpcnn.ReLU()]


@pytest.mark.parametrize("layers, shape, expected", [
    (block(), (2, 3, 8, 6), True),
    (block(3), (2, 3, 9, 6), True),
    (block() + [xpcnn.Flatten()], (2, 3, 8, 6), True),  # what follows does not matter
    (block(), (2, 3, 7, 6), False),  # the last row is in no window
    (block(3, 2), (2, 3, 7, 7), False),  # overlapping windows
    (block(), (2, 3, 1, 6), False),  # smaller than a window
    (block()[:2], (2, 3, 8, 6), False),
    ([xpcnn.BatchNorm2D(3), xpcnn.ReLU(), xpcnn.MaxPool2D(2)], (2, 3, 8, 6), False),
    (block(), (2, 3, 8), False),
    ([xpcnn.BatchNorm2D(3), xpcnn.MaxPool2D(2), type("MyReLU", (xpcnn.ReLU,), {})()], (2, 3, 8, 6), False),
], ids=["2x2", "3x3", "followed", "uncovered row", "overlap", "too small", "two layers", "order", "3-d", "subclass"])
def test_fuses_blocks_whose_windows_tile_the_input(layers, shape, expected):
    assert NormPoolReLU.fits(layers, 0, shape) is expected
    assert NormPoolReLU.fits([xpcnn.Flatten(), *layers], 1, shape) is expected
    assert isinstance(block_at(layers, 0, shape), NormPoolReLU) is expected


@pytest.mark.parametrize("layers, shape, expected", [
    ([xpcnn.BatchNorm2D(3), xpcnn.ReLU()], (2, 3, 5, 7), True),
    ([xpcnn.BatchNorm2D(3), xpcnn.ReLU(), xpcnn.MaxPool2D(2)], (2, 3, 1, 1), True),
    ([xpcnn.BatchNorm2D(3), xpcnn.Tanh()], (2, 3, 5, 7), False),
    ([xpcnn.BatchNorm2D(3), type("MyReLU", (xpcnn.ReLU,), {})()], (2, 3, 5, 7), False),
    ([xpcnn.BatchNorm2D(3), xpcnn.ReLU()], (2, 3, 5), False),
], ids=["any size", "followed", "another activation", "subclass", "3-d"])
def test_batch_norm_and_relu_fuse_on_any_feature_map(layers, shape, expected):
    assert NormReLU.fits(layers, 0, shape) is expected
    assert isinstance(block_at(layers, 0, shape), NormReLU) is expected


def small_net(rng, h=8):
    """Conv -> [BN -> pool -> ReLU] -> Conv -> [BN -> pool -> ReLU] -> Conv -> [BN -> ReLU]
    -> Dense, float64."""
    net = xpcnn.Sequential([
        xpcnn.Conv2D(2, 3, 3, padding=1, bias=False, rng=rng), *block(),
        xpcnn.Conv2D(3, 4, 3, padding=1, bias=False, rng=rng), xpcnn.BatchNorm2D(4), xpcnn.MaxPool2D(2), xpcnn.ReLU(),
        xpcnn.Conv2D(4, 4, 3, padding=1, bias=False, rng=rng), xpcnn.BatchNorm2D(4), xpcnn.ReLU(),
        xpcnn.Flatten(), xpcnn.Dense(4 * (h // 4) ** 2, 5, rng=rng),
    ])
    for layer in net:
        if isinstance(layer, xpcnn.BatchNorm2D):  # not the initial 1 and 0: a wrong gamma or beta would show
            c = layer.num_features
            layer.params.update(weight=rng.uniform(0.5, 2, c), bias=rng.standard_normal(c))
    return net.to("numpy", None, "float64")


def train(target, to_target, fuse, steps=3, n=6, h=8):
    """Weights, buffers and the last input gradient after `steps` SGD steps."""
    rng = np.random.default_rng(0)
    net = small_net(rng, h).to(target[0], target[1], "float64")
    net.fuse = fuse
    optimizer, loss = SGD(net, 0.1), xpcnn.SoftmaxCrossEntropy()
    for _ in range(steps):
        x, y = to_target(rng.standard_normal((n, 2, h, h)) * 2 + 1, "float64"), to_target(rng.integers(0, 5, n))
        loss.forward(net.forward(x), y)
        dx = net.backward(loss.backward())
        optimizer.step()
    state = {k: xpcnn.to_numpy(v) for k, v in {**net.params, **net.buffers}.items()}
    return state, xpcnn.to_numpy(dx), [layer.batches_tracked for layer in net if isinstance(layer, xpcnn.BatchNorm2D)]


def test_a_fused_network_trains_as_its_layers_run_alone(target, to_target):
    fused, alone = train(target, to_target, True), train(target, to_target, False)
    assert fused[2] == alone[2] == [3, 3, 3]  # batch norm counted each batch
    for name, want in alone[0].items():
        assert rel(fused[0][name], want) < 1e-12, name
    assert rel(fused[1], alone[1]) < 1e-12


def test_a_fused_network_infers_as_its_layers_do_bit_for_bit(target, to_target):
    """Inference: batch norm's x * scale + shift with the running statistics, the same
    operations fused or not, on every path."""
    rng = np.random.default_rng(5)
    net = small_net(rng).to(target[0], target[1], "float64")
    for layer in net:
        if isinstance(layer, xpcnn.BatchNorm2D):
            c = layer.num_features
            layer.buffers.update(running_mean=to_target(rng.standard_normal(c), "float64"),
                                 running_var=to_target(rng.uniform(0.5, 2, c), "float64"))
    x = to_target(rng.standard_normal((3, 2, 8, 8)), "float64")
    fused = xpcnn.to_numpy(net.forward(x, training=False))
    net.fuse = False
    np.testing.assert_array_equal(fused, xpcnn.to_numpy(net.forward(x, training=False)))


def test_the_standard_path_fuses_bit_for_bit(monkeypatch):
    monkeypatch.setenv("XPCNN_STANDARD_PATH", "1")
    fused, alone = (train(("numpy", None), np.asarray, fuse) for fuse in (True, False))
    for name, want in alone[0].items():
        np.testing.assert_array_equal(fused[0][name], want, err_msg=name)
    np.testing.assert_array_equal(fused[1], alone[1])


class Seen(LayerHook):
    def __init__(self):
        self.forward, self.backward = [], []

    def after_forward(self, index, layer, y):
        self.forward.append(index)

    def after_backward(self, index, layer, dx):
        self.backward.append(index)


def test_hooks_see_every_layer():
    rng = np.random.default_rng(1)
    net, seen = small_net(rng), Seen()
    x = rng.standard_normal((2, 2, 8, 8))
    with net.hooked(seen):
        net.backward(net.forward(x))
    assert seen.forward == list(range(len(net))) and seen.backward == seen.forward[::-1]


def test_hooks_around_a_backward_alone_see_a_fused_block_as_one_layer():
    """The forward ran fused: backward's hooks meet each block at its batch norm's index,
    with batch norm's parameters and gradients (what TraceHook and AnomalyHook read)."""
    rng = np.random.default_rng(1)
    net, seen, trace = small_net(rng), Seen(), TraceHook()
    net.forward(rng.standard_normal((2, 2, 8, 8)))
    with net.hooked(seen, trace, AnomalyHook()):
        net.backward(np.ones((2, 5)))
    assert seen.backward == [12, 11, 9, 8, 5, 4, 1, 0]
    assert net._steps is None  # backward released what the forward saved
    assert net[1].grads and set(net[1].grads) == {"weight", "bias"}


def test_inference_and_moving_the_model_leave_the_fused_steps_as_they_should(target, to_target):
    rng = np.random.default_rng(4)
    net = small_net(rng).to(target[0], target[1], "float64")
    x = to_target(rng.standard_normal((2, 2, 8, 8)), "float64")
    net.forward(x)
    net.forward(x, training=False)  # drops what the training forward saved: its gradient is another batch's
    assert net._steps is None
    with pytest.raises(RuntimeError, match="needs a preceding forward"):
        net.backward(to_target(np.ones((2, 5)), "float64"))
    net.forward(x)
    net.to("numpy", None, "float32")  # moving drops it, as the layers drop theirs
    assert net._steps is None
    with pytest.raises(RuntimeError, match="needs a preceding forward"):
        net.backward(np.ones((2, 5), np.float32))


def test_a_fused_step_checks_what_backward_gets():
    rng = np.random.default_rng(2)
    layers = block()
    step = NormPoolReLU(*layers)
    with pytest.raises(RuntimeError, match=r"BatchNorm2D\(.*needs a preceding forward"):
        step.backward(np.zeros((2, 3, 4, 3)))
    y = step.forward(rng.standard_normal((2, 3, 8, 6)).astype(np.float32))
    assert y.shape == (2, 3, 4, 3) and np.all(y >= 0)
    with pytest.raises(ValueError, match=r"ReLU\(\): backward expected dy of shape \(2, 3, 4, 3\)"):
        step.backward(np.zeros((2, 3, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm2D\(num_features=3.*expected input \(N, 3, H, W\)"):
        step.forward(np.zeros((2, 4, 8, 6), np.float32))
    step.forward(np.zeros((2, 3, 8, 6), np.float32), training=False)  # inference saves nothing
    with pytest.raises(RuntimeError, match="needs a preceding forward"):
        step.backward(np.zeros((2, 3, 4, 3), np.float32))


def test_a_block_whose_windows_do_not_tile_runs_layer_by_layer():
    """An input of 9x9: the first pool leaves a row and a column out, its block runs
    layer by layer; the second block (4x4) fuses."""
    rng = np.random.default_rng(3)
    net = small_net(rng, 9)
    x = rng.standard_normal((2, 2, 9, 9))
    net.forward(x)
    assert [type(step).__name__ for _, step, *_ in net._steps] == [
        "Conv2D", "BatchNorm2D", "MaxPool2D", "ReLU", "Conv2D", "NormPoolReLU", "Conv2D", "NormReLU", "Flatten",
        "Dense"]
    dx = net.backward(np.ones((2, 5)))
    net.fuse = False
    net.forward(x)
    assert rel(net.backward(np.ones((2, 5))), dx) < 1e-12
