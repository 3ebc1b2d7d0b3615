"""Callbacks (xpcnn/train/callbacks.py): when they run, what the run folder's writers write,
and early stopping, which ends a run the same way whether it was interrupted or not, with
one model or several workers."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

import xpcnn
from xpcnn.datasets import load_bundled
from xpcnn.io.checkpoint import CheckpointError
from xpcnn.optim import SGD
from xpcnn.train import (
    BestCheckpoint,
    Callback,
    EarlyStopping,
    PeriodicCheckpoints,
    Trainer,
    TrainingInterrupted,
    record,
)

from ..helpers import seed_net, small_net


@pytest.fixture(scope="module")
def data():
    loaded = load_bundled()
    return loaded.train.subset(np.arange(256)), loaded.test.subset(np.arange(128))


class Journal(Callback):
    """Writes down each call, and what the run folder held at each epoch's end."""

    def __init__(self):
        self.calls = []

    def on_fit_start(self, trainer):
        self.calls.append("fit start")

    def on_epoch_start(self, trainer, batches):
        self.calls.append(f"epoch start {trainer.state.epoch + 1} of {batches} batches")

    def on_step_end(self, trainer):
        self.calls.append(f"step {trainer.optimizer.steps}")

    def on_epoch_end(self, trainer, row):
        saved = trainer.checkpoint_path and trainer.checkpoint_path.exists()
        self.calls.append(f"epoch end {row['epoch']}" + (" (checkpoint of the last epoch)" if saved else ""))

    def on_fit_end(self, trainer):
        self.calls.append("fit end")

    def on_test_end(self, trainer, result, test):
        self.calls.append(f"test end {len(test)}")


def make_trainer(tmp_path=None, callbacks=(), lr=1e-2, workers=1, log=lambda message: None, **options):
    """small_net for most tests; at lr 1e-12, seed_net, whose validation loss such a rate
    cannot move (small_net's batch norm statistics would)."""
    net = small_net() if lr > 1e-6 else seed_net()
    return Trainer(net, SGD(net, lr, momentum=0.9), batch_size=128, seed=2, run_dir=tmp_path, progress=False,
                   log=log, callbacks=callbacks, workers=workers, **options)


def test_callbacks_run_in_order_and_before_the_run_folders_writers(tmp_path, data):
    train, test = data
    journal = Journal()
    trainer = make_trainer(tmp_path, [journal])
    trainer.fit(train, 2)
    trainer.finish(test)
    assert journal.calls == ["fit start", "epoch start 1 of 2 batches", "step 1", "step 2", "epoch end 1",
                             "epoch start 2 of 2 batches", "step 3", "step 4",
                             "epoch end 2 (checkpoint of the last epoch)", "fit end", "test end 128"]
    assert [type(callback).__name__ for callback in trainer.callbacks] == [
        "Journal", "PeriodicCheckpoints", "MetricsLog", "RunSummary"]
    assert json.loads((tmp_path / "summary.json").read_text())["epochs"] == 2


def test_fit_end_is_called_when_a_fit_is_interrupted(tmp_path, data):
    class Interrupt(Callback):
        def on_step_end(self, trainer):
            os.kill(os.getpid(), signal.SIGINT)

    journal = Journal()
    with pytest.raises(TrainingInterrupted):
        make_trainer(tmp_path, [Interrupt(), journal]).fit(data[0], 2)
    assert journal.calls[-2:] == ["step 1", "fit end"]


def stopper(patience=2, **options):
    """Early stopping that never sees an improvement after the first epoch: the learning
    rate below moves the validation loss by far less than min_delta."""
    return EarlyStopping("val_loss", patience=patience, min_delta=0.01, **options)


def test_early_stopping_ends_the_run_after_patience_epochs_without_improvement(tmp_path, data):
    train, val = data
    notes = []
    trainer = make_trainer(tmp_path, [stopper()], lr=1e-12, log=notes.append)
    trainer.fit(train, 10, val=val)
    assert len(trainer.history) == 3 and trainer.state.stopped.startswith("early stopping: val_loss has not improved")
    assert notes[-1] == f"stopping after epoch 3: {trainer.state.stopped}"
    resumed = Trainer.resume(tmp_path / "checkpoint.npz", progress=False, log=lambda message: None)
    assert resumed.state.stopped == trainer.state.stopped  # complete: nothing left to train
    assert resumed.fit(train, 10, val=val) == trainer.history
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == 3


