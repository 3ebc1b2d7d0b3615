"""Sequential (xpcnn/model.py): parameter names, summary, config round trip, and the
seed-shaped network memorising a fixed random batch with plain SGD on every backend."""

from __future__ import annotations

import time

import numpy as np
import pytest

import xpcnn
from xpcnn import backend, presets
from xpcnn.layers.base import ArchitectureError
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
    with pytest.raises(ValueError, match=r"unknown layer type .Evil.; a class of your own is known once "
                                         r"xpcnn.register_layer\(it\) has run; known: "):
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
    with pytest.raises(ValueError, match=r"^load_state_dict: 4.weight: shape \(128, 10\), this network needs "
                                         r"\(128, 1352\)$"):  # the missing and the unexpected key are let be
        ours.load_state_dict(state, strict=False)  # a wrong shape is refused even then, changing nothing
    np.testing.assert_array_equal(ours.state_dict()["4.weight"], before)
    state["4.weight"] = np.full((128, 1352), 0.5, np.float32)
    ours.load_state_dict(state, strict=False)  # the rest fits: loaded, 0.bias kept, 9.weight passed over
    assert np.all(ours.state_dict()["4.weight"] == 0.5) and "9.weight" not in ours.state_dict()
    with pytest.raises(TypeError, match=r"load_state_dict: 0.weight: not an array of a supported backend: list"):
        ours.load_state_dict({**ours.state_dict(), "0.weight": [[1.0]]})

    class Module:  # what forgetting torch's .state_dict() passes
        def state_dict(self):
            return {}

    with pytest.raises(TypeError, match=r"takes a mapping of names to arrays \(a torch module: pass "
                                        r"module.state_dict\(\)\), got Module"):
        ours.load_state_dict(Module())


def test_training_flops_count_the_products_of_convolutions_and_dense_layers():
    net = xpcnn.Sequential([xpcnn.Conv2D(1, 8, 3), xpcnn.ReLU(), xpcnn.Flatten(), xpcnn.Dense(8 * 26 * 26, 10)])
    forward = 2 * (1 * 3 * 3 * 8 * 26 * 26) + 2 * (8 * 26 * 26 * 10)  # multiply-adds of the two products
    assert net.training_flops((1, 28, 28)) == 3 * forward  # forward, input gradient, weight gradient
    # summary's shape, batch included, was "expected a 4-D input (N, C, H, W), got shape (1, 1, 1, 28, 28)"
    with pytest.raises(ValueError, match=r"training_flops takes one image's shape \(C, H, W\), such as \(1, 28, 28\), "
                                         r"got \(1, 1, 28, 28\)"):
        net.training_flops((1, 1, 28, 28))


def test_a_network_that_knows_its_data_summarises_one_image_of_it():
    net = xpcnn.Sequential([xpcnn.Flatten(), xpcnn.Dense(784, 10, rng=0)])
    with pytest.raises(ValueError, match="summary needs an input shape"):
        net.summary()
    net.data = {"input_shape": [1, 28, 28]}
    assert net.summary() == net.summary((1, 1, 28, 28))


# -- Residual: a block with a skip connection ------------------------------------------------


def residual_net(seed: int = 0, dropout: bool = False) -> Sequential:
    """A small residual network with every part a block can have: batch norm in both
    branches, a projection shortcut, an identity one, a fused BatchNorm -> MaxPool -> ReLU
    inside a body, a block inside a block, global pooling; 3x8x8 input, 4 classes."""
    rng = np.random.default_rng(seed)
    inner = xpcnn.Residual([xpcnn.Conv2D(6, 6, 3, padding=1, bias=False, rng=rng), xpcnn.BatchNorm2D(6)])
    return Sequential([
        xpcnn.Conv2D(3, 6, 3, padding=1, bias=False, rng=rng), xpcnn.BatchNorm2D(6), xpcnn.ReLU(),
        xpcnn.Residual([xpcnn.Conv2D(6, 6, 3, padding=1, bias=False, rng=rng), xpcnn.BatchNorm2D(6), xpcnn.ReLU(),
                        *([xpcnn.Dropout(0.2, seed=5)] if dropout else []), inner]),
        xpcnn.Residual([xpcnn.Conv2D(6, 8, 3, padding=1, bias=False, rng=rng), xpcnn.BatchNorm2D(8),
                        xpcnn.MaxPool2D(2), xpcnn.ReLU(), xpcnn.Conv2D(8, 8, 3, padding=1, rng=rng)],
                       [xpcnn.Conv2D(6, 8, 1, stride=2, bias=False, rng=rng), xpcnn.BatchNorm2D(8)]),
        xpcnn.GELU(), xpcnn.GlobalAvgPool2D(), xpcnn.Dense(8, 4, rng=rng),
    ])


