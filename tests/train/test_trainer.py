"""The training loop: learning, divergence, interruption and exact resumption."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

import xpcnn
from xpcnn import backend, presets
from xpcnn.datasets import Dataset, load_bundled
from xpcnn.diagnostics.anomaly import NonFiniteError
from xpcnn.evaluation import evaluate
from xpcnn.io.checkpoint import load_checkpoint
from xpcnn.optim import SGD, Adam, Cosine
from xpcnn.presets import SettingsError
from xpcnn.train import Callback, Trainer, TrainingDiverged, TrainingInterrupted

from ..helpers import small_dataset, small_net


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


def test_ctrl_c_at_the_last_step_stops_before_the_test_and_resume_tests_it(tmp_path, data):
    train, _ = data
    trainer = make_trainer(tmp_path, callbacks=[InterruptAt(10)])  # 10 steps an epoch: the last one's end
    with pytest.raises(TrainingInterrupted, match=r"last step \(epoch 1\), before its test") as info:
        trainer.fit(train, 1)
    resumed = Trainer.resume(info.value.checkpoint, progress=False, log=lambda m: None)
    assert xpcnn.train.record.complete(resumed) and resumed.optimizer.steps == 10


@pytest.mark.parametrize("stop_at", [4, 10])  # mid-epoch: the fit stops; its last step: the fit ends after it
def test_a_ctrl_c_stops_its_own_fit_only(tmp_path, data, stop_at):
    train, _ = data
    trainer = make_trainer(tmp_path, callbacks=[InterruptAt(stop_at)])
    try:
        trainer.fit(train, 1)
    except TrainingInterrupted:
        pass
    trainer.fit(train, 2)  # the same trainer, continued in the same process
    assert (trainer.state.epoch, trainer.optimizer.steps) == (2, 20)


class InterruptWhileScoring(Callback):
    """Presses Ctrl-C as the trained network's test result comes in (the plots are next)."""

    def on_test_end(self, trainer, result, test):
        os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_while_scoring_a_trained_network_saves_and_resume_scores_it_again(tmp_path, data):
    train, test = data
    trainer = make_trainer(tmp_path, callbacks=[InterruptWhileScoring()])
    trainer.fit(train, 1)
    with pytest.raises(TrainingInterrupted, match="interrupted after training, while the network was scored and "
                                                  "its results written") as info:
        trainer.finish(test)
    resumed = Trainer.resume(info.value.checkpoint, progress=False, log=lambda m: None)
    assert xpcnn.train.record.complete(resumed)
    scored, want = resumed.finish(test), evaluate(trainer.model, test)
    assert (scored["accuracy"], scored["loss"]) == (want["accuracy"], want["loss"])


@pytest.mark.parametrize("stop_at", [4, 13])
def test_a_run_with_cuda_graphs_resumes_to_the_weights_of_an_unbroken_one(tmp_path, data, target, stop_at):
    """The resumed run records its steps too (the checkpoint keeps cuda_graphs); on CuPy its
    products are the kernel of every step of a run with graphs, not cuBLAS."""
    if not backend.can_record_graphs(backend.to_backend(np.zeros(1), *target)):
        pytest.skip(f"{target[0]} on {target[1] or 'its default device'} records no CUDA graphs")
    train, _ = data

    def trainer(folder, callbacks=()):
        net = small_net().to(*target)
        return Trainer(net, Adam(net, 1e-2, schedule=Cosine(total=20, warmup=2)), batch_size=64, seed=5,
                       run_dir=tmp_path / folder, progress=False, log=lambda m: None, callbacks=list(callbacks),
                       cuda_graphs=True)

    reference = trainer("a")
    reference.fit(train, 2)
    with pytest.raises(TrainingInterrupted) as info:
        trainer("b", [InterruptAt(stop_at)]).fit(train, 2)
    resumed = Trainer.resume(info.value.checkpoint, *target, progress=False, log=lambda m: None)
    assert resumed.cuda_graphs is True
    resumed.fit(train, 2)
    assert reference.graph_shapes == resumed.graph_shapes == 2
    for name, value in reference.model.state_dict().items():
        np.testing.assert_array_equal(resumed.model.state_dict()[name], value, err_msg=name)


