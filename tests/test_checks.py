"""The checks of arguments every module shares (xpcnn/checks.py)."""

from __future__ import annotations

import numpy as np
import pytest

import xpcnn
from xpcnn.checks import flag, optional_flag
from xpcnn.io.checkpoint import load_checkpoint, save_checkpoint


@pytest.mark.parametrize("value", [True, False, np.True_, np.False_])
def test_a_flag_is_true_or_false_numpy_s_too_as_python_s(value):
    checked = flag(value, "Conv2D bias")
    assert type(checked) is bool and checked == value


@pytest.mark.parametrize("value", [1, 0, np.int64(1), "no", None, np.array([True])])
def test_a_flag_refuses_what_is_not_true_or_false(value):
    with pytest.raises(TypeError, match="^Conv2D bias must be True or False, got "):
        flag(value, "Conv2D bias")


@pytest.mark.parametrize("value, expected", [(None, None), (True, True), (np.False_, False)])
def test_an_optional_flag_is_true_false_or_none(value, expected):
    assert optional_flag(value, "invert") is expected


@pytest.mark.parametrize("value", [1, 0, "auto", np.array([True])])
def test_an_optional_flag_refuses_what_is_no_bool_and_not_none(value):
    with pytest.raises(TypeError, match="^invert must be True, False or None, got "):
        optional_flag(value, "invert")


def test_numpy_s_bools_reach_a_checkpoint_as_python_s(tmp_path):
    """A NumPy bool in a checkpoint's JSON failed its save ("bool_ is not JSON serializable")."""
    net = xpcnn.Sequential([xpcnn.Conv2D(1, 2, 3, bias=np.False_, rng=0), xpcnn.Flatten(), xpcnn.Dense(8, 2, rng=0)])
    sgd = xpcnn.optim.SGD(net, 0.1, momentum=0.9, nesterov=np.True_)
    trainer = xpcnn.Trainer(net, sgd, augment=xpcnn.datasets.Augment(1, flip=np.True_), anomaly=np.False_,
                            progress=np.False_, cuda_graphs=np.False_)
    assert type(trainer.anomaly) is bool and type(trainer.augment.flip) is bool and trainer.cuda_graphs is False
    assert type(xpcnn.SoftmaxCrossEntropy(check_labels=np.True_).check_labels) is bool
    save_checkpoint(tmp_path / "run.npz", net, sgd, xpcnn.train.record.to_checkpoint(trainer))
    loaded = load_checkpoint(tmp_path / "run.npz")
    assert loaded.optimizer["config"]["nesterov"] is True and loaded.trainer["flip"] is True
    assert loaded.model.layers[0].bias is False
