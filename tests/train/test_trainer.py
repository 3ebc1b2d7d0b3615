"""The training loop: learning, divergence, interruption and exact resumption."""

from __future__ import annotations

import json
import os
import signal
import threading

import numpy as np
import pytest

from xpcnn import ReLU, backend, presets
from xpcnn.datasets import load_bundled
from xpcnn.diagnostics.anomaly import NonFiniteError
from xpcnn.evaluation import evaluate
from xpcnn.io.checkpoint import load_checkpoint
from xpcnn.optim import SGD, Adam, Cosine
from xpcnn.train import Callback, Trainer, TrainingDiverged, TrainingInterrupted, record

from ..helpers import small_net


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


class InterruptAt(Callback):
    """Presses Ctrl-C (sends this process SIGINT) once `steps` optimizer steps are done."""

    def __init__(self, steps):
        self.steps = steps

    def on_step_end(self, trainer):
        if trainer.optimizer.steps == self.steps:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize("stop_at", [4, 10, 13])  # mid-epoch, epoch boundary, mid second epoch
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, data, stop_at):
    train, _ = data
    reference = make_trainer(tmp_path / "a")
    reference.fit(train, 2)
    net = small_net()
    interrupted = Trainer(net, Adam(net, 1e-2, schedule=Cosine(total=20, warmup=2)), batch_size=64, seed=5,
                          run_dir=tmp_path / "b", progress=False, log=lambda m: None, callbacks=[InterruptAt(stop_at)])
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
    assert [{k: v for k, v in row.items() if k not in ("seconds", "images_per_second")}
            for row in resumed.history] == strip


def test_divergence_stops_before_the_weights_change(tmp_path, data):
    train, _ = data
    net = small_net()
    trainer = Trainer(net, SGD(net, 1e30), batch_size=64, run_dir=tmp_path, progress=False, log=lambda m: None)
    message = r"loss is (nan|inf) at step \d+ \(epoch 1, batch \d+\), lr 1e\+30"
    with pytest.raises(TrainingDiverged, match=message) as info:
        trainer.fit(train, 3)
    assert "--detect-anomaly" in str(info.value)
    for value in trainer.model.params.values():
        assert np.all(np.isfinite(value))


def test_training_on_every_backend(target, data):
    train, _ = data
    net = small_net().to(*target)
    trainer = Trainer(net, SGD(net, 0.05, momentum=0.9), batch_size=100, progress=False, log=lambda m: None)
    history = trainer.fit(train.subset(np.arange(200)), 1)
    assert np.isfinite(history[0]["train_loss"])
    for value in net.params.values():
        assert backend.backend_of(value) == target[0]


def test_divergence_keeps_the_last_good_checkpoint(tmp_path):
    data = load_bundled().train.subset(np.arange(256))
    model = presets.build("tutorial")
    optimizer = SGD(model, 0.01)
    trainer = Trainer(model, optimizer, batch_size=64, run_dir=tmp_path, progress=False, log=lambda m: None,
                      anomaly=True)
    trainer.fit(data, 1)
    good = load_checkpoint(tmp_path / "checkpoint.npz")
    optimizer.lr = 1e30
    with pytest.raises((TrainingDiverged, NonFiniteError), match="last good checkpoint") as info:
        trainer.fit(data, 3)
    assert "layer" in str(info.value) or "loss is" in str(info.value)
    kept = load_checkpoint(tmp_path / "checkpoint.npz")
    assert kept.trainer["epoch"] >= good.trainer["epoch"]
    for value in kept.model.params.values():
        assert np.all(np.isfinite(value))