def test_divergence_stops_before_the_weights_change(tmp_path, data):
    train, _ = data
    net = small_net()
    trainer = Trainer(net, SGD(net, 1e30), batch_size=64, run_dir=tmp_path, progress=False, log=lambda m: None)
    message = r"loss is (nan|inf) at step \d+ \(epoch 1, batch \d+\), lr 1e\+30"
    with pytest.raises(TrainingDiverged, match=message) as info:
        trainer.fit(train, 3)
    assert "Trainer(anomaly=True), or --detect-anomaly," in str(info.value)
    assert "batch norm's running statistics, took this batch in" in str(info.value)  # small_net has batch norm
    for value in trainer.model.params.values():
        assert np.all(np.isfinite(value))


def test_a_loss_that_overflows_with_anomaly_checks_on_says_so(data):
    """The checks found no layer: the hint is not to turn them on."""
    train, _ = data
    net = xpcnn.Sequential([xpcnn.Flatten(), xpcnn.Dense(28 * 28, 10, rng=0)])
    net.layers[1].params["weight"] *= np.float32(1e37)  # finite logits, beyond what exp takes
    trainer = Trainer(net, SGD(net, 0.1), batch_size=64, anomaly=True, progress=False, log=lambda m: None)
    with pytest.raises(TrainingDiverged, match="every layer's values were finite: the loss itself overflowed") as info:
        trainer.fit(train, 1)
    assert "running statistics" not in str(info.value)  # it has none


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


def test_an_empty_training_or_validation_set_is_refused_before_any_step(data):
    train, test = data
    net = small_net()
    trainer = Trainer(net, SGD(net, 0.01), batch_size=64, workers=None, progress=False, log=lambda m: None)
    with pytest.raises(ValueError, match=r"the training set \(mnist\) holds no images"):
        trainer.fit(train.subset(np.arange(0)), 1)
    with pytest.raises(ValueError, match=r"the validation set \(mnist\) holds no images"):
        trainer.fit(train, 1, val=test.subset(np.arange(0)))
    assert trainer.optimizer.steps == 0


def test_shifts_that_move_the_images_out_of_sight_are_refused(data):
    net = small_net()
    with pytest.raises(ValueError, match="augment must be at most 1000, got 1000000"):
        Trainer(net, SGD(net, 0.01), augment=10**6)
    trainer = Trainer(net, SGD(net, 0.01), augment=28, progress=False, log=lambda m: None)
    with pytest.raises(SettingsError, match="augment: shifts of up to 28 pixels would move 28x28 images out of sight"):
        trainer.fit(data[0], 1)


def test_a_network_whose_outputs_are_not_the_data_s_classes_is_refused_before_any_step(data):
    train, _ = data
    net = xpcnn.Sequential([xpcnn.Flatten(), xpcnn.Dense(784, 12, rng=0)])  # 12 outputs for 10 classes
    trainer = Trainer(net, SGD(net, 0.01), progress=False, log=lambda m: None)
    with pytest.raises(ValueError, match=r"the training set \(mnist\): the network's output is \(12,\) for each image, "
                                         r"but there are 10 classes: its last layer needs 10 outputs"):
        trainer.fit(train, 1)
    assert trainer.optimizer.steps == 0
    small = small_net()
    five = Dataset.from_arrays(train.images[:8], np.arange(8) % 5)  # its classes counted from its labels
    with pytest.raises(ValueError, match=r"classifies the 10 classes of mnist .* but the validation set has the 5 of "
                                         r"arrays .*with Dataset.from_arrays\(..., like=train\), or like=model\)"):
        Trainer(small, SGD(small, 0.01), progress=False, log=lambda m: None).fit(train, 1, five)


def test_a_second_fit_to_as_many_epochs_says_there_is_nothing_to_train(data):
    notes = []
    net = small_net()
    trainer = Trainer(net, SGD(net, 0.01), progress=False, log=notes.append)
    trainer.fit(data[0], 1)
    trainer.fit(data[0], 1)
    assert notes[-1].startswith("note: the run has done 1 epoch, as many as asked: nothing to train")
    assert trainer.optimizer.steps == 10


def quiet(line: str) -> None:
    """A log that says nothing."""


def test_a_new_run_never_writes_into_a_folder_that_holds_one(tmp_path):
    data = load_bundled().train.sample(128)
    first = Trainer.for_preset("tutorial", train_size=128, run_dir=tmp_path / "run", progress=False, log=quiet)
    first.fit(data, 1)
    second = Trainer.for_preset("tutorial", train_size=128, run_dir=tmp_path / "run", progress=False, log=quiet)
    with pytest.raises(ValueError, match=r"already holds a run; continue it with Trainer.resume\("):
        second.fit(data, 1)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a run folder"):
        Trainer.for_preset("tutorial", run_dir=tmp_path / "file", progress=False, log=quiet)
    resumed = Trainer.resume(tmp_path / "run" / "checkpoint.npz", log=quiet, progress=False)
    resumed.fit(data, 2)  # the run's own folder: it continues there
    assert resumed.state.epoch == 2


