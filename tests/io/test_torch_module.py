"""to_torch (xpcnn/io/torch_module.py): the same network as a torch module, same names and weights."""

from __future__ import annotations

import numpy as np
import pytest

import xpcnn
from xpcnn.io.torch_module import to_torch

from .test_onnx import every_layer_type

torch = pytest.importorskip("torch")


def test_every_layer_type_computes_as_in_xpcnn_in_training_and_inference():
    net = xpcnn.Sequential([*every_layer_type().layers[:-1], xpcnn.GELU(), xpcnn.Dense(16, 10, rng=0)])
    net.to("numpy", dtype="float64")
    twin = to_torch(net)
    assert list(twin.state_dict()) == list(net.state_dict())  # the same keys in the same order
    x = np.random.default_rng(0).standard_normal((4, 1, 28, 28))
    net[8].p = twin[8].p = 0.0  # dropout's masks are each library's own
    for training in (True, False):
        twin.train(training)
        expected = twin(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(net.forward(x, training=training), expected, rtol=0, atol=1e-12)


def test_dtype_and_device_and_a_layer_without_counterpart():
    net = xpcnn.Sequential([xpcnn.Flatten(), xpcnn.Dense(4, 2, rng=0)])
    assert to_torch(net)[1].weight.dtype == torch.float32
    assert to_torch(net, dtype="float64")[1].weight.dtype == torch.float64
    assert to_torch(net, dtype=torch.float64)[1].weight.dtype == torch.float64  # was "attribute name must be string"
    with pytest.raises(ValueError, match="unsupported dtype 'bogus'"):  # was torch's AttributeError
        to_torch(net, dtype="bogus")

    class Doubled(xpcnn.ReLU):
        pass

    with pytest.raises(ValueError, match=r"layer 1.body.0 \(Doubled\) has no torch counterpart"):
        to_torch(xpcnn.Sequential([xpcnn.Flatten(), xpcnn.Residual([Doubled()])]))
    if not torch.cuda.is_available():  # torch's own error is an AssertionError about its build
        with pytest.raises(xpcnn.backend.BackendUnavailable, match=r"^backend torch on device cuda: .*no CUDA device"):
            to_torch(net, device="cuda")


@pytest.mark.parametrize("preset", ["resnet20", "cifar"])
def test_state_dict_keys_come_in_torchs_order_through_residual_blocks(preset):
    net = xpcnn.presets.build(preset)
    assert list(to_torch(net).state_dict()) == list(net.state_dict())
