"""What `xpcnn train` starts and continues (xpcnn/train/runs.py); the command's own tests
are in tests/cli/test_main.py."""

from __future__ import annotations

import pytest

from xpcnn import presets
from xpcnn.backend import BackendUnavailable
from xpcnn.presets import SettingsError
from xpcnn.train import default_preset, record, resume_run, start_run


def quiet(line: str) -> None:
    pass


def test_cuda_graphs_where_none_can_be_recorded_are_refused_before_any_data_is_read(tmp_path):
    with pytest.raises(SettingsError, match=r"cuda_graphs: .* this run is on numpy \(cpu\)"):
        start_run("tutorial", data_dir=tmp_path / "nothing here", download=False, allow_bundled=False,
                  cuda_graphs=True, log=quiet)


@pytest.mark.parametrize("options, error, message", [
    # each was found after the data was read (downloaded, where it could be)
    ({"recipe": "fast"}, TypeError, r"^recipe must be a Recipe"),
    ({"out": "runs/x"}, TypeError, r"^Trainer.for_preset\(\) got an unexpected keyword argument 'out'"),
    # the command line refused this before reading, in words of its own ("--width scales ..."); Python after
    ({"width": 2}, SettingsError, r"^width: applies to resnet20 and cifar, not tutorial$"),
    ({"width": 100}, ValueError, r"^width must be in \[0.015625, 16.0\], got 100$"),
    # compared with the data's size first: "'<' not supported between instances of 'int' and 'str'"
    ({"limit": "50"}, TypeError, r"^limit must be an integer, got '50'$"),
    ({"limit": 0}, ValueError, r"^limit must be >= 1, got 0$"),
    ({"val_split": "0.1"}, TypeError, r"^val_split must be a finite real number, got '0.1'$"),  # "__round__"
    ({"val_split": 1.5}, ValueError, r"^val_split must be in \[0.0, 1.0\), got 1.5$"),  # "leaves none to train on"
    # refused at the fit's start, by the callback, where only the command line refused them before reading
    ({"early_stopping": 3}, SettingsError, r"^early_stopping: watches the validation loss: it needs a validation"),
    ({"keep_best": True}, SettingsError, r"^keep_best: keeps the epoch of the lowest validation loss: it needs"),
    # where the network would run: the command line refused these before reading, Python after
    ({"backend_name": "jax"}, ValueError, r"^unknown backend 'jax'"),
    ({"device": "cuda:7"}, BackendUnavailable, r"^backend numpy on device cuda:7: "),
    ({"dtype": "float16"}, ValueError, r"^unsupported dtype 'float16'"),
    # the Trainer's own options: refused after the data was read
    ({"workers": 0}, ValueError, r"^workers must be >= 1, got 0$"),
    ({"progress": "no"}, TypeError, r"^Trainer progress must be True or False, got 'no'$"),
    ({"checkpoint_every": -1}, ValueError, r"checkpoint_every must be >= 1"),
])
def test_arguments_for_the_trainer_are_checked_before_any_data_is_read(tmp_path, options, error, message):
    with pytest.raises(error, match=message):
        start_run("tutorial", data_dir=tmp_path / "nothing here", download=False, allow_bundled=False, log=quiet,
                  **options)


@pytest.mark.parametrize("model, folder, message", [
    ("cifar", {"image_size": 6}, r"^image_size: preset cifar takes images of at least 8x8 pixels, not 6x6$"),
    ("resnet20", {"image_size": 4, "test_split": 0.3}, r"^test_split: .*given holds train/ and test/, which split"),
    # read, it left no picture to train on: "train_size must be >= 1, got 0"
    ("compact", {"test_split": 1.0}, r"^test_split: 1.0 holds every picture out for testing, leaving none to train"),
])
def test_what_a_folder_cannot_give_is_refused_before_it_is_read(tmp_path, model, folder, message):
    for part in ("train", "test"):
        (tmp_path / "given" / part).mkdir(parents=True)  # no pictures: reading it would fail otherwise
    recipe = presets.recipe(model).replace(augment=1)
    with pytest.raises(SettingsError, match=message):
        start_run(model, recipe, dataset="images", data_dir=tmp_path / "given", folder_options=folder, log=quiet)


@pytest.mark.parametrize("recipe, message", [
    (None, r"^augment: shifts of up to 4 pixels \(resnet20's recipe; --augment N sets fewer\) would move 4x4 images "
           r"out of sight$"),
    (presets.recipe("resnet20").replace(augment=6), r"^augment: shifts of up to 6 pixels would move 4x4 images out "),
])
def test_shifts_the_images_cannot_hold_are_refused_before_they_are_read(tmp_path, recipe, message):
    """Only the command line refused them before reading, in a message of its own; Python at the fit."""
    with pytest.raises(SettingsError, match=message):
        start_run("resnet20", recipe, dataset="images", data_dir=tmp_path / "nowhere", folder_options={"image_size": 4},
                  log=quiet)


def test_a_complete_run_resumed_counts_its_training_images_again(tmp_path):
    """Its summary is written again, with the images it trained on, not none."""
    trainer, data = start_run("tutorial", download=False, limit=200, run_dir=tmp_path / "run", progress=False,
                              log=quiet)
    trainer.fit(data[0], trainer.epochs)
    again, _ = resume_run(tmp_path / "run" / "checkpoint.npz", log=quiet, progress=False)
    assert record.complete(again) and again.train_images == len(data[0]) == 200


def test_the_default_preset_is_tutorial_for_digits_and_compact_for_any_other_data():
    """What `xpcnn train` picks without --model, which only the command knew."""
    assert [default_preset(name) for name in ("mnist", "fashion-mnist", "cifar10", "cifar100", "images")] == [
        "tutorial", "tutorial", "compact", "compact", "compact"]


def test_a_folders_test_split_is_drawn_from_the_runs_seed_as_the_command_draws_it(tmp_path):
    pytest.importorskip("PIL")
    from xpcnn.datasets import load_dataset

    from ..helpers import colour_folder

    root = colour_folder(tmp_path / "pictures", per_class=10)
    _, (train, _, test) = start_run("compact", dataset="images", data_dir=root, seed=3, log=quiet, progress=False)
    expected = load_dataset("images", root, split_seed=3, log=quiet).test
    assert test.digest() == expected.digest() != load_dataset("images", root, log=quiet).test.digest()
    _, (_, _, given) = start_run("compact", dataset="images", data_dir=root, seed=3, folder_options={"split_seed": 0},
                                 log=quiet, progress=False)
    assert given.digest() != test.digest()