def test_moving_the_model_mid_run_moves_the_optimizer_state_and_still_resumes(tmp_path, data):
    train = data[0].subset(np.arange(200))
    net = small_net()
    trainer = Trainer(net, SGD(net, 0.05, momentum=0.9), batch_size=100, run_dir=tmp_path, progress=False,
                      log=lambda m: None)
    trainer.fit(train, 1)
    net.to("torch", dtype="float64")  # another backend and dtype, between epochs
    trainer.fit(train, 2)
    assert {(backend.backend_of(v), backend.dtype_name(v.dtype)) for v in trainer.optimizer.state_arrays().values()} \
        == {("torch", "float64")}
    net.to("numpy", dtype="float32")  # and back, saved before any step: the state follows when saved
    trainer.save()
    resumed = Trainer.resume(tmp_path / "checkpoint.npz", progress=False, log=lambda m: None)
    assert resumed.model.dtype == "float32" and resumed.optimizer.steps == 4
    assert np.isfinite(resumed.fit(train, 3)[-1]["train_loss"])


def test_a_saved_position_beyond_the_epoch_is_not_this_data(tmp_path, data):
    trainer = make_trainer(tmp_path)
    trainer.state.batch = 1_000_000  # what a hostile checkpoint may claim
    with pytest.raises(ValueError, match="stands at batch 1000000 of an epoch, but this training set has 10 batches"):
        trainer.fit(data[0], 1)


# -- worker threads (Trainer(workers=N), see xpcnn.distributed.Threads) ---------------------------


def float64_trainer(tmp_path, workers, callbacks=()):
    """small_net (batch norm, dropout) with shifted images, in float64, where summing the
    workers' shares in another order changes nothing the comparisons below can see. No
    bias in the convolution: batch norm cancels it, so its gradient is rounding noise,
    which Adam scales up to steps of lr * noise / eps and another order of sums changes."""
    net = small_net(conv_bias=False).to("numpy", dtype="float64")
    opt = Adam(net, 1e-2, schedule=Cosine(total=20, warmup=2))
    return Trainer(net, opt, batch_size=64, seed=5, augment=1, run_dir=tmp_path, progress=False, log=lambda m: None,
                   workers=workers, callbacks=callbacks)


def assert_same_state(mine, theirs, tolerance):
    for name, value in theirs.model.state_dict().items():
        np.testing.assert_allclose(mine.model.state_dict()[name], value, rtol=0, atol=tolerance, err_msg=name)


def test_workers_learn_what_one_model_learns(tmp_path, data):
    train, test = data
    alone, shared = float64_trainer(tmp_path / "a", 1), float64_trainer(tmp_path / "b", 3)
    alone.fit(train, 2, val=test)
    shared.fit(train, 2, val=test)  # 600 images: the last batch of 24 is shared out too
    assert_same_state(shared, alone, 1e-8)
    for mine, theirs in zip(shared.history, alone.history):
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-10)
        assert mine["val_accuracy"] == theirs["val_accuracy"]
    assert "3 worker threads" in shared.describe()


def test_workers_follow_a_moved_model_and_parameters_of_any_memory_layout(tmp_path, data):
    """The workers share the parameters and optimizer state and update them in parts, so
    both must be where the model is before they start, and a part must be a view of a
    parameter laid out any way (here column-major, as a converted weight may be)."""
    torch = pytest.importorskip("torch")
    train, _ = data
    runs = []
    for workers in (1, 2):
        trainer = float64_trainer(tmp_path / str(workers), workers)
        trainer.fit(train, 1)
        trainer.model.to("torch", dtype="float64")
        layer, name = max(((layer, k) for layer in trainer.model for k, v in layer.params.items() if v.ndim == 2),
                          key=lambda found: found[0].params[found[1]].numel())
        layer.params[name] = layer.params[name].T.contiguous().T  # the same values, column-major
        assert not layer.params[name].is_contiguous()
        trainer.fit(train, 2)
        assert {str(v.dtype) for v in trainer.optimizer.state_arrays().values()} == {str(torch.float64)}
        runs.append(trainer)
    assert_same_state(runs[1], runs[0], 1e-8)


