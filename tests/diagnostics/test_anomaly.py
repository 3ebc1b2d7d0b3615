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