def test_a_resumed_run_refuses_other_images(tmp_path):
    data = load_bundled().train
    trainer = Trainer.for_preset("tutorial", train_size=128, run_dir=tmp_path / "run", progress=False, log=quiet)
    trainer.fit(data.sample(128, seed=0), 1)
    resumed = Trainer.resume(tmp_path / "run" / "checkpoint.npz", log=quiet, progress=False)
    with pytest.raises(ValueError, match=r"these training images are not the run's \(digest"):
        resumed.fit(data.sample(128, seed=1), 2)
    resumed.fit(data.sample(128, seed=0), 2)


def test_trainer_parts_are_named_when_they_are_wrong():
    net = presets.build("tutorial")
    with pytest.raises(TypeError, match="Trainer callbacks must be a list of Callbacks"):
        Trainer(net, SGD(net, 0.1), callbacks=xpcnn.train.EarlyStopping(), progress=False)
    with pytest.raises(ValueError, match="two of BestCheckpoint would write the same file"):
        Trainer(net, SGD(net, 0.1), callbacks=[xpcnn.train.BestCheckpoint(), xpcnn.train.BestCheckpoint()])
    with pytest.raises(TypeError, match=r"Sequential takes a list of layers, got Flatten"):
        xpcnn.Sequential(xpcnn.Flatten())


@pytest.mark.parametrize("setting, value, error, message", [
    ("seed", 2**64 - 5, ValueError, r"^seed must be at most 9223372036854775807, got 18446744073709551611$"),
    ("batch_size", 10**9 + 1, ValueError, r"^batch_size must be at most 1000000000, got 1000000001$"),
    ("workers", 4097, ValueError, r"^workers must be at most 4096, got 4097$"),
    ("name", None, TypeError, r"^Trainer name must be a string, got None$"),
    ("callbacks", [xpcnn.train.EarlyStopping(patience=2) for _ in range(17)], ValueError,
     r"^Trainer callbacks: a checkpoint records at most 16 EarlyStopping and BestCheckpoint callbacks, got 17; the "
     "run could not be resumed$"),
])
def test_a_setting_its_checkpoint_could_not_record_is_refused_before_the_run(setting, value, error, message):
    """A 64-bit seed (or a name None) trained and saved, and then the run could not be resumed."""
    net = presets.build("tutorial")
    with pytest.raises(error, match=message):
        Trainer(net, SGD(net, 0.1), progress=False, **{setting: value})


@pytest.mark.parametrize("options, error, message", [
    ({"workers": 0}, ValueError, r"^workers must be >= 1, got 0$"),
    ({"progress": "no"}, TypeError, r"^Trainer progress must be True or False"),
    ({"label_smoothing": 1.0}, ValueError, r"^Trainer label_smoothing must be in \[0.0, 1.0\), got 1.0$"),
    ({"checkpoint_every": 5}, ValueError, r"^checkpoint_every: checkpoints are written in the run folder"),
    ({"cuda_graphs": 1}, TypeError, r"^Trainer cuda_graphs must be True, False or None, got 1$"),
])
def test_a_preset_s_refused_option_seeds_and_builds_nothing(monkeypatch, options, error, message):
    """xpcnn.seed's generator was seeded, and the network built, before the constructor refused an option."""
    library = seeded_library()
    state = library.bit_generator.state
    built = []
    monkeypatch.setattr(presets, "build", lambda *args, build=presets.build: built.append(args) or build(*args))
    with pytest.raises(error, match=message):
        Trainer.for_preset("tutorial", **options)
    assert built == []
    assert xpcnn.init.host_rng(None) is library and library.bit_generator.state == state


def test_a_preset_s_refused_width_seeds_nothing():
    library = seeded_library()
    state = library.bit_generator.state
    with pytest.raises(SettingsError, match=r"^width: applies to resnet20 and cifar, not tutorial$"):
        Trainer.for_preset("tutorial", width=0.5)
    assert xpcnn.init.host_rng(None) is library and library.bit_generator.state == state
    Trainer.for_preset("tutorial", seed=3, progress=False)  # for layers built after it without a generator
    assert xpcnn.init.host_rng(None).bit_generator.state == np.random.default_rng(3).bit_generator.state


