"""The run record (xpcnn/train/record.py): what a checkpoint keeps of its run, read back with
every field checked, and the settings a resumed run keeps, which the command line asks it for."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import xpcnn
from xpcnn import backend
from xpcnn.cli.arguments import build_parser
from xpcnn.datasets import Dataset
from xpcnn.io.checkpoint import CheckpointError
from xpcnn.train import record

from ..helpers import small_checkpoint
from ..io.test_checkpoint import rewrite


def edit_trainer(change):
    def edit(meta):
        change(meta["trainer"])
    return edit


MALFORMED = {
    "epoch 1e30": (lambda t: t.update(epoch=1e30), r"field trainer.epoch: expected an integer"),
    "negative batch": (lambda t: t.update(batch=-1), "field trainer.batch"),
    "workers 0": (lambda t: t.update(workers=0), r"field trainer.workers: expected an integer in \[1, 4096\] or null"),
    "history not a list": (lambda t: t.update(history={"a": 1}), "field trainer.history"),
    "info a list": (lambda t: t.update(info=[]), "field trainer.info: expected an object"),
    "settings lack epochs": (lambda t: t["info"].update(settings={}), "field trainer.info.settings"),
    "stopped a number": (lambda t: t.update(stopped=3), "field trainer.stopped: expected a reason or null"),
    "callbacks a dict": (lambda t: t.update(callbacks={}), "field trainer.callbacks: expected a list"),
    "callback without state": (lambda t: t.update(callbacks=[{"type": "EarlyStopping", "config": {}}]),
                               r"field trainer.callbacks.0: expected an object with config, state, type"),
    "no progress": (lambda t: t.pop("epoch"), "has no optimizer or trainer state to resume from"),
    "callback type a list": (lambda t: t["callbacks"][0].update(type=[1]), r"field trainer.callbacks.0.type"),
    "history epoch a string": (lambda t: t["history"][0].update(epoch="one"), r"field trainer.history.0.epoch"),
    "history accuracy 2": (lambda t: t["history"][0].update(train_accuracy=2.0), r"field trainer.history.0."
                           r"train_accuracy: expected a number in \[0, 1\], got 2.0"),
    "history lr a string": (lambda t: t["history"][0].update(lr="x"), r"field trainer.history.0.lr: expected a number"),
    "history val_loss negative": (lambda t: t["history"][0].update(val_loss=-1.0, val_accuracy=0.5),
                                  r"field trainer.history.0.val_loss: expected a number >= 0, got -1"),
    "history train_loss NaN": (lambda t: t["history"][0].update(train_loss=float("nan")),
                               r"field trainer.history.0.train_loss: expected a number >= 0, got nan"),
    "history val_accuracy a list": (lambda t: t["history"][0].update(val_loss=1.0, val_accuracy=[1, 2]),
                                    r"field trainer.history.0.val_accuracy"),
    "history val_loss alone": (lambda t: t["history"][0].update(val_loss=1.0), r"field trainer.history.0: expected "
                               r"val_loss and val_accuracy together, or neither, got \['val_loss'\]"),
    "history layers a list": (lambda t: t["history"][0].update(layers=[]), r"field trainer.history.0.layers: "
                              "expected an object"),
    "layers without dead": (lambda t: t["history"][0].update(layers={"change": {}}), r"field trainer.history.0."
                            "layers: expected an object with change, dead"),
    "dead share 2": (lambda t: t["history"][0].update(layers={"change": {}, "dead": {"1": 2.0}}),
                     r"field trainer.history.0.layers.dead.1: expected a number in \[0, 1\], got 2.0"),
    "dead share null": (lambda t: t["history"][0].update(layers={"change": {}, "dead": {"1": None}}),
                        r"field trainer.history.0.layers.dead.1: expected a number in \[0, 1\], got None"),
    "negative change": (lambda t: t["history"][0].update(layers={"change": {"0": -1}, "dead": {}}),
                        r"field trainer.history.0.layers.change.0: expected a number >= 0 or null, got -1"),
    "65 layers": (lambda t: t["history"][0].update(layers={"change": {str(k): 0.1 for k in range(65)}, "dead": {}}),
                  r"field trainer.history.0.layers.change: expected at most 64 layers, got '65 layers'"),
    "a position of 201 characters": (lambda t: t["history"][0].update(layers={"change": {}, "dead": {"x" * 201: 0}}),
                                     r"field trainer.history.0.layers.dead: expected a layer position of at most 200 "
                                     "characters, got 'xxx"),
    "layers of a layer the network lacks": (lambda t: t["history"][0].update(layers={"change": {"3": 0.1},
                                                                                   "dead": {"9": 0.5}}),
                                            r"field trainer.history.0.layers.dead: expected positions of the "
                                            "network's layers, got '9'"),
    "NaN best": (lambda t: t["callbacks"][0]["state"].update(best=float("nan")), "EarlyStopping: expected state"),
    "label smoothing 1": (lambda t: t.update(label_smoothing=1), r"field trainer.label_smoothing: expected a number "
                          r"in \[0, 1\)"),
    "label smoothing a string": (lambda t: t.update(label_smoothing="0.1"), r"field trainer.label_smoothing"),
    "train images negative": (lambda t: t.update(train_images=-1), r"field trainer.train_images: expected an "
                              r"integer in \[0, 1,000,000,000\]"),
    "cuda graphs a number": (lambda t: t.update(cuda_graphs=1), r"field trainer.cuda_graphs: expected true, false "
                             "or null"),
    # each well formed, but not with the rest
    "epoch past the run's": (lambda t: t.update(epoch=5), r"field trainer.epoch: expected at most the run's 2 epochs"),
    "batch past an epoch's": (lambda t: t.update(train_images=10, batch=5),
                              r"field trainer.batch: expected at most the 3 batches of an epoch of the run's 10 "
                              "images"),
    "fewer steps than batches": (lambda t: t.update(train_images=8), r"field optimizer.steps: expected at least the "
                                 r"2 batches the run has trained \(trainer.epoch 1 of 2 batches, trainer.batch 0\), "
                                 "got 0"),
    "classes not the network's": (lambda t: t["info"]["data"].update(classes=["a", "b"]),
                                  r"fields architecture and trainer.info.data disagree: the network's output is"),
    "shifts out of sight": (lambda t: t.update(augment=6), r"field trainer.augment: expected shifts of fewer pixels "
                            "than the 6-pixel side of the run's images, got 6"),
}


def test_a_nan_validation_loss_that_older_runs_recorded_is_resumed(tmp_path):
    path = tmp_path / "run.npz"
    path.write_bytes(small_checkpoint(tmp_path))
    old = rewrite(path, tmp_path / "old.npz", meta=edit_trainer(
        lambda t: t["history"][0].update(val_loss=float("nan"), val_accuracy=0.1)))
    assert math.isnan(record.read(xpcnn.load_checkpoint(old)).progress.history[0]["val_loss"])


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_record_is_named_where_the_run_is_resumed(tmp_path, case):
    path = tmp_path / "run.npz"
    path.write_bytes(small_checkpoint(tmp_path))
    change, message = MALFORMED[case]
    bad = rewrite(path, tmp_path / "bad.npz", meta=edit_trainer(change))
    xpcnn.load_checkpoint(bad)  # the model itself is usable
    with pytest.raises(CheckpointError, match=message) as error:
        xpcnn.Trainer.resume(bad)
    assert str(error.value).startswith(f"{bad}: ")


def test_epochs_past_the_end_of_the_runs_own_schedule_are_named_in_the_checkpoint(tmp_path):
    path = tmp_path / "run.npz"
    path.write_bytes(small_checkpoint(tmp_path))

    def shorten(meta):  # 8 images in batches of 4: 2 steps an epoch, 1 epoch done, 2 planned
        meta["trainer"].update(train_images=8)
        meta["optimizer"].update(steps=2)
        meta["optimizer"]["config"]["schedule"] = {"type": "cosine", "total": 3, "warmup": 0, "floor": 0.0}

    bad = rewrite(path, tmp_path / "bad.npz", meta=shorten)
    with pytest.raises(CheckpointError, match=r"field trainer.info.settings.epochs: expected at most 1 epoch: epochs "
                       r"of 2 batches must fit in the 3 steps its optimizer's cosine schedule spans \(past its end the "
                       r"learning rate is about 0\), got 2"):
        xpcnn.Trainer.resume(bad)
    floor = rewrite(bad, tmp_path / "floor.npz", meta=lambda m: m["optimizer"]["config"]["schedule"].update(floor=0.1))
    assert xpcnn.Trainer.resume(floor, progress=False).epochs == 2  # a floor trains on past the end


def test_what_a_resume_keeps_is_what_the_command_can_be_given():
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    flags = {action.dest for action in train._actions}
    assert set(record.KEPT_ON_RESUME) <= flags
    net = xpcnn.presets.build("tutorial")
    trainer = xpcnn.Trainer(net, xpcnn.optim.build("sgd", net, 0.1), progress=False)
    selection_keys = {"dataset", "limit", "val_split", "data_dir", *record.FOLDER_SETTINGS}
    assert set(record.KEPT_ON_RESUME) <= set(record.settings(trainer)) | selection_keys


@pytest.mark.parametrize("given, message", [
    ({"digits": True}, "digits: the run began without it; resume without it, or start a new run"),
    ({"skip_bad_images": True}, "skip_bad_images: the run began without it; resume without it, or start a new run"),
    ({"flip": False}, "flip: the run began with it; resume without turning it off, or start a new run"),
    ({"lr": 0.5}, "lr: 0.5 differs from the run's saved 0.1; a resumed run continues as it was started"),
])
def test_a_switch_that_differs_on_resume_is_named_as_a_switch(given, message):
    net = xpcnn.presets.build("tutorial")
    trainer = xpcnn.Trainer(net, xpcnn.optim.build("sgd", net, 0.1), augment=xpcnn.datasets.Augment(1, flip=True),
                            progress=False)
    reader = {"image_size": 28, "channels": 1, "test_split": 0.2, "on_bad": "refuse", "split_seed": 0,
              "pictures": "resize"}
    trainer.selection = xpcnn.datasets.Selection("images", ("/pictures",), reader=reader)
    with pytest.raises(record.SettingsConflict, match=f"^{message}"):
        raise record.SettingsConflict(*record.conflicts(trainer, **given)[0])


def test_the_record_reads_back_what_it_wrote(tmp_path):
    path = tmp_path / "run.npz"
    path.write_bytes(small_checkpoint(tmp_path))
    trainer = xpcnn.Trainer.resume(path, progress=False)
    saved = record.read(xpcnn.load_checkpoint(path))
    assert record.to_checkpoint(trainer) == {**xpcnn.load_checkpoint(path).trainer, "workers": saved.workers}
    assert (saved.name, saved.batch_size, saved.epochs, saved.progress.epoch) == ("custom", 4, 2, 1)
    assert trainer.callbacks[0].state_dict() == {"best": 1.25, "best_epoch": 1, "waited": 0}
    assert trainer.selection.limit == 100 and trainer.settings()["early_stopping"] == 4


def test_a_record_from_before_callbacks_and_early_stops_still_resumes(tmp_path):
    path = tmp_path / "run.npz"
    path.write_bytes(small_checkpoint(tmp_path))
    old = rewrite(path, tmp_path / "old.npz", meta=edit_trainer(lambda t: [t.pop(key) for key in
                                                                         ("stopped", "callbacks", "workers")]))
    trainer = xpcnn.Trainer.resume(old, progress=False)
    assert trainer.state.stopped is None and trainer.workers == 1 and trainer.settings()["early_stopping"] is None
    assert not any(isinstance(callback, xpcnn.train.EarlyStopping) for callback in trainer.callbacks)
    assert json.loads(json.dumps(record.to_checkpoint(trainer)))["stopped"] is None


def test_a_record_from_before_label_smoothing_resumes_without_it(tmp_path):
    path = tmp_path / "run.npz"
    path.write_bytes(small_checkpoint(tmp_path))
    old = rewrite(path, tmp_path / "old.npz", meta=edit_trainer(lambda t: t.pop("label_smoothing")))
    trainer = xpcnn.Trainer.resume(old, progress=False)
    assert trainer.label_smoothing == 0.0 and trainer.loss_fn.label_smoothing == 0.0
    assert record.to_checkpoint(trainer)["label_smoothing"] == 0.0


def test_a_resumed_run_keeps_its_cuda_graphs_where_its_backend_records_them(tmp_path, monkeypatch):
    """On CuPy a step with graphs multiplies with a kernel of its own: the same arithmetic
    after a resume needs the same choice."""
    path = tmp_path / "run.npz"
    path.write_bytes(small_checkpoint(tmp_path))
    asked = rewrite(path, tmp_path / "asked.npz", meta=edit_trainer(lambda t: t.update(cuda_graphs=True)))
    old = rewrite(path, tmp_path / "old.npz", meta=edit_trainer(lambda t: t.pop("cuda_graphs")))
    assert xpcnn.Trainer.resume(asked, progress=False).cuda_graphs is None  # NumPy records none
    monkeypatch.setattr(backend, "can_record_graphs", lambda like: True)
    assert xpcnn.Trainer.resume(asked, progress=False).cuda_graphs is True
    assert xpcnn.Trainer.resume(asked, progress=False, cuda_graphs=False).cuda_graphs is False
    assert xpcnn.Trainer.resume(old, progress=False).cuda_graphs is None


def test_extending_a_run_stretches_its_schedule_and_reopens_an_early_stop(tmp_path):
    stopping = xpcnn.train.EarlyStopping(patience=2)
    trainer = xpcnn.Trainer.for_preset("tutorial", train_size=640, progress=False, callbacks=[stopping])
    trainer.state.stopped, stopping.waited = "early stopping: val_loss has not improved", 2
    line = record.extend(trainer, 5, 10)
    assert trainer.epochs == 5 and trainer.state.stopped is None and stopping.waited == 0  # patience again
    assert line.startswith("extending the run from 3 to 5 epochs: the cosine schedule now spans 50 steps")
    with pytest.raises(record.Shortened, match="epochs: 4: a run can be extended, not shortened"):
        record.extend(trainer, 4, 10)
    with pytest.raises(ValueError, match=r"^epochs must be at most 1000000, got 1000001$"):  # no checkpoint holds more
        record.extend(trainer, 10**6 + 1, 10)
    assert trainer.optimizer.schedule.total == 50 and trainer.epochs == 5


def test_a_last_batch_that_leaves_batch_norm_one_value_per_channel_is_refused_before_any_step():
    rng = np.random.default_rng(0)
    train = Dataset.from_arrays(rng.integers(0, 256, (9, 3, 4, 4), dtype=np.uint8), np.arange(9) % 2)
    net = xpcnn.Sequential([xpcnn.Conv2D(3, 4, 4, rng=0), xpcnn.BatchNorm2D(4), xpcnn.Flatten(), xpcnn.Dense(4, 2)])
    trainer = xpcnn.Trainer(net, xpcnn.optim.SGD(net, 0.01), batch_size=4, progress=False, log=lambda m: None)
    with pytest.raises(xpcnn.presets.SettingsError, match=r"^batch_size: the last batch of an epoch holds 1 image \(9 "
                       r"training images in batches of 4\), and layer 1 \(BatchNorm2D.*\) sees 1x1 maps"):
        trainer.fit(train, 1)
    assert trainer.optimizer.steps == 0
    trainer = xpcnn.Trainer(net, xpcnn.optim.SGD(net, 0.01), batch_size=3, progress=False, log=lambda m: None)
    trainer.fit(train, 1)  # three batches of 3
    assert trainer.optimizer.steps == 3


def test_a_run_whose_checkpoints_could_not_rebuild_it_is_refused_before_any_step(tmp_path):
    class Halving(xpcnn.optim.Schedule):  # saved as "constant": a resume would train at another rate
        def __call__(self, step):
            return 0.5 ** (step // 2)

    class Other(xpcnn.ReLU):
        pass

    rng = np.random.default_rng(0)
    train = Dataset.from_arrays(rng.integers(0, 256, (8, 1, 4, 4), dtype=np.uint8), np.arange(8) % 2)
    for layer, schedule, message in ((xpcnn.ReLU(), Halving(), r"the learning-rate schedule Halving would be saved "
                                      r"as 'constant' .*a Trainer without run_dir"),
                                     (Other(), None, r"layer 1 \(.*Other\): no layer of this class is registered")):
        net = xpcnn.Sequential([xpcnn.Flatten(), layer, xpcnn.Dense(16, 2, rng=0)])
        sgd = xpcnn.optim.SGD(net, 0.1, schedule=schedule)
        trainer = xpcnn.Trainer(net, sgd, batch_size=4, run_dir=tmp_path / "run", progress=False, log=lambda m: None)
        with pytest.raises(ValueError, match=message):
            trainer.fit(train, 1)
        assert sgd.steps == 0 and not (tmp_path / "run" / "checkpoint.npz").exists()
        xpcnn.Trainer(net, sgd, batch_size=4, progress=False, log=lambda m: None).fit(train, 1)  # no folder: trains
        assert sgd.steps == 2



def test_a_run_whose_checkpoints_could_not_be_loaded_is_refused_before_any_step(tmp_path):
    rng = np.random.default_rng(0)
    train = Dataset.from_arrays(rng.integers(0, 256, (4, 1, 8, 8), dtype=np.uint8), np.arange(4) % 2)
    net = xpcnn.Sequential([xpcnn.Conv2D(1, 8, 3, padding=20_000, rng=0), xpcnn.GlobalAvgPool2D(), xpcnn.Flatten(),
                            xpcnn.Dense(8, 2, rng=1)])
    trainer = xpcnn.Trainer(net, xpcnn.optim.SGD(net, 0.1), batch_size=4, run_dir=tmp_path / "run", progress=False,
                            log=lambda m: None)
    with pytest.raises(ValueError, match=r"this run's checkpoints could not be loaded: .*one \(1, 8, 8\) image makes "
                                         r"12,80.* values"):
        trainer.fit(train, 1)
    assert trainer.optimizer.steps == 0