def test_an_interrupted_run_keeps_what_early_stopping_saw(tmp_path, data):
    train, val = data
    reference = make_trainer(tmp_path / "a", [stopper()], lr=1e-12)
    reference.fit(train, 10, val=val)

    class InterruptInEpoch3(Callback):
        def on_step_end(self, trainer):
            if trainer.optimizer.steps == 5:
                os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted) as stop:
        make_trainer(tmp_path / "b", [stopper(), InterruptInEpoch3()], lr=1e-12).fit(train, 10, val=val)
    resumed = Trainer.resume(stop.value.checkpoint, progress=False, log=lambda message: None)
    assert [type(callback).__name__ for callback in resumed.callbacks] == [
        "EarlyStopping", "PeriodicCheckpoints", "MetricsLog", "RunSummary"]  # rebuilt; the interrupter was not recorded
    assert resumed.callbacks[0].waited == 1  # epoch 2 did not improve: the count goes on from there
    resumed.fit(train, 10, val=val)
    assert resumed.state.stopped == reference.state.stopped and len(resumed.history) == 3
    for name, value in reference.model.params.items():
        np.testing.assert_array_equal(resumed.model.params[name], value, err_msg=name)


def test_worker_threads_stop_together_at_the_first_ones_word(data):
    train, val = data
    trainer = make_trainer(None, [stopper(patience=1)], lr=1e-12, workers=2)
    trainer.fit(train, 10, val=val)
    assert trainer.workers == 2 and len(trainer.history) == 2 and trainer.state.stopped


def test_a_callback_that_stops_mid_epoch_lets_the_epoch_finish(data):
    class StopNow(Callback):
        def on_step_end(self, trainer):
            trainer.stop("enough")

    notes = []
    trainer = make_trainer(None, [StopNow()], log=notes.append)
    trainer.fit(data[0], 5)
    assert len(trainer.history) == 1 and trainer.optimizer.steps == 2 and trainer.state.stopped == "enough"
    assert [note for note in notes if note.startswith("stopping")] == ["stopping after epoch 1: enough"]  # once
    for reason in (None, 42, " "):  # a run stopped for no words could not be resumed, or did not stop
        with pytest.raises(TypeError, match="Trainer.stop reason must be words saying why"):
            trainer.stop(reason)


def test_a_stop_asked_within_an_epoch_then_interrupted_finishes_that_epoch_on_resume(tmp_path, data):
    class StopAndInterrupt(Callback):
        def on_step_end(self, trainer):
            if trainer.optimizer.steps == 1:
                trainer.stop("enough")
                os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted) as stop:
        make_trainer(tmp_path, [StopAndInterrupt()]).fit(data[0], 5)
    resumed = Trainer.resume(stop.value.checkpoint, progress=False, log=lambda message: None)
    assert resumed.state.stopped == "enough" and resumed.state.batch == 1
    resumed.fit(data[0], 5)
    assert len(resumed.history) == 1 and resumed.optimizer.steps == 2 and resumed.state.batch == 0


def test_every_recorded_callback_is_kept_and_none_of_the_run_folders_twice(tmp_path, data):
    train, val = data
    trainer = make_trainer(tmp_path, [stopper(patience=5), EarlyStopping("train_loss", patience=7),
                                      PeriodicCheckpoints(every=1)])
    assert [type(callback).__name__ for callback in trainer.callbacks] == [
        "EarlyStopping", "EarlyStopping", "PeriodicCheckpoints", "MetricsLog", "RunSummary"]
    trainer.fit(train, 1, val=val)
    resumed = Trainer.resume(tmp_path / "checkpoint.npz", progress=False)
    assert [callback.config()["patience"] for callback in resumed.callbacks[:2]] == [5, 7]
    with pytest.raises(ValueError, match="checkpoint_every must be >= 1, got 0"):
        make_trainer(tmp_path, checkpoint_every=0)


def test_early_stopping_refuses_what_cannot_work(data):
    with pytest.raises(ValueError, match="monitor must be one of val_loss, val_accuracy, train_loss"):
        EarlyStopping("loss")
    with pytest.raises(ValueError, match="EarlyStopping patience must be >= 1"):
        EarlyStopping(patience=0)
    with pytest.raises(ValueError, match=r"monitors val_loss, but the fit has no validation set \(fit\(..., val="):
        make_trainer(None, [EarlyStopping()]).fit(data[0], 1)
    make_trainer(None, [EarlyStopping("train_loss")]).fit(data[0], 1)  # needs none