def seeded_library():
    """The library's generator (xpcnn.seed's), seeded now."""
    xpcnn.seed(7)
    return xpcnn.init.host_rng(None)


def test_as_many_recorded_callbacks_as_a_checkpoint_records_resume(tmp_path):
    net = small_net()
    stops = [xpcnn.train.EarlyStopping(patience=2) for _ in range(16)]
    Trainer(net, SGD(net, 0.1), progress=False, callbacks=stops).save(tmp_path / "run.npz")
    resumed = Trainer.resume(tmp_path / "run.npz", progress=False)
    assert len(xpcnn.train.callbacks.recorded(resumed.callbacks)) == 16


def test_more_epochs_than_a_checkpoint_records_are_refused_before_the_run():
    net = presets.build("tutorial")
    trainer = Trainer(net, SGD(net, 0.1), progress=False)
    with pytest.raises(ValueError, match=r"^epochs must be at most 1000000, got 1000001$"):
        trainer.fit(small_dataset(8), 10**6 + 1)
    assert trainer.state.epoch == 0 and trainer.epochs == 0


def test_augmentation_of_pictures_is_recorded_and_resumed(tmp_path):
    from xpcnn.datasets import Augment

    data = load_bundled().train.sample(128)
    net = presets.build("tutorial")
    trainer = Trainer(net, SGD(net, 0.01), augment=Augment(2, "reflect", True), run_dir=tmp_path / "run",
                      progress=False, log=quiet)
    trainer.fit(data, 1)
    resumed = Trainer.resume(tmp_path / "run" / "checkpoint.npz", log=quiet, progress=False)
    assert resumed.augment == Augment(2, "reflect", True)
    assert xpcnn.train.record.settings(resumed)["pad"] == "reflect" and xpcnn.train.record.settings(resumed)["flip"]


def test_label_smoothing_is_trained_with_and_kept_by_a_resumed_run(tmp_path, data):
    train, test = data
    reference, plain = make_trainer(tmp_path / "a", label_smoothing=0.1), make_trainer(tmp_path / "c")
    reference.fit(train, 2, val=test)
    plain.fit(train, 2, val=test)
    interrupted = make_trainer(tmp_path / "b", label_smoothing=0.1, callbacks=[InterruptAt(13)])
    with pytest.raises(TrainingInterrupted) as info:
        interrupted.fit(train, 2, val=test)
    resumed = Trainer.resume(info.value.checkpoint, progress=False, log=lambda m: None, label_smoothing=0.1)
    assert resumed.label_smoothing == 0.1 and resumed.settings()["label_smoothing"] == 0.1
    assert resumed.describe().endswith(", label smoothing 0.1")
    resumed.fit(train, 2, val=test)
    for name, value in reference.model.params.items():
        np.testing.assert_array_equal(resumed.model.params[name], value, err_msg=name)
    assert any(not np.array_equal(plain.model.params[name], value) for name, value in reference.model.params.items())
    # the validation loss is the plain cross-entropy of the model, whatever it was trained towards
    assert reference.history[-1]["val_loss"] == evaluate(reference.model, test)["loss"]
    assert reference.history[-1]["train_loss"] > plain.history[-1]["train_loss"]
    with pytest.raises(xpcnn.train.SettingsConflict, match=r"^label_smoothing: 0.2 differs from the run's saved 0.1; "
                       r"a resumed run continues as it was started \(start a new run to change it\)$"):
        Trainer.resume(info.value.checkpoint, progress=False, log=lambda m: None, label_smoothing=0.2)
    saved = reference.batch_size, reference.seed  # the rest of what the run's batches are made of
    for given, message in (({"batch_size": saved[0] + 1}, f"batch_size: {saved[0] + 1} differs from the run's saved"),
                           ({"seed": saved[1] + 1}, f"seed: {saved[1] + 1} differs from the run's saved"),
                           ({"augment": 2}, "augment: 2 differs from the run's saved")):
        with pytest.raises(xpcnn.train.SettingsConflict, match=f"^{message}"):
            Trainer.resume(info.value.checkpoint, progress=False, log=lambda m: None, **given)
    same = Trainer.resume(info.value.checkpoint, progress=False, log=lambda m: None, batch_size=saved[0], augment=0)
    assert same.batch_size == saved[0] and not same.augment