def test_workers_stop_together_and_a_single_model_resumes_to_the_same_weights(tmp_path, data):
    train, _ = data
    reference = float64_trainer(tmp_path / "a", 1)
    reference.fit(train, 2)
    interrupted = float64_trainer(tmp_path / "b", 2, [InterruptAt(6)])
    with pytest.raises(TrainingInterrupted) as info:
        interrupted.fit(train, 2)
    assert Trainer.resume(info.value.checkpoint).workers == 2  # the run's own count, unless told otherwise
    resumed = Trainer.resume(info.value.checkpoint, progress=False, log=lambda m: None, workers=1)
    assert resumed.optimizer.steps == 6
    resumed.fit(train, 2)
    assert_same_state(resumed, reference, 1e-8)


class FailsInWorker(ReLU):
    """A ReLU that fails in the worker threads only, as a bug or a full memory would."""

    def forward(self, x, training=True):
        if training and threading.current_thread().name.startswith("xpcnn worker"):
            raise MemoryError("out of memory in a worker")
        return super().forward(x, training)


def test_a_failing_worker_raises_its_error_in_the_caller_and_no_thread_waits(data):
    train, _ = data
    net = small_net()
    net.layers[3] = FailsInWorker()
    trainer = Trainer(net, SGD(net, 0.01), batch_size=64, progress=False, log=lambda m: None, workers=2)
    with pytest.raises(MemoryError, match="out of memory in a worker"):
        trainer.fit(train, 1)
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("xpcnn worker")]


def test_workers_are_at_most_the_smallest_batch(data):
    train, _ = data
    net = small_net()
    trainer = Trainer(net, SGD(net, 0.01), batch_size=1, workers=4, progress=False, log=lambda m: None)
    trainer.fit(train.subset(np.arange(3)), 1)  # batches of one image: one worker
    assert trainer.optimizer.steps == 3
    with pytest.raises(ValueError, match="workers must be >= 1"):
        Trainer(net, SGD(net, 0.01), workers=0)


def test_workers_are_integers_and_the_run_says_how_many_it_used(data):
    train, _ = data
    net = small_net()
    for bad in (2.5, "2", True):
        with pytest.raises(TypeError, match="workers must be an integer"):
            Trainer(net, SGD(net, 0.01), workers=bad)
    trainer = Trainer(net, SGD(net, 0.01), batch_size=64, workers=8, progress=False, log=lambda m: None)
    assert trainer.choose_workers(train.subset(np.arange(65))) == 1  # a last batch of one image
    assert "worker" not in trainer.describe()


def test_more_workers_than_cores_are_noted(data, monkeypatch):
    from xpcnn.diagnostics import machine

    monkeypatch.setattr(machine, "usable_cores", lambda: 2)
    monkeypatch.setattr(machine, "can_limit_blas", lambda: True)
    net, logs = small_net(), []
    trainer = Trainer(net, SGD(net, 0.01), batch_size=64, workers=3, progress=False, log=logs.append)
    trainer.fit(data[0].subset(np.arange(128)), 1)
    assert any("3 worker threads on 2 usable cores" in line for line in logs), logs


def test_hooks_see_whole_batches_even_with_workers(data):
    from xpcnn.hooks import LayerHook

    class Rows(LayerHook):
        seen: list = []

        def before_forward(self, index, layer, x):
            if index == 0:
                self.seen.append(int(x.shape[0]))

    train, _ = data
    net = small_net()
    trainer = Trainer(net, SGD(net, 0.01), batch_size=64, workers=2, progress=False, log=lambda m: None)
    with net.hooked(Rows()):
        trainer.fit(train.subset(np.arange(128)), 1)
    assert Rows.seen == [64, 64]
    assert trainer.workers == 1 and record.to_checkpoint(trainer)["workers"] == 1  # what the run did, recorded


def test_an_empty_training_set_trains_no_step(data):
    train, _ = data
    net = small_net()
    trainer = Trainer(net, SGD(net, 0.01), batch_size=64, workers=None, progress=False, log=lambda m: None)
    trainer.fit(train.subset(np.arange(0)), 1)
    assert trainer.optimizer.steps == 0 and trainer.workers == 1