def test_a_block_names_its_arrays_as_torch_does():
    net = residual_net()
    assert list(net.params)[3:8] == ["3.body.0.weight", "3.body.1.weight", "3.body.1.bias",
                                     "3.body.3.body.0.weight", "3.body.3.body.1.weight"]
    assert "4.shortcut.1.running_var" in net.buffers
    assert [position for position, _ in net.named_layers()][3:9] == [
        "3.body.0", "3.body.1", "3.body.2", "3.body.3.body.0", "3.body.3.body.1", "4.body.0"]
    table = net.summary((1, 3, 8, 8))
    assert "Residual (body + identity)" in table and "4.shortcut.0" in table and "(1, 8, 4, 4)" in table
    assert f"{net.num_params():,} parameters" in table
    net.set_array("3.body.3.body.1.running_mean", np.full(6, 2.0, np.float32))
    assert np.all(net[3].body[3].body[1].buffers["running_mean"] == 2.0)
    with pytest.raises(KeyError, match="no layer at '3.body.9'"):
        net.set_array("3.body.9.weight", np.zeros(1))
    convs = 2 * (3 * 9 * 6 * 64 + 6 * 9 * 6 * 64 * 2 + 6 * 9 * 8 * 64 + 8 * 9 * 8 * 16 + 6 * 8 * 16) + 2 * 8 * 4
    assert net.training_flops((3, 8, 8)) == 3 * convs


def test_a_layer_object_is_used_once_inside_blocks_too():
    relu = xpcnn.ReLU()
    with pytest.raises(ValueError, match=r"the same ReLU\(\) object is at positions 0 and 1.body.0"):
        Sequential([relu, xpcnn.Residual([relu])])


@pytest.mark.parametrize("shortcut", [False, True])
def test_residual_gradients_match_finite_differences(target, to_target, shortcut):
    rng = np.random.default_rng(1)
    out = 3 if shortcut else 2  # a shortcut makes the shapes meet; the identity needs them equal
    block = xpcnn.Residual([xpcnn.Conv2D(2, out, 3, padding=1, bias=False, rng=rng), xpcnn.BatchNorm2D(out),
                            xpcnn.GELU()],
                           [xpcnn.Conv2D(2, out, 1, rng=rng)] if shortcut else None)
    block.to(*target, "float64")
    result = xpcnn.gradcheck(block, to_target(rng.standard_normal((3, 2, 5, 5)), "float64"))
    assert result.worst <= 1e-6 and len(result.errors) == (6 if shortcut else 4), result


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_residual_network_computes_what_its_torch_twin_does(target, dtype):
    torch = pytest.importorskip("torch")
    from xpcnn.io.torch_module import to_torch

    net = residual_net()
    twin = to_torch(net, dtype="float64")
    rng = np.random.default_rng(2)
    x, dy = rng.standard_normal((5, 3, 8, 8)), rng.standard_normal((5, 4))
    x_torch = torch.tensor(x, requires_grad=True)
    expected = twin(x_torch)
    expected.backward(torch.from_numpy(dy))
    net.to(*target, dtype)
    y = net.forward(backend.to_backend(x, *target, dtype))
    dx = net.backward(backend.to_backend(dy, *target, dtype))
    tolerance = {"float64": 1e-10, "float32": 2e-4}[dtype]
    np.testing.assert_allclose(backend.to_numpy(y), expected.detach().numpy(), rtol=0, atol=tolerance)
    np.testing.assert_allclose(backend.to_numpy(dx), x_torch.grad.numpy(), rtol=0, atol=tolerance)
    theirs = dict(twin.named_parameters())
    for name, grad in net.grads.items():
        scale = max(1.0, float(theirs[name].grad.abs().max()))
        np.testing.assert_allclose(backend.to_numpy(grad) / scale, theirs[name].grad.numpy() / scale, rtol=0,
                                   atol=tolerance, err_msg=name)
    assert set(net.state_dict()) == set(twin.state_dict())


