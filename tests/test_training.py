"""The training loop: learning, divergence, interruption and exact resumption."""

from __future__ import annotations

import json

import numpy as np
import pytest

import xpcnn
from xpcnn import backend
from xpcnn.datasets import MNIST, Dataset, load_bundled
from xpcnn.evaluation import confusion_matrix, evaluate, predict
from xpcnn.optim import SGD, Adam, Cosine
from xpcnn.training import Trainer, TrainingDiverged, TrainingInterrupted


def small_net(seed=0):
    rng = np.random.default_rng(seed)
    return xpcnn.Sequential([
        xpcnn.Conv2D(1, 8, 3, rng=rng), xpcnn.BatchNorm2D(8), xpcnn.MaxPool2D(2), xpcnn.ReLU(),
        xpcnn.Flatten(), xpcnn.Dropout(0.2, seed=3), xpcnn.Dense(8 * 13 * 13, 10, rng=rng),
    ])


@pytest.fixture(scope="module")
def data():
    loaded = load_bundled()
    return loaded.train.subset(np.arange(600)), loaded.test.subset(np.arange(300))


def make_trainer(tmp_path, **kwargs):
    net = small_net()
    opt = Adam(net, 1e-2, schedule=Cosine(total=2 * 10, warmup=2))
    return Trainer(net, opt, batch_size=64, seed=5, run_dir=tmp_path, progress=False, log=lambda m: None, **kwargs)


def test_training_learns_and_writes_metrics(tmp_path, data):
    train, test = data
    trainer = make_trainer(tmp_path)
    history = trainer.fit(train, 2, val=test)
    assert [row["epoch"] for row in history] == [1, 2]
    assert history[1]["train_loss"] < history[0]["train_loss"]
    assert evaluate(trainer.model, test)["accuracy"] > 0.5
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == history
    assert {"val_loss", "val_accuracy", "images_per_second"} <= set(history[0])


class StopAfter(Trainer):
    """Requests a stop (as Ctrl-C does) once `stop_at` optimizer steps are done."""

    stop_at = 0

    def _step(self, x, y):
        super()._step(x, y)
        if self.optimizer.steps == self.stop_at:
            self._stop_requested = True


@pytest.mark.parametrize("stop_at", [4, 10, 13])  # mid-epoch, epoch boundary, mid second epoch
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, data, stop_at):
    train, _ = data
    reference = make_trainer(tmp_path / "a")
    reference.fit(train, 2)
    net = small_net()
    interrupted = StopAfter(net, Adam(net, 1e-2, schedule=Cosine(total=20, warmup=2)), batch_size=64, seed=5,
                            run_dir=tmp_path / "b", progress=False, log=lambda m: None)
    interrupted.stop_at = stop_at
    with pytest.raises(TrainingInterrupted) as info:
        interrupted.fit(train, 2)
    assert info.value.checkpoint == tmp_path / "b" / "checkpoint.npz"
    resumed = Trainer.resume(info.value.checkpoint, progress=False, log=lambda m: None)
    assert resumed.optimizer.steps == stop_at
    resumed.fit(train, 2)
    for name, value in reference.model.params.items():
        np.testing.assert_array_equal(resumed.model.params[name], value, err_msg=name)
    for name, value in reference.model.buffers.items():
        np.testing.assert_array_equal(resumed.model.buffers[name], value, err_msg=name)
    strip = [{k: v for k, v in row.items() if k not in ("seconds", "images_per_second")} for row in reference.history]
    assert [{k: v for k, v in row.items() if k not in ("seconds", "images_per_second")} for row in resumed.history] == strip


def test_divergence_stops_before_the_weights_change(tmp_path, data):
    train, _ = data
    net = small_net()
    trainer = Trainer(net, SGD(net, 1e30), batch_size=64, run_dir=tmp_path, progress=False, log=lambda m: None)
    with pytest.raises(TrainingDiverged, match=r"loss is (nan|inf) at step \d+ \(epoch 1, batch \d+\), lr 1e\+30") as info:
        trainer.fit(train, 3)
    assert "--detect-anomaly" in str(info.value)
    for value in trainer.model.params.values():
        assert np.all(np.isfinite(value))


def test_evaluate_predict_and_confusion(data):
    _, test = data
    net = small_net()
    result = evaluate(net, test, batch_size=128)
    assert result["predictions"].shape == (300,) and 0 <= result["accuracy"] <= 1
    probabilities = predict(net, test.images[:5], MNIST.mean, MNIST.std)
    assert probabilities.shape == (5, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(np.argmax(probabilities, axis=1), result["predictions"][:5])
    counts = confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 3)
    np.testing.assert_array_equal(counts, [[1, 0, 0], [0, 1, 1], [0, 0, 1]])


def test_training_on_every_backend(target, data):
    train, _ = data
    net = small_net().to(*target)
    trainer = Trainer(net, SGD(net, 0.05, momentum=0.9), batch_size=100, progress=False, log=lambda m: None)
    history = trainer.fit(train.subset(np.arange(200)), 1)
    assert np.isfinite(history[0]["train_loss"])
    for value in net.params.values():
        assert backend.backend_of(value) == target[0]


def test_dataset_labels_out_of_range_never_reach_the_loss():
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\)"):
        Dataset(np.zeros((1, 28, 28), np.uint8), np.array([12]), MNIST)