def test_early_stopping_watches_accuracies_upwards():
    stopping, stops = EarlyStopping("val_accuracy", patience=2), []

    class Run:
        def stop(self, reason):
            stops.append(reason)

    for epoch, accuracy in enumerate([0.5, 0.7, 0.69, 0.7], start=1):  # 0.7 again is no improvement
        stopping.on_epoch_end(Run(), {"epoch": epoch, "val_accuracy": accuracy})
    assert stops == ["early stopping: val_accuracy has not improved on 0.7 (epoch 2) for 2 epochs"]
    assert stopping.state_dict() == {"best": 0.7, "best_epoch": 2, "waited": 2}


def test_a_patience_of_one_epoch_says_one_epoch():
    stopping, stops = EarlyStopping(patience=1), []

    class Run:
        def stop(self, reason):
            stops.append(reason)

    for epoch, loss in enumerate([0.5, 0.6], start=1):
        stopping.on_epoch_end(Run(), {"epoch": epoch, "val_loss": loss})
    assert stops == ["early stopping: val_loss has not improved on 0.5 (epoch 1) for 1 epoch"]


def test_the_recorded_callback_is_restored_not_passed_twice(tmp_path, data):
    train, val = data
    make_trainer(tmp_path, [stopper(patience=5)], lr=1e-12).fit(train, 1, val=val)
    with pytest.raises(ValueError, match="the run's EarlyStopping is restored from .*: do not pass it again"):
        Trainer.resume(tmp_path / "checkpoint.npz", callbacks=[stopper()])
    resumed = Trainer.resume(tmp_path / "checkpoint.npz", callbacks=[Journal()], progress=False)
    assert [type(callback).__name__ for callback in resumed.callbacks][:2] == ["EarlyStopping", "Journal"]
    assert resumed.callbacks[0].config() == {"monitor": "val_loss", "patience": 5, "min_delta": 0.01}
    assert resumed.settings()["early_stopping"] == 5


@pytest.mark.parametrize("entry, message", [
    ({"type": "Teleport", "config": {}, "state": {}}, "unknown callback 'Teleport'"),
    ({"type": "EarlyStopping", "config": {"patience": -1}, "state": {}}, "EarlyStopping patience must be >= 1"),
    ({"type": "EarlyStopping", "config": {}, "state": {"best": "low"}}, "EarlyStopping: expected state"),
])
def test_a_recorded_callback_that_does_not_fit_is_a_checkpoint_error(tmp_path, data, entry, message):
    from xpcnn.io.checkpoint import save_checkpoint

    trainer = make_trainer(tmp_path)
    state = record.to_checkpoint(trainer)
    state["callbacks"] = [entry]
    save_checkpoint(tmp_path / "bad.npz", trainer.model, trainer.optimizer, state)
    with pytest.raises(CheckpointError, match=f"bad.npz: field trainer.callbacks: {message}"):
        Trainer.resume(tmp_path / "bad.npz")


def test_the_best_epoch_is_kept_as_best_npz_and_its_record_resumes(tmp_path, data):
    train, val = data
    keeper = BestCheckpoint("train_loss")
    trainer = make_trainer(tmp_path, [keeper])
    trainer.fit(train, 3)
    best = min(trainer.history, key=lambda row: row["train_loss"])
    assert (keeper.best, keeper.best_epoch) == (best["train_loss"], best["epoch"])
    saved = xpcnn.load_checkpoint(tmp_path / "best.npz")
    assert len(saved.trainer["history"]) == best["epoch"]  # the run as it stood after that epoch
    resumed = Trainer.resume(tmp_path / "checkpoint.npz", progress=False)
    assert [c for c in resumed.callbacks if isinstance(c, BestCheckpoint)][0].best == keeper.best
    with pytest.raises(ValueError, match="BestCheckpoint keeps best.npz in the run folder, but the trainer has none"):
        make_trainer(None, [BestCheckpoint("train_loss")]).fit(train, 1)


def test_metrics_a_kill_left_an_epoch_short_are_written_again_when_the_complete_run_is_tested(tmp_path, data):
    train, test = data
    trainer = make_trainer(tmp_path)
    trainer.fit(train, 2)
    metrics = tmp_path / "metrics.jsonl"
    full = metrics.read_text()
    metrics.write_text(full.splitlines(keepends=True)[0])  # killed after the last checkpoint, before this file
    resumed = Trainer.resume(tmp_path / "checkpoint.npz", progress=False, log=lambda message: None)
    resumed.finish(test)  # what `xpcnn train --resume` does with a complete run
    assert metrics.read_text() == full
