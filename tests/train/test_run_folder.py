"""The run folder: the same files whether a run is started from Python or by `xpcnn train`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from xpcnn import Trainer, presets
from xpcnn.datasets import load_bundled
from xpcnn.train.run_folder import RunFolder, RunFolderError


def quiet(message):
    pass


def cli(*args, cwd, env):
    command = [sys.executable, "-m", "xpcnn", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_a_run_from_python_works_with_the_command(tmp_path):
    train, _, test = load_bundled().splits(limit=640)  # splits() records how to read them again
    trainer = Trainer.for_preset("lenet", presets.recipe("lenet").replace(epochs=2), len(train),
                                 run_dir=RunFolder(tmp_path / "run", with_plots=False), progress=False, log=quiet)
    trainer.fit(train, 1)  # the first of the recipe's two epochs, then continue from the command line
    result = trainer.finish(test)
    assert not (tmp_path / "run" / "curves.png").exists()
    folder = RunFolder(tmp_path / "run")
    summary = json.loads(folder.summary.read_text())
    assert summary["model"] == "lenet" and summary["epochs"] == 1 and summary["test_accuracy"] == result["accuracy"]
    assert summary["settings"]["optimizer"] == "adam" and summary["train_images"] == 640
    assert summary["test_confusion"] == result["confusion"].tolist() and summary["test_classes"] == result["classes"]

    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), PYTHONWARNINGS="ignore")
    env.pop("XPCNN_DATA_DIR", None)
    evaluated = cli("evaluate", str(folder.checkpoint), "--no-download", "--json", cwd=tmp_path, env=env)
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout.splitlines()[-1])
    assert report["images"] == 640 and report["accuracy"] == result["accuracy"]  # the images the run scored

    np.save(tmp_path / "digit.npy", test.images[0])
    predicted = cli("predict", str(folder.checkpoint), str(tmp_path / "digit.npy"), cwd=tmp_path, env=env)
    assert predicted.returncode == 0 and predicted.stdout.startswith(f"{tmp_path / 'digit.npy'}: "), predicted.stderr

    resumed = cli("train", "--out", "run", "--resume", "--limit", "640", "--no-progress", "--no-plots",
                  cwd=tmp_path, env=env)  # the saved settings and images; an equal flag is fine
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming run at epoch 2" in resumed.stderr and "for 2 epochs" in resumed.stderr
    assert json.loads(folder.summary.read_text())["epochs"] == 2


def test_finish_draws_the_plots(tmp_path):
    data = load_bundled()
    train, test = data.train.sample(256, seed=0), data.test.sample(100, seed=1)
    messages = []
    trainer = Trainer.for_preset("tutorial", train_size=len(train), run_dir=tmp_path, progress=False,
                                 log=messages.append)
    trainer.fit(train, 1)
    trainer.finish(test)
    drawn = ["curves.png", "layers.png", "confusion.png", "mistakes.png"]
    assert {"checkpoint.npz", "metrics.jsonl", "summary.json", *drawn} <= {path.name for path in tmp_path.iterdir()}
    assert "plots: " + ", ".join(str(tmp_path / name) for name in drawn) in messages
    assert all((tmp_path / name).read_bytes().startswith(b"\x89PNG") for name in drawn)


def test_a_test_without_mistakes_draws_none_and_leaves_no_earlier_test_s(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    test = load_bundled().test.sample(40, seed=0)
    folder = RunFolder(tmp_path)
    (tmp_path / "mistakes.png").write_bytes(b"an earlier test's")
    result = {"confusion": np.eye(10, dtype=np.int64), "accuracy": 1.0, "predictions": test.labels,
              "confidences": np.ones(40)}
    messages = []
    folder.draw_plots([], result, test, "right", messages.append)
    assert not (tmp_path / "mistakes.png").exists()
    assert messages == [f"plots: {tmp_path / 'confusion.png'} (no epoch trained: no learning curves; no test image "
                        "wrong)"]


def test_finish_before_any_epoch_draws_no_empty_learning_curves(tmp_path):
    messages = []
    trainer = Trainer.for_preset("tutorial", train_size=128, run_dir=tmp_path, progress=False, log=messages.append)
    trainer.finish(load_bundled().test.sample(50, seed=0))
    assert {path.name for path in tmp_path.iterdir()} == {"summary.json", "confusion.png", "mistakes.png"}
    assert f"plots: {tmp_path / 'confusion.png'}, {tmp_path / 'mistakes.png'} (no epoch trained: no learning " \
        "curves)" in messages


def test_a_new_run_is_not_mixed_with_another_runs_files_but_may_follow_its_own_test(tmp_path):
    """finish before fit writes a summary and plots and no checkpoint: the same trainer
    may then train there, another one may not (its files would be mixed with them)."""
    data = load_bundled()
    train, test = data.train.sample(128, seed=0), data.test.sample(50, seed=0)
    first = Trainer.for_preset("tutorial", train_size=128, run_dir=RunFolder(tmp_path, with_plots=False),
                               progress=False, log=quiet)
    first.finish(test)
    other = Trainer.for_preset("tutorial", train_size=128, run_dir=tmp_path, progress=False, log=quiet)
    with pytest.raises(RunFolderError, match=r"already holds another run's summary.json: a new run's files would be "
                       "mixed with them; choose another folder, or empty this one"):
        other.fit(train, 1)
    with pytest.raises(RunFolderError, match="already holds another run's summary.json"):
        RunFolder.open(tmp_path, resume=False)
    first.fit(train, 1)
    assert (tmp_path / "checkpoint.npz").is_file()


def test_without_a_folder_finish_only_evaluates(tmp_path):
    data = load_bundled()
    trainer = Trainer.for_preset("tutorial", train_size=128, progress=False, log=quiet)
    trainer.fit(data.train.sample(128), 1)
    result = trainer.finish(data.test.sample(50))
    assert set(result) == {"loss", "accuracy", "predictions", "confidences", "confusion", "classes", "macro"}
    assert trainer.checkpoint_path is None


def test_new_folders_started_in_the_same_second_are_distinct(tmp_path, monkeypatch):
    # The clock held still: the three are started in the same second, however loaded the machine.
    strftime, second = time.strftime, time.gmtime(86400)
    monkeypatch.setattr(time, "strftime", lambda format, when=second: strftime(format, when))
    folders = [RunFolder.new("tutorial", tmp_path / "runs") for _ in range(3)]
    assert [folder.path.name for folder in folders] == [
        "tutorial-19700102-000000", "tutorial-19700102-000000-2", "tutorial-19700102-000000-3"]
    assert all(folder.path.is_dir() for folder in folders)


def test_open_refuses_what_does_not_fit(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunFolderError, match="is a file, not a run folder"):
        RunFolder.open(tmp_path / "file", resume=False)
    with pytest.raises(RunFolderError, match="no checkpoint to resume"):
        RunFolder.open(tmp_path / "empty", resume=True)
    assert RunFolder.open(tmp_path / "new", resume=False).path.is_dir()



def test_a_failed_run_removes_only_the_empty_folders_it_made(tmp_path):
    (tmp_path / "mine").mkdir()
    RunFolder.open(tmp_path / "mine", resume=False).remove_if_empty()
    assert (tmp_path / "mine").is_dir()  # the user's, made before
    RunFolder.open(tmp_path / "a" / "b", resume=False).remove_if_empty()
    assert not (tmp_path / "a").exists()


def test_resuming_removes_what_killed_writes_left(tmp_path):
    (tmp_path / "checkpoint.npz").write_bytes(b"the saved run")
    for name in (".checkpoint.npz.k3j2.tmp", ".metrics.jsonl.x1.tmp", ".summary.json.a.tmp", ".best.npz.q.tmp",
                 ".curves.png.z.tmp", ".confusion.png.y.tmp"):
        (tmp_path / name).write_bytes(b"half a file")
    (tmp_path / "notes.tmp").write_text("the user's")
    (tmp_path / ".checkpoint.npz.dir.tmp").mkdir()  # no atomic write made it: left, and no reason to fail
    RunFolder.open(tmp_path, resume=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".checkpoint.npz.dir.tmp", "checkpoint.npz", "notes.tmp"]


def test_a_folder_the_run_could_not_write_is_refused_before_training(tmp_path):
    (tmp_path / "run" / "metrics.jsonl").mkdir(parents=True)
    with pytest.raises(RunFolderError, match=r"metrics.jsonl is not a file, and the run writes its metrics.jsonl"):
        RunFolder.open(tmp_path / "run", resume=False)
    os.mkfifo(tmp_path / "fifo-run-summary")
    (tmp_path / "other").mkdir()
    os.symlink(tmp_path / "fifo-run-summary", tmp_path / "other" / "summary.json")
    with pytest.raises(RunFolderError, match="summary.json is not a file"):
        RunFolder(tmp_path / "other").check_usable(new_run=True)
    if os.path.isdir("/proc/self"):  # Linux: a folder in which no file can be made, even by root
        with pytest.raises(RunFolderError, match="cannot write into /proc/self"):
            RunFolder.open("/proc/self", resume=False)
