"""Anomaly mode (xpcnn/diagnostics/anomaly.py): a NaN or Inf is named by step, layer and direction."""

from __future__ import annotations

import numpy as np
import pytest

import xpcnn
from xpcnn import presets
from xpcnn.diagnostics.anomaly import AnomalyHook, NonFiniteError
from xpcnn.optim import SGD
from xpcnn.train import Trainer


def test_anomaly_mode_names_the_input(tmp_path):
    data = xpcnn.datasets.load_bundled().train.subset(np.arange(64))
    model = presets.build("tutorial")
    trainer = Trainer(model, SGD(model, 0.01), batch_size=32, progress=False, log=lambda m: None, anomaly=True)
    x = np.zeros((2, 1, 28, 28), np.float32)
    x[1, 0, 3, 3] = np.nan
    with pytest.raises(NonFiniteError, match=r"step 1: the input batch: 1 NaN and 0 Inf among 1,568 values"):
        with model.hooked(AnomalyHook("step 1")):
            model.forward(x, training=True)
    assert model.hooks == []  # the hook leaves with the block, also on an error
    model.params["4.weight"][0, 0] = np.inf  # a weight gone bad
    with pytest.raises(NonFiniteError, match=r"step 1 \(epoch 1, batch 1\): output of layer 4 \(Dense\) in forward"):
        trainer.fit(data, 1)


def test_anomaly_mode_names_what_went_bad_in_backward():
    """A NaN or Inf that appears only in backward: in the loss gradient, in a parameter's
    gradient, in a layer's input gradient."""
    model = xpcnn.Sequential([xpcnn.Dense(2, 2, rng=0), xpcnn.Dense(2, 2, rng=1)])

    def backward(x, dy):
        with model.hooked(AnomalyHook("step 3")), np.errstate(over="ignore"):  # as the trainer runs steps
            model.forward(np.full((1, 2), x, np.float32), training=True)
            model.backward(np.asarray(dy, np.float32))

    with pytest.raises(NonFiniteError, match=r"^step 3: gradient of the loss: 1 NaN and 0 Inf among 2 values$"):
        backward(1.0, [[np.nan, 1.0]])
    with pytest.raises(NonFiniteError, match=r"^step 3: gradient of layer 1 \(Dense\) weight in backward: 0 NaN "):
        backward(1e10, [[3e38, 3e38]])  # outputs of about 1e10; dy times them is not finite
    model.params["1.weight"][...] = 1e30  # outputs of about 1e24, finite; gradients of the weight of about 1e4
    with pytest.raises(NonFiniteError, match=r"^step 3: input gradient of layer 1 \(Dense\) in backward: 0 NaN "):
        backward(1e-6, [[1e10, 1e10]])