def test_weights_move_to_a_torch_module_of_the_same_structure_and_back():
    torch = pytest.importorskip("torch")
    from xpcnn.io.torch_module import to_torch

    trained = residual_net(seed=3).to("numpy", dtype="float64")
    trained.forward(np.random.default_rng(0).standard_normal((4, 3, 8, 8)))  # running statistics move
    twin = to_torch(trained)
    assert int(twin.state_dict()["3.body.3.body.1.num_batches_tracked"]) == 1
    fresh = residual_net(seed=9).to("numpy", dtype="float64")
    fresh.load_state_dict(twin.state_dict())
    for name, value in trained.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[name], value, err_msg=name)
    x = np.random.default_rng(1).standard_normal((3, 3, 8, 8))
    twin.eval()
    np.testing.assert_allclose(fresh.forward(x, training=False), twin(torch.from_numpy(x)).detach().numpy(),
                               rtol=0, atol=1e-12)


def test_a_block_config_round_trips_and_hostile_ones_are_named():
    net = residual_net(dropout=True)
    rebuilt = Sequential.from_config(net.config())
    assert rebuilt.config() == net.config() and list(rebuilt.params) == list(net.params)
    planned = Sequential.planned_arrays(net.config())
    assert planned["4.shortcut.1.running_mean"] == ("buffer", (8,)) and planned["3.body.0.weight"][0] == "param"
    bad = net.config()
    bad[4]["config"]["body"][0]["config"]["kernel_size"] = "wide"
    with pytest.raises(ValueError, match=r"layer 4.body.0 \(Conv2D\): bad config"):
        Sequential.from_config(bad)
    unknown = [{"type": "Residual", "config": {"body": [{"type": "Evil", "config": {}}]}}]
    with pytest.raises(ValueError, match="layer 0.body.0: unknown layer type 'Evil'"):
        Sequential.planned_arrays(unknown)
    deep = [{"type": "ReLU", "config": {}}]
    for _ in range(40):
        deep = [{"type": "Residual", "config": {"body": deep}}]
    with pytest.raises(ValueError, match="blocks nested more than 16 deep"):
        Sequential.from_config(deep)
    with pytest.raises(ValueError, match=r"layer 0 \(Residual\): bad config: a Residual config holds 'body'"):
        Sequential.from_config([{"type": "Residual", "config": {"trunk": []}}])


def test_a_config_of_more_layers_than_the_limit_in_blocks_is_refused_before_any_is_checked():
    relus = [{"type": "ReLU", "config": {}}] * 9_000
    Sequential.planned_arrays([{"type": "Residual", "config": {"body": relus}}])
    wide = [{"type": "Residual", "config": {"body": relus}}] * 40  # 360,040 layers, each chain within the limit
    start = time.process_time()  # CPU time: the check's cost, however loaded the machine
    with pytest.raises(ArchitectureError, match="architecture has more than 10,000 layers, blocks' layers included"):
        Sequential.planned_arrays(wide)
    assert time.process_time() - start < 2  # checking each layer took 20 s


def test_hooks_see_the_layers_inside_blocks_by_position():
    net = residual_net().to("numpy", dtype="float64")
    trace, timer = xpcnn.hooks.TraceHook(), xpcnn.hooks.TimerHook()
    with net.hooked(trace, timer):
        y = net.forward(np.random.default_rng(0).standard_normal((2, 3, 8, 8)))
        net.backward(np.ones_like(y))
    assert {3, "3.body.0", "3.body.3", "3.body.3.body.1", "4.shortcut.1"} <= set(trace.outputs)
    assert set(trace.param_grads["4.shortcut.0"]) == {"weight"}
    positions = [row[0] for row in timer.medians()]
    assert positions[3:7] == [3, "3.body.0", "3.body.1", "3.body.2"] and positions[-1] == 7
    assert not net[3].body.hooks  # gone with the block
    net.set_array("4.body.0.weight", np.full_like(net.params["4.body.0.weight"], np.nan))
    with net.hooked(xpcnn.anomaly.AnomalyHook("step 1")):
        with pytest.raises(xpcnn.anomaly.NonFiniteError, match=r"step 1: output of layer 4.body.0 \(Conv2D\)"):
            net.forward(np.ones((2, 3, 8, 8)))