@pytest.mark.parametrize("value, error, message", [
    (1.0, ValueError, r"Trainer label_smoothing must be in \[0.0, 1.0\), got 1.0"),
    (-0.5, ValueError, r"Trainer label_smoothing must be in \[0.0, 1.0\), got -0.5"),
    ("0.1", TypeError, "Trainer label_smoothing must be a finite real number, got '0.1'"),
])
def test_label_smoothing_outside_0_to_1_is_refused(value, error, message):
    net = presets.build("tutorial")
    with pytest.raises(error, match=message):
        Trainer(net, SGD(net, 0.1), progress=False, label_smoothing=value)


def test_a_preset_s_schedule_is_planned_over_the_data_it_trains_on(data, capsys):
    """A schedule planned over other data would end early (a learning rate of 0 for the
    rest of the run) or never decay."""
    train, _ = data  # 600 images: 10 batches of 64
    for size in (64, 60_000):
        with pytest.raises(SettingsError, match=r"^train_size: the schedule was planned over epochs of \d+ batch"
                                                r".*this training set of 600 images makes 10: pass train_size="):
            Trainer.for_preset("tutorial", train_size=size, progress=False).fit(train, 1)
    for size, error, message in ((0, ValueError, "train_size must be >= 1, got 0"),
                                 (1.5, TypeError, "train_size must be an integer, got 1.5")):
        with pytest.raises(error, match=message):
            Trainer.for_preset("tutorial", train_size=size)
    trainer = Trainer.for_preset("tutorial", train_size=len(train), progress=False)
    trainer.fit(train, 1)
    progress = capsys.readouterr()
    assert progress.out == "" and progress.err.startswith("epoch 1/3: loss ")  # the default log is stderr's


@pytest.mark.parametrize("method, options, message", [
    ("for_preset", {"epochs": 2}, r"^Trainer.for_preset\(\) got an unexpected keyword argument 'epochs'; it takes "
                                  "name"),
    ("for_preset", {"batch_size": 8}, r"^Trainer.for_preset\(\) got an unexpected keyword argument 'batch_size'"),
    # a recipe's name for the recipe was "'str' object has no attribute 'label_smoothing'"
    ("for_preset", {"recipe": "fast"}, r"^recipe must be a Recipe \(xpcnn.presets.recipe\(name\), .replace\(...\) to "
                                       r"change it\) or None, got str$"),
    ("resume", {"backend": "torch"}, r"^Trainer.resume\(\) got an unexpected keyword argument 'backend'; it takes "
                                     r"path, backend_name, device, callbacks and the constructor's batch_size"),
])
def test_a_keyword_neither_the_method_nor_the_constructor_takes_is_named_with_the_method(method, options, message):
    with pytest.raises(TypeError, match=message):
        getattr(Trainer, method)("tutorial" if method == "for_preset" else "run.npz", **options)


def test_a_preset_trains_without_label_smoothing_unless_asked():
    assert Trainer.for_preset("tutorial", train_size=128, progress=False).loss_fn.label_smoothing == 0.0
    trainer = Trainer.for_preset("tutorial", train_size=128, progress=False, label_smoothing=0.3)
    assert trainer.loss_fn.label_smoothing == 0.3 and "label smoothing 0.3" in trainer.describe()
    smoothed = presets.recipe("tutorial").replace(label_smoothing=0.2)
    assert Trainer.for_preset("tutorial", smoothed, train_size=128, progress=False).loss_fn.label_smoothing == 0.2


def test_a_run_records_how_to_read_its_images_again_only_for_training_images():
    loaded = load_bundled()
    for train, expected in ((loaded.train.sample(64, seed=2), loaded.train.sample(64, seed=2).selection),
                            (loaded.test.sample(64, seed=2), None), (loaded.train.split(0.5)[1], None)):
        net = small_net()
        trainer = Trainer(net, SGD(net, 0.01), batch_size=32, progress=False)
        trainer.fit(train, 1)
        assert trainer.selection == expected


def test_a_run_longer_than_its_schedule_is_refused_and_extend_stretches_it(data):
    """Past a cosine schedule's end every step would train at a learning rate of 0."""
    train, _ = data  # 10 batches of 64
    trainer = Trainer.for_preset("tutorial", train_size=len(train), progress=False, log=quiet)  # 3 epochs
    with pytest.raises(SettingsError, match=r"^epochs: 4 epochs of 10 batches are 40 steps, but the cosine schedule "
                                            r"ends after 30: .*record.extend\(trainer, 4, 10\)"):
        trainer.fit(train, 4)
    assert trainer.epochs == 3 and trainer.optimizer.steps == 0  # nothing changed, nothing trained
    xpcnn.train.record.extend(trainer, 4, 10)
    trainer.fit(train, 4)
    held = small_net()  # a schedule that decays to a floor and holds it may run past its end
    Trainer(held, SGD(held, 0.1, schedule=Cosine(10, floor=0.5)), progress=False, log=quiet).fit(train, 2)
    assert trainer.optimizer.steps == 40 and trainer.history[2]["lr"] > 0  # at step 30 of 40, not the end


