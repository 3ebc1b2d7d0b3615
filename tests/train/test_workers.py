"""Worker threads sharing each batch (xpcnn/train/workers.py): they learn what one model
learns, stop together, fail together, and leave a run that one model resumes."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from xpcnn import ReLU
from xpcnn.datasets import load_bundled
from xpcnn.optim import SGD, Adam, Cosine
from xpcnn.train import Trainer, TrainingInterrupted, record

from ..helpers import small_net
from .test_trainer import InterruptAt


@pytest.fixture(scope="module")
def data():
    loaded = load_bundled()
    return loaded.train.subset(np.arange(600)), loaded.test.subset(np.arange(300))


def float64_trainer(tmp_path, workers, callbacks=(), **options):
    """small_net (batch norm, dropout) with shifted images, in float64, where summing the
    workers' shares in another order changes nothing the comparisons below can see. No
    bias in the convolution: batch norm cancels it, so its gradient is rounding noise,
    which Adam scales up to steps of lr * noise / eps and another order of sums changes."""
    net = small_net(conv_bias=False).to("numpy", dtype="float64")
    opt = Adam(net, 1e-2, schedule=Cosine(total=20, warmup=2))
    return Trainer(net, opt, batch_size=64, seed=5, augment=1, run_dir=tmp_path, progress=False, log=lambda m: None,
                   workers=workers, callbacks=callbacks, **options)


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


def test_workers_learn_with_the_run_s_label_smoothing(tmp_path, data):
    train, _ = data
    alone, shared = (float64_trainer(tmp_path / name, workers, label_smoothing=0.2) for name, workers in
                     (("a", 1), ("b", 2)))
    plain = float64_trainer(tmp_path / "c", 1)
    for trainer in (alone, shared, plain):
        trainer.fit(train, 1)
    assert_same_state(shared, alone, 1e-8)
    assert shared.history[0]["train_loss"] == pytest.approx(alone.history[0]["train_loss"], rel=1e-10)
    assert plain.history[0]["train_loss"] < alone.history[0]["train_loss"]  # smoothed targets are never fit exactly


def test_workers_train_with_the_trainer_s_own_loss(tmp_path, data):
    from xpcnn import SoftmaxCrossEntropy

    class Doubled(SoftmaxCrossEntropy):
        def forward(self, logits, labels):
            return 2 * super().forward(logits, labels)

        def backward(self):
            return 2 * super().backward()

    train, _ = data
    trainers = [float64_trainer(tmp_path / name, workers) for name, workers in (("a", 1), ("b", 2), ("c", 1))]
    for trainer in trainers[:2]:
        trainer.loss_fn = Doubled(check_labels=False)
    for trainer in trainers:
        trainer.fit(train, 1)
    assert_same_state(trainers[1], trainers[0], 1e-8)
    assert trainers[0].history[0]["train_loss"] > 1.5 * trainers[2].history[0]["train_loss"]


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
    assert Rows.seen == [64, 64, 128]  # two steps, then the epoch's probe of how the layers learn (layer_stats)
    assert trainer.workers == 1 and record.to_checkpoint(trainer)["workers"] == 1  # what the run did, recorded


def test_workers_are_chosen_from_the_batches_the_data_makes(data, monkeypatch):
    from xpcnn.diagnostics import machine

    monkeypatch.setattr(machine, "usable_cores", lambda: 2)
    monkeypatch.setattr(machine, "can_limit_blas", lambda: True)
    net = small_net()
    trainer = Trainer(net, SGD(net, 0.01), batch_size=100_000, workers=None, progress=False)
    assert trainer.choose_workers(data[0].subset(np.arange(8))) == 1  # 8 images: a small step, whatever the batch size


def test_processes_compare_their_weights_before_training():
    """Each process applies the summed gradients to its own copy of the network: copies
    built from other seeds would train apart, and only the first would be saved."""
    from xpcnn import distributed, presets
    from xpcnn.train.workers import run_facts

    train = load_bundled().train.subset(np.arange(64))

    def facts(seed):
        net = presets.build("tutorial", seed)
        return run_facts(Trainer(net, SGD(net, 0.1), progress=False), train)

    mine = facts(0)
    assert facts(0)["weights"] == mine["weights"]

    class Pair(distributed.Communicator):  # process 0 of two, the other having built from seed 1
        size = 2

        def gather(self, value):
            return [value, facts(1)]

    with pytest.raises(ValueError, match=r"process 1 of 2 has other weights than process 0: weights '[0-9a-f]{64}'"):
        distributed.check_same(Pair(), "weights", mine)


def test_worker_threads_under_several_processes_become_one_and_it_is_said():
    from xpcnn import distributed
    from xpcnn.train.workers import choose_workers

    class Two(distributed.Single):
        size = 2

    notes = []
    net = small_net()
    trainer = Trainer(net, SGD(net, 0.1), workers=2, progress=False, log=notes.append)
    trainer.comm = Two()
    assert choose_workers(trainer, load_bundled().train.subset(np.arange(256))) == 1
    assert notes == ["note: 2 worker threads become 1 under 2 processes: each process trains alone (start more "
                     "processes instead)"]