def test_a_slice_of_a_network_is_a_network_of_the_same_layers():
    net = residual_net().to("numpy", dtype="float64")
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8))
    head = net[:4]
    assert isinstance(head, Sequential) and head.layers == net.layers[:4] and head[3] is net[3]
    y = x
    for layer in net.layers[:4]:
        y = layer.forward(y, False)
    np.testing.assert_allclose(head.forward(x, training=False), y, rtol=1e-12)
    with pytest.raises(ValueError, match="Sequential needs at least one layer"):
        net[5:2]  # noqa: B018
    count = len(net.layers)
    with pytest.raises(IndexError, match=rf"^layer 99 of a network of {count} layers \(0 to {count - 1}, or -1 back"):
        net[99]  # noqa: B018  (Python's "list index out of range" named neither)
    with pytest.raises(TypeError, match=r"^a network's layers are indexed by an integer or a slice, got '3'$"):
        net["3"]  # noqa: B018
    assert net[np.int64(1)] is net.layers[1]


def test_hooks_at_chosen_positions_see_only_those_layers():
    net = residual_net().to("numpy", dtype="float64")
    trace = xpcnn.hooks.TraceHook()
    with net.hooked(trace, at=[-1, "3.body.0"]):
        y = net.forward(np.random.default_rng(0).standard_normal((2, 3, 8, 8)))
        net.backward(np.ones_like(y))
    assert set(trace.outputs) == set(trace.input_grads) == {7, "3.body.0"}
    assert not net.hooks and not net[3].body.hooks
    with pytest.raises(ValueError, match=r"hooked at '3.bdy.0': the network has no layer there; its positions are "
                                         r"0, 1, 2, 3, 3.body.0, .*\.\.\. \(\d+ in all\)"):
        net.hooked(trace, at="3.bdy.0").__enter__()
    with pytest.raises(ValueError, match="hooked at 8: the network has no layer there"):
        net.hooked(trace, at=8).__enter__()
    with pytest.raises(ValueError, match="hooked at names no position"):
        net.hooked(trace, at=[]).__enter__()
    with pytest.raises(TypeError, match="hooked at takes layer positions .* got True"):
        net.hooked(trace, at=[True]).__enter__()
    for wrong in [1.5, b"3", {"3": 1}, np.float64(3)]:  # neither iterated (b"3" is 51) nor "not iterable"
        with pytest.raises(TypeError, match=r"hooked at takes layer positions .* got "):
            net.hooked(trace, at=wrong).__enter__()
    assert not net.hooks
    with net.hooked(trace, at=np.int64(7)):  # an index from NumPy, as from argmax
        pass
    assert net.positions([7, "3.body.0", -1, np.int64(2)]) == ["7", "3.body.0", "2"]  # as given, once each
    with pytest.raises(ValueError, match="feature maps at 9: the network has no layer there"):
        net.positions(9, "feature maps at")


def test_blocks_fuse_inside_and_fusion_off_reaches_them():
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    fused, alone = residual_net(), residual_net()
    alone.fuse = False
    assert not alone[4].body.fuse
    y_fused, y_alone = fused.forward(x), alone.forward(x)
    assert any(type(step).__name__ == "NormPoolReLU" for _, step, *_ in fused[4].body._steps)
    assert all(type(step).__name__ != "NormPoolReLU" for _, step, *_ in alone[4].body._steps)
    np.testing.assert_array_equal(y_fused, y_alone)
    dy = np.ones_like(y_fused)
    np.testing.assert_array_equal(fused.backward(dy), alone.backward(dy))
    for name, grad in fused.grads.items():
        np.testing.assert_array_equal(grad, alone.grads[name], err_msg=name)


def test_residual_network_parity_rows_name_the_layers_inside_blocks():
    pytest.importorskip("torch")
    report = xpcnn.parity.compare(residual_net(dropout=True), np.random.default_rng(0).random((4, 3, 8, 8)),
                                  np.array([0, 1, 2, 3]), ["numpy", "torch"])
    assert report.passed, report.to_table()
    assert {"3.body.4.body.0", "4.shortcut.1"} <= {row.layer for row in report.rows}