def test_statistics_that_overflow_while_the_loss_stays_finite_end_the_run_before_a_bad_save(tmp_path):
    """Batch norm's running variance overflows to inf, its output and the loss stay finite:
    the epoch's checkpoint, which no one could load, is not written."""
    train = load_bundled().train.subset(np.arange(540))

    def run(anomaly, workers=1):
        xpcnn.seed(0)
        net = xpcnn.Sequential([xpcnn.Conv2D(1, 4, 3), xpcnn.BatchNorm2D(4), xpcnn.MaxPool2D(2), xpcnn.ReLU(),
                                xpcnn.Flatten(), xpcnn.Dense(4 * 13 * 13, 10)])
        Trainer(net, SGD(net, 100, momentum=0.9), batch_size=64, run_dir=tmp_path / f"{anomaly}{workers}",
                anomaly=anomaly, workers=workers, progress=False, log=lambda m: None).fit(train, 2)

    for workers in (1, 2):  # with 2, only the thread that saves sees it: its failure ends the other (no hang)
        with pytest.raises(NonFiniteError, match=r"^buffer/1.running_var holds NaN or Inf after step \d+: the run "
                                                 r"overflowed .*; no checkpoint was saved"):
            run(anomaly=False, workers=workers)
        assert not (tmp_path / f"False{workers}" / "checkpoint.npz").exists()
    with pytest.raises(NonFiniteError, match=r"running_var of layer 1 \(BatchNorm2D\) after forward: .* Inf"):
        run(anomaly=True)


def test_a_callback_method_that_cannot_take_its_points_arguments_is_refused_where_it_is_given():
    class Short(Callback):
        def on_epoch_end(self, trainer):
            pass

        on_fit_end = None

    net = xpcnn.Sequential([xpcnn.Flatten(), xpcnn.Dense(4, 2, rng=0)])
    with pytest.raises(TypeError, match=r"^Trainer callback Short has on_epoch_end\(trainer\), called with \(trainer, "
                       r"row\); on_fit_end = None, called with \(trainer\)$"):
        Trainer(net, SGD(net, 0.1), callbacks=[Short()])
    given = Callback()  # the points set on the object itself, not its class
    given.on_epoch_end, given.on_fit_end = (lambda trainer: None), None
    with pytest.raises(TypeError, match=r"^Trainer callback Callback has on_epoch_end\(trainer\), called with "
                       r"\(trainer, row\); on_fit_end = None, called with \(trainer\)$"):
        Trainer(net, SGD(net, 0.1), callbacks=[given])
    given.on_epoch_end, given.on_fit_end = (lambda trainer, row: None), (lambda trainer: None)
    Trainer(net, SGD(net, 0.1), callbacks=[given])


def test_a_callback_method_named_like_no_point_is_refused():
    class Late(Callback):
        def on_epoch_ends(self, trainer, row):
            pass

    net = xpcnn.Sequential([xpcnn.Flatten(), xpcnn.Dense(4, 2, rng=0)])
    with pytest.raises(TypeError, match=r"callback Late has on_epoch_ends, which no trainer calls \(on_fit_start, "):
        Trainer(net, SGD(net, 0.1), callbacks=[Late()])

    class Helped(Callback):
        def on_best(self, trainer):  # a helper of its own, named like no point: no typo
            pass

    Trainer(net, SGD(net, 0.1), callbacks=[Helped()])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's, on the way to the overflow
def test_an_update_that_overflows_at_an_epoch_s_end_is_a_divergence_with_its_step(tmp_path, data):
    train, test = data
    net = xpcnn.Sequential([xpcnn.Flatten(), xpcnn.Dense(28 * 28, 10, rng=0)])
    trainer = Trainer(net, SGD(net, 1e39), batch_size=len(train), run_dir=tmp_path, progress=False,
                      log=lambda m: None)
    with pytest.raises(TrainingDiverged, match=r"the outputs on the validation set are not finite after step 1 "
                                               r"\(epoch 1\), lr 1e\+39: .*; no checkpoint was saved before it"):
        trainer.fit(train, 2, val=test)