def test_a_residual_network_trains_as_torch_does_for_20_steps_in_float64():
    """The same net (batch norm, a shortcut convolution, global pooling), weights and
    batches, label-smoothed loss, Nesterov SGD with weight decay: the weights and running
    statistics of xpcnn and torch agree within 1e-9 after 20 steps."""
    torch = pytest.importorskip("torch")
    from xpcnn.io.torch_module import to_torch

    net = residual_net(seed=4).to("numpy", dtype="float64")
    twin = to_torch(net)
    ours = xpcnn.optim.SGD(net, 0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    theirs = torch.optim.SGD(twin.parameters(), 0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    loss_fn, their_loss = xpcnn.SoftmaxCrossEntropy(label_smoothing=0.1), torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    rng = np.random.default_rng(5)
    for _ in range(20):
        x, y = rng.standard_normal((16, 3, 8, 8)), rng.integers(0, 4, 16)
        loss_fn.forward(net.forward(x), y)
        net.backward(loss_fn.backward())
        ours.step()
        theirs.zero_grad()
        their_loss(twin(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        theirs.step()
    expected = twin.state_dict()
    for name, value in net.state_dict().items():
        np.testing.assert_allclose(value, expected[name].numpy(), rtol=0, atol=1e-9, err_msg=name)
    assert int(expected["4.shortcut.1.num_batches_tracked"]) == net[4].shortcut[1].batches_tracked == 20


def _trained(monkeypatch=None, workers=1, graphs=False):
    from xpcnn.datasets import Dataset

    from .helpers import record_graphs_on_cpu

    rng = np.random.default_rng(6)
    data = Dataset.from_arrays(rng.integers(0, 256, (80, 3, 8, 8), dtype=np.uint8), rng.integers(0, 4, 80), 4)
    net = residual_net(seed=1, dropout=True).to("numpy", dtype="float64")
    optimizer = xpcnn.optim.SGD(net, 0.05, momentum=0.9)
    replays = record_graphs_on_cpu(monkeypatch, net, optimizer) if graphs else []
    trainer = xpcnn.Trainer(net, optimizer, batch_size=32, seed=2, progress=False, log=lambda message: None,
                            workers=workers, cuda_graphs=graphs or False)
    trainer.fit(data, 2)
    return trainer, len(replays)


def test_a_residual_network_trains_alike_with_workers_and_recorded_steps(monkeypatch):
    alone, _ = _trained()
    shared, _ = _trained(workers=2)
    recorded, replays = _trained(monkeypatch, graphs=True)
    assert shared.workers == 2 and replays > 0
    for name, value in alone.model.state_dict().items():
        np.testing.assert_allclose(shared.model.state_dict()[name], value, rtol=1e-10, atol=1e-12, err_msg=name)
        np.testing.assert_array_equal(recorded.model.state_dict()[name], value, err_msg=name)
    assert alone.model[3].extra_state() == recorded.model[3].extra_state() == {
        "body.1.num_batches_tracked": 6, "body.3.calls": 6, "body.4.body.1.num_batches_tracked": 6}


def test_a_block_is_refused_when_built_as_no_checkpoint_could_hold_it():
    block = xpcnn.Residual([xpcnn.ReLU()])
    for _ in range(15):
        block = xpcnn.Residual([block])
    assert block.depth == 16 and Sequential.from_config(Sequential([block]).config())
    with pytest.raises(ValueError, match="Residual: blocks nested 17 deep, more than the 16 a checkpoint takes"):
        xpcnn.Residual([block])
    conv = xpcnn.Conv2D(2, 2, 1)
    with pytest.raises(ValueError, match="a layer object is in both the body and the shortcut"):
        xpcnn.Residual([conv], [xpcnn.ReLU(), conv])


def test_a_misfit_is_named_by_its_position_inside_blocks():
    net = residual_net()
    with pytest.raises(ValueError, match=r"^layer 5.body.0 \(Conv2D\): Conv2D\(.*expected input \(N, 6, H, W\)"):
        Sequential([*net.layers[:4], xpcnn.Conv2D(6, 5, 1), net[4]]).summary((1, 3, 8, 8))
    wrong = Sequential([xpcnn.Conv2D(3, 4, 1), xpcnn.Residual([xpcnn.Conv2D(4, 8, 1)])])
    with pytest.raises(ValueError, match=r"^layer 1 \(Residual\): for input \(2, 4, 5, 5\) the body gives "
                                         r"\(2, 8, 5, 5\) and the identity shortcut \(2, 4, 5, 5\)"):
        wrong.output_shapes((2, 3, 5, 5))
    with pytest.raises(ValueError, match=r"^Residual\(body=\[Conv2D\], shortcut=identity\): for input"):
        wrong.forward(np.zeros((2, 3, 5, 5), np.float32))


def test_a_network_says_the_channels_of_the_images_it_takes():
    assert presets.build("resnet20").input_channels() == 3 and presets.build("lenet").input_channels() == 1
    assert Sequential([xpcnn.BatchNorm2D(2), xpcnn.ReLU()]).input_channels() == 2
    assert Sequential([xpcnn.Flatten(), xpcnn.Dense(4, 2)]).input_channels() is None  # any, flattened


def test_moving_to_a_device_the_backend_cannot_use_says_why_in_one_line():
    with pytest.raises(ValueError, match="unknown backend 'jax'"):
        presets.build("tutorial").to("jax")
    with pytest.raises(backend.BackendUnavailable, match=r"^backend numpy on device gpu: device 'gpu' not usable: "
                                                         r"backend 'numpy' has only the device 'cpu'"):
        presets.build("tutorial").to("numpy", "gpu")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():  # the library's own error is a page about its build
        with pytest.raises(backend.BackendUnavailable, match=r"^backend torch on device cuda:0: .* no CUDA device$"):
            presets.build("tutorial").to("torch", "cuda:0")


def test_an_input_that_requires_grad_keeps_torchs_autograd_out_of_training():
    # torch recorded every step through it, and the parameters the optimizer updated joined
    # the graph (requires_grad, not leaves), which grew with every step
    torch = pytest.importorskip("torch")
    net = seed_net().to("torch")
    optimizer, loss = xpcnn.optim.SGD(net, 0.1), xpcnn.SoftmaxCrossEntropy()
    x = torch.rand(2, 1, 28, 28, requires_grad=True)
    for _ in range(2):
        out = net.forward(x)
        assert not out.requires_grad
        loss.forward(out, torch.tensor([1, 2]))
        net.backward(loss.backward().requires_grad_())
        optimizer.step()
    assert all(not p.requires_grad and p.is_leaf for p in net.params.values())


def test_a_network_with_a_layer_moved_alone_says_so_rather_than_where_its_first_layer_is():
    # it reported the first layer's backend and dtype, and load_state_dict moved the other
    # layer back there silently
    net = presets.build("tutorial")
    net[-1].to("numpy", dtype="float64")
    with pytest.raises(ValueError, match=r"arrays are not in one place: 0.weight on numpy \(float32, device cpu\); "
                                         r"6.weight on numpy \(float64, device cpu\); move the whole network"):
        net.load_state_dict(presets.build("tutorial").state_dict())
    assert net[-1].params["weight"].dtype == np.float64
    net.to("numpy", dtype="float64")
    assert net.dtype == "float64"


class Scale(xpcnn.Layer):
    """y = x * gain[c], a layer of one's own whose backward gives `grad(dy, x)` for gain."""

    def __init__(self, channels, grad):
        super().__init__()
        self.channels, self.grad = channels, grad
        self.params = {"gain": xpcnn.init.ones((channels,))}

    def forward(self, x, training=True):
        xp = self._namespace(x)
        return self._save_for_backward(training, x, x * xp.reshape(self.params["gain"], (1, self.channels, 1, 1)))

    def backward(self, dy):
        x = self._saved_for_backward(dy)
        gradient = self.grad(self._namespace(dy), dy, x)
        if gradient is not None:
            self.grads = {"gain": gradient}
        return dy * self._namespace(dy).reshape(self.params["gain"], (1, self.channels, 1, 1))


@pytest.mark.parametrize("grad, message", [
    (lambda xp, dy, x: xp.sum(dy * x, axis=(0, 2, 3))[:2], r"the gradient of 'gain' is float32 \(2,\), its parameter "
                                                            r"float32 \(8,\)"),
    (lambda xp, dy, x: xp.sum(dy * x), r"the gradient of 'gain' is float32 \(\), its parameter float32 \(8,\)"),
    (lambda xp, dy, x: xp.astype(xp.sum(dy * x, axis=(0, 2, 3)), xp.float64), "is float64 \\(8,\\), its parameter "
                                                                                "float32"),
    (lambda xp, dy, x: None, "layer 1 \\(Scale.*\\): its backward set no gradient for 'gain'"),
])
def test_a_backward_that_gives_a_parameter_no_gradient_of_its_shape_is_named(grad, message):
    net = xpcnn.Sequential([xpcnn.Conv2D(1, 8, 3, rng=0), Scale(8, grad), xpcnn.Flatten(), xpcnn.Dense(8, 2, rng=1)])
    x = np.ones((2, 1, 3, 3), np.float32)
    with pytest.raises(ValueError, match=message):
        net.backward(net.forward(x))
    net.layers[1].grad = lambda xp, dy, x: xp.sum(dy * x, axis=(0, 2, 3))
    net.backward(net.forward(x))  # right: trains; then a backward that forgets is not given the last gradient
    net.layers[1].grad = lambda xp, dy, x: None
    with pytest.raises(ValueError, match="its backward set no gradient for 'gain'"):
        net.backward(net.forward(x))


def test_an_optimizer_refuses_a_gradient_of_another_shape_than_its_parameter():
    net = xpcnn.Sequential([xpcnn.Flatten(), xpcnn.Dense(4, 3, rng=0)])
    adam = xpcnn.optim.Adam(net, 0.1)
    net.layers[1].grads = {"weight": np.zeros((3, 2), np.float32), "bias": np.zeros(3, np.float32)}
    with pytest.raises(ValueError, match=r"Adam: the gradient of 1.weight has shape \(3, 2\), its parameter \(3, 4\)"):
        adam.step()


def test_a_registered_layer_of_ones_own_is_rebuilt_and_an_unregistered_one_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(xpcnn.model, "BUILDABLE", dict(xpcnn.model.BUILDABLE))  # registrations end with the test

    class OwnGain(xpcnn.Layer):
        def __init__(self, channels):
            super().__init__()
            self.channels = channels
            self.params = {"gain": xpcnn.init.ones((channels,))}

        @classmethod
        def array_shapes(cls, arguments):
            return {"gain": (int(arguments["channels"]),)}

        def config(self):
            return {"channels": self.channels}

        def forward(self, x, training=True):
            xp = self._namespace(x)
            return self._save_for_backward(training, x, x * xp.reshape(self.params["gain"], (1, -1, 1, 1)))

        def backward(self, dy):
            x, xp = self._saved_for_backward(dy), self._namespace(dy)
            self.grads = {"gain": xp.sum(dy * x, axis=(0, 2, 3))}
            return dy * xp.reshape(self.params["gain"], (1, -1, 1, 1))

    net = xpcnn.Sequential([xpcnn.Conv2D(1, 2, 3, rng=0), OwnGain(2), xpcnn.Flatten(), xpcnn.Dense(2, 2, rng=1)])
    net.layers[1].params["gain"][...] = [2.0, 3.0]
    with pytest.raises(xpcnn.layers.base.ArchitectureError, match=r"layer 1 \(.*OwnGain\): no layer of this class is "
                       r"registered under 'OwnGain'.*xpcnn.register_layer"):
        net.check_rebuildable()
    with pytest.raises(xpcnn.layers.base.ArchitectureError, match="register_layer"):
        xpcnn.parity.compare(net, np.ones((2, 1, 3, 3)), np.array([0, 1]), ["numpy", "array_api_strict"])
    assert xpcnn.register_layer(OwnGain) is OwnGain
    net.check_rebuildable()
    xpcnn.save_checkpoint(tmp_path / "own-gain.npz", net)
    loaded = xpcnn.load_checkpoint(tmp_path / "own-gain.npz", "array_api_strict").model
    np.testing.assert_array_equal(xpcnn.to_numpy(loaded.params["1.gain"]), [2.0, 3.0])
    assert xpcnn.parity.compare(net, np.ones((2, 1, 3, 3)), np.array([0, 1]), ["numpy", "array_api_strict"]).passed

    class ReLU(xpcnn.ReLU):  # a name of the library's own: never silently rebuilt as xpcnn's ReLU
        pass

    with pytest.raises(ValueError, match=r"a layer named ReLU is registered already \(xpcnn.layers"):
        xpcnn.register_layer(ReLU)
    with pytest.raises(xpcnn.layers.base.ArchitectureError, match=r"layer 0 \(.*ReLU\): no layer of this class .*; "
                       r"rename its class \(a registered layer has the name\)"):
        xpcnn.Sequential([ReLU()]).check_rebuildable()
    again = type("OwnGain", (OwnGain,), {"__module__": OwnGain.__module__, "__qualname__": OwnGain.__qualname__})
    assert xpcnn.register_layer(again) is again  # the class defined again, as a notebook's cell does: it replaces


def test_a_layer_whose_config_or_shapes_do_not_rebuild_it_is_named(monkeypatch):
    monkeypatch.setattr(xpcnn.model, "BUILDABLE", dict(xpcnn.model.BUILDABLE))

    @xpcnn.register_layer
    class Undeclared(xpcnn.Layer):
        def __init__(self, size=3):
            super().__init__()
            self.size = size
            self.params = {"w": xpcnn.init.ones((3,))}

        def config(self):
            return {"size": self.size}

    with pytest.raises(xpcnn.layers.base.ArchitectureError, match=r"its config\(\) \{'size': (np.int64\(3\)|3)\} is "
                       "no JSON data"):  # as NumPy 2 shows the value, or 1.26
        xpcnn.Sequential([Undeclared(np.int64(3))]).check_rebuildable()
    with pytest.raises(xpcnn.layers.base.ArchitectureError, match=r"layer 0 \(Undeclared\): config must map names to "
                       "numbers, strings or lists"):  # what loading refuses, refused here
        xpcnn.Sequential([Undeclared(None)]).check_rebuildable()
    with pytest.raises(xpcnn.layers.base.ArchitectureError, match=r"layer 0: its array_shapes declares none for 0.w, "
                       r"but it holds a param of shape \(3,\)"):
        xpcnn.Sequential([Undeclared(3)]).check_rebuildable()


def test_a_layer_without_a_layer_s_state_is_refused_when_the_network_is_built():
    class NoSuper(xpcnn.ReLU):
        def __init__(self):
            self.scale = 2.0

    class ListParams(xpcnn.ReLU):
        def __init__(self):
            super().__init__()
            self.params = {"w": [1.0, 2.0]}

    with pytest.raises(TypeError, match=r"item 1 \(NoSuper\) has no params or grads or buffers dict: its __init__ "
                                        r"must call super\(\).__init__\(\) first"):
        xpcnn.Sequential([xpcnn.Flatten(), NoSuper()])
    with pytest.raises(TypeError, match=r"item 0 \(ListParams\): params\['w'\] is a list, not an array"):
        xpcnn.Sequential([ListParams()])


def test_a_backward_returning_a_gradient_unlike_its_input_is_named_not_the_layer_below():
    class Widening(xpcnn.ReLU):
        def backward(self, dy):
            return super().backward(dy).astype(np.float64)

    net = xpcnn.Sequential([xpcnn.Conv2D(1, 2, 3, rng=0), Widening(), xpcnn.Flatten(), xpcnn.Dense(2, 2, rng=1)])
    with pytest.raises(ValueError, match=r"layer 1 \(Widening\(\)\): its backward returned a gradient of float64 "
                                         r"\(2, 2, 1, 1\) for an input of float32 \(2, 2, 1, 1\)"):
        net.backward(net.forward(np.ones((2, 1, 3, 3), np.float32)))


def test_a_backward_of_one_s_own_that_returns_or_sets_no_array_is_named_not_an_attribute_error():
    class ReturnsNothing(xpcnn.ReLU):
        def backward(self, dy):
            super().backward(dy)

    class ListGradient(xpcnn.Layer):
        def __init__(self):
            super().__init__()
            self.params = {"gain": xpcnn.init.ones((2,))}

        def forward(self, x, training=True):
            return self._save_for_backward(training, x, x * 1.0)

        def backward(self, dy):
            self._saved_for_backward(dy)
            self.grads = {"gain": [0.0, 0.0]}
            return dy

    x = np.ones((2, 1, 3, 3), np.float32)
    net = xpcnn.Sequential([xpcnn.Conv2D(1, 2, 3, rng=0), ReturnsNothing(), xpcnn.Flatten(), xpcnn.Dense(2, 2, rng=1)])
    with pytest.raises(TypeError, match=r"layer 1 \(ReturnsNothing\(\)\): its backward returned NoneType, not the "
                                        r"gradient of its input"):
        net.backward(net.forward(x))
    net = xpcnn.Sequential([xpcnn.Conv2D(1, 2, 3, rng=0), ListGradient(), xpcnn.Flatten(), xpcnn.Dense(2, 2, rng=1)])
    with pytest.raises(TypeError, match=r"layer 1 \(ListGradient\(\)\): the gradient of 'gain' is a list, not an "):
        net.backward(net.forward(x))


@pytest.mark.parametrize("make, message", [
    (lambda: xpcnn.Sequential([xpcnn.Flatten(), xpcnn.ReLU]), r"item 1 is the class ReLU, not a layer: make one, ReLU"),
    (lambda: xpcnn.Sequential([xpcnn.Sequential([xpcnn.ReLU()])]),
     r"item 0 is a Sequential, not a Layer: give its layers, Sequential\(\[\*net.layers, ...\]\)"),
    (lambda: xpcnn.Sequential(xpcnn.Flatten(), xpcnn.ReLU()),
     r"Sequential takes one list of layers, got 2 arguments: Sequential\(\[layer, ...\]\)"),
])
def test_what_is_given_instead_of_a_list_of_layers_is_named_with_what_to_give(make, message):
    # a class, a Sequential and torch's Sequential(a, b) were "item 1 is type" and Python's argument count
    with pytest.raises(TypeError, match=message):
        make()
