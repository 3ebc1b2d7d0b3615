"""The xpcnn command, run as a subprocess: exit codes, outputs, an end-to-end run."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from xpcnn import backend
from xpcnn.backend import to_numpy
from xpcnn.datasets import FASHION_MNIST, MNIST, load_bundled, normalize
from xpcnn.diagnostics import machine
from xpcnn.io.checkpoint import load_checkpoint

from ..helpers import SHARED_MNIST, colour_folder


def env_without_data(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), PYTHONWARNINGS="ignore")
    env.pop("XPCNN_DATA_DIR", None)
    return env


def xpcnn(*args: str, env: dict[str, str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xpcnn", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One short training run on the bundled subset, shared by the tests below."""
    tmp = tmp_path_factory.mktemp("cli")
    env = env_without_data(tmp)
    result = xpcnn("train", "--no-download", "--limit", "1500", "--epochs", "1", "--out", "run", "--no-progress",
                   "--val-split", "0.1", "--early-stopping", "2", "--keep-best", env=env, cwd=tmp)
    return tmp, env, result


def test_train_end_to_end(run):
    tmp, env, result = run
    assert result.returncode == 0, result.stderr
    assert "using the bundled MNIST subset" in result.stderr and "epoch 1/1" in result.stderr  # progress
    assert result.stdout.startswith("test accuracy")  # the result
    files = {p.name for p in (tmp / "run").iterdir()}
    assert {"checkpoint.npz", "metrics.jsonl", "summary.json"} <= files
    summary = json.loads((tmp / "run" / "summary.json").read_text())
    assert summary["model"] == "tutorial" and summary["train_images"] == 1350 and summary["test_accuracy"] > 0.5
    assert summary["fast_paths"] == machine.fast_paths("numpy")  # batch norm's last bits depend on them
    assert summary["settings"]["early_stopping"] == 2 and summary["stopped"] is None
    assert summary["settings"]["keep_best"] is True and (tmp / "run" / "best.npz").is_file()
    row = json.loads((tmp / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert {"train_loss", "val_accuracy"} <= set(row)
    if importlib.util.find_spec("matplotlib") is not None:  # the test extra has it: CI draws the plots
        assert "plots: " in result.stderr and {"curves.png", "confusion.png"} <= files
    else:
        assert "plots skipped: matplotlib is not installed" in result.stderr


def test_evaluate(run):
    tmp, env, _ = run
    result = xpcnn("evaluate", "run/checkpoint.npz", "--no-download", "--json", env=env, cwd=tmp)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["images"] == 1500 and 0.5 < report["accuracy"] <= 1.0  # the test images the --limit run scored
    assert "1,500 of its 2,000 test images, drawn as for a run limited to 1,500 images (--full-test-set: all)" \
        in report["data"]
    summary = json.loads((tmp / "run" / "summary.json").read_text())
    assert report["accuracy"] == summary["test_accuracy"]  # what train said
    every = json.loads(xpcnn("evaluate", "run", "--full-test-set", "--json", env=env, cwd=tmp).stdout)  # the folder
    assert every["images"] == 2000
    text = xpcnn("evaluate", "run", env=env, cwd=tmp).stdout.splitlines()
    assert text[0].startswith("test accuracy") and text[1].split() == ["class", "precision", "recall", "f1", "support"]
    assert len(text) == 2 + 10 + 1 and text[-1].startswith("mean")


def test_predict_npy_and_png(run):
    tmp, env, _ = run
    test = load_bundled().test
    np.save(tmp / "digit.npy", test.images[0])
    result = xpcnn("predict", "run/checkpoint.npz", "digit.npy", "--top", "2", env=env, cwd=tmp)
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith("digit.npy: ") and line.count("%") == 2
    (tmp / "blank.npy").write_bytes(b"not an array")
    result = xpcnn("predict", "run", "digit.npy", "blank.npy", "--top", "3", "--json", env=env, cwd=tmp)
    assert result.returncode == 1  # one image could not be read
    good, bad = (json.loads(line) for line in result.stdout.splitlines())
    assert good["image"] == "digit.npy" and len(good["classes"]) == 3 and set(good["classes"][0]) == {
        "class", "probability"}
    assert bad["image"] == "blank.npy" and "not a readable .npy image" in bad["error"]


@pytest.fixture(scope="module")
def good_model(tmp_path_factory):
    """The tutorial preset trained for 3 epochs on the bundled subset (about 95 %)."""
    tmp = tmp_path_factory.mktemp("good")
    result = xpcnn("train", "--epochs", "3", "--out", "good", "--no-progress", "--no-plots",
                   env=env_without_data(tmp), cwd=tmp)
    assert result.returncode == 0, result.stderr
    return tmp / "good" / "checkpoint.npz"


def pictures_of(digits: np.ndarray, folder: Path, kind: str) -> list[str]:
    """MNIST digits as people give them: dark ink on light paper, black ink on a transparent
    background, or somewhere in a wide, unevenly lit, grainy grey photo, 4x MNIST's size."""
    from PIL import Image

    paths = []
    for number, digit in enumerate(digits):
        big = np.asarray(Image.fromarray(digit).resize((112, 112), Image.Resampling.BICUBIC))
        if kind == "paper":
            picture = Image.fromarray(255 - big).convert("RGB")
        elif kind == "transparent":
            picture = Image.fromarray(np.dstack([np.zeros((112, 112, 3), np.uint8), big]), "RGBA")
        else:  # a wide photo: 250 x 120 grey paper lit from one side, grain, the digit off centre
            canvas = np.full((120, 250), 210.0) + np.linspace(-30, 30, 250)[None, :]
            canvas[4:116, 20:132] -= big.astype(float) * 190 / 255
            canvas += np.random.default_rng(number).normal(0, 6, canvas.shape)
            picture = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
        paths.append(str(folder / f"{kind}{number}.png"))
        picture.save(paths[-1])
    return paths


@pytest.mark.parametrize("kind", ["paper", "transparent", "wide"])
def test_predict_reads_pictures_as_people_make_them(good_model, tmp_path, kind):
    pytest.importorskip("PIL")
    test = load_bundled().test
    paths = pictures_of(test.images[:10, 0], tmp_path, kind)
    result = xpcnn("predict", str(good_model), *paths, env=env_without_data(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(": ")[0] for line in lines] == paths  # one line per image, in order
    right = sum(line.split(": ")[1].startswith(f"{label} (") for line, label in zip(lines, test.labels[:10]))
    assert right >= 9, result.stdout


def test_predict_reports_a_bad_image_and_still_reads_the_others(good_model, tmp_path):
    np.save(tmp_path / "digit.npy", load_bundled().test.images[0])
    (tmp_path / "notes.png").write_text("not a picture")
    os.mkfifo(tmp_path / "pipe.png")
    result = xpcnn("predict", str(good_model), "notes.png", "digit.npy", "pipe.png", "missing.png",
                   env=env_without_data(tmp_path), cwd=tmp_path, timeout=60)
    assert result.returncode == 1
    assert result.stdout.startswith("digit.npy: ") and result.stdout.count("\n") == 1
    errors = result.stderr.splitlines()
    assert len(errors) == 3 and "notes.png: not a readable image" in errors[0]
    assert "pipe.png: not a regular file" in errors[1] and "missing.png: cannot read" in errors[2]


def test_explain_draws_each_image_and_says_where(good_model, tmp_path):
    pytest.importorskip("matplotlib")
    env = env_without_data(tmp_path)
    test = load_bundled().test
    np.save(tmp_path / "digit.npy", test.images[0])
    result = xpcnn("explain", str(good_model), "digit.npy", "missing.png", "--out", "seen", env=env, cwd=tmp_path)
    assert result.returncode == 1  # one image could not be read; the other is drawn
    filters, drawn = result.stdout.splitlines()
    assert filters == "filters: seen/filters.png" and drawn.startswith(f"digit.npy: {test.labels[0]} (")
    assert drawn.endswith(" -> seen/digit.png") and drawn.count("%") == 3
    assert result.stderr.strip() == "xpcnn explain: error: missing.png: cannot read: No such file or directory"
    assert (tmp_path / "seen" / "digit.png").read_bytes()[:4] == b"\x89PNG"
    result = xpcnn("explain", str(good_model), "digit.npy", "--class", "3", "--at", "0,2", "--top", "1", "--json",
                   env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout)
    assert line["target"] == "3" and len(line["classes"]) == 1 and line["picture"] == "explained/digit.png"
    assert line["filters"] == "explained/filters.png"


@pytest.mark.parametrize("flags, message", [
    (["--class", "cat"], "--class: 'cat' is not one of the model's classes (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)"),
    (["--at", "4"], "--at: feature maps at 4: the layer's output is (128,) for an image, not a feature map (C, H, W)"),
    (["--at", "3,,7"], "argument --at: expected layer positions such as 3,7 or 3.body.2, got '3,,7'"),
])
def test_explain_settings_that_do_not_fit_are_usage_errors(good_model, tmp_path, flags, message):
    pytest.importorskip("matplotlib")
    np.save(tmp_path / "digit.npy", load_bundled().test.images[0])
    result = xpcnn("explain", str(good_model), "digit.npy", *flags, env=env_without_data(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.splitlines()[-1] == f"xpcnn explain: error: {message}"
    assert not (tmp_path / "explained").exists()


def test_explain_with_no_image_it_can_read_writes_nothing(good_model, tmp_path):
    pytest.importorskip("matplotlib")
    (tmp_path / "empty.png").write_bytes(b"")
    result = xpcnn("explain", str(good_model), "missing.png", "empty.png", env=env_without_data(tmp_path),
                   cwd=tmp_path)
    assert result.returncode == 1 and not result.stdout  # no "filters: explained/filters.png"
    assert result.stderr.splitlines() == ["xpcnn explain: error: missing.png: cannot read: No such file or directory",
                                          "xpcnn explain: error: empty.png: an empty file (0 bytes)"]
    assert not (tmp_path / "explained").exists()


@pytest.mark.parametrize("out, message", [
    ("digit.npy", "--out: digit.npy: the pictures go into a folder, and this is a file"),
    ("digit.npy/seen", "--out: cannot write pictures into digit.npy/seen: digit.npy is a file, not a folder"),
])
def test_explain_an_out_that_cannot_be_a_folder_is_a_usage_error(good_model, tmp_path, out, message):
    pytest.importorskip("matplotlib")
    np.save(tmp_path / "digit.npy", load_bundled().test.images[0])
    result = xpcnn("explain", str(good_model), "digit.npy", "--out", out, env=env_without_data(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.splitlines()[-1] == f"xpcnn explain: error: {message}"
    assert not result.stdout and {path.name for path in tmp_path.iterdir()} <= {"cache", "digit.npy"}


@pytest.mark.parametrize("fraction, left", [("0.999", "train"), ("0.0001", "validate")])
def test_a_split_that_leaves_nothing_to_train_or_validate_on_is_refused(tmp_path, fraction, left):
    result = xpcnn("train", "--val-split", fraction, "--limit", "500", "--no-download", env=env_without_data(tmp_path),
                   cwd=tmp_path)
    assert result.returncode == 2 and f"xpcnn train: error: --val-split: {fraction} of 500 images leaves none to " \
        f"{left} on" in result.stderr, result.stderr
    assert not (tmp_path / "runs").exists()


def test_usage_errors_exit_2(tmp_path):
    env = env_without_data(tmp_path)
    for args in (["train", "--epochs", "0"], ["train", "--model", "resnet"], ["frobnicate"], [],
                 ["train", "--optimizer", "adam", "--momentum", "0.9", "--no-download"]):
        result = xpcnn(*args, env=env, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert "usage:" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["train", "--lr", "abc"], "argument --lr: invalid float value: 'abc'"),
    (["train", "--lr", "inf"], "argument --lr: must be > 0 and finite, got inf"),
    (["train", "--augment", "1001"], "argument --augment: must be in [0, 1000], got 1001"),
    (["train", "--augment", "28"], "--augment: shifts of up to 28 pixels would move 28x28 images out of sight"),
    (["train", "--seed", "-1"], "argument --seed: must be in [0, 9223372036854775807], got -1"),
    (["train", "--seed", "99999999999999999999999"], "argument --seed: must be in [0,"),
    (["train", "--batch-size", "1000000001"], "argument --batch-size: must be in [1, 1,000,000,000]"),
    (["train", "--epochs", "1000001"], "argument --epochs: must be in [1, 1,000,000]"),
    (["train", "--out", "notes.txt/sub"], "--out: cannot make notes.txt/sub: Not a directory"),
    (["parity", "--seed", "-1"], "argument --seed: must be in [0,"),
    (["train", "--resume"], "--out: resuming needs the run folder to continue"),
    (["train", "--out", "notes.txt"], "--out: notes.txt is a file, not a run folder"),
    (["train", "--optimizer", "adam", "--momentum", "0.9"], "--momentum: applies to the sgd optimizer only, not adam"),
    (["parity", "--model", "nosuch"], "--model 'nosuch' is neither a preset"),
    (["parity", "--model", "lenet", "--width", "0.5"], "--width: applies to resnet20 and cifar, not lenet"),
    (["parity", "--optimizer", "adam"], "--optimizer: it is the optimizer of the training steps: give steps as well "
                                        "(--steps K)"),
    (["train", "--out", ""], "argument --out: expected a path, got an empty string"),
    (["train", "--data-dir", ""], "argument --data-dir: expected a path, got an empty string"),
    (["train", "--early-stopping", "3"], "--early-stopping: watches the validation loss: it needs a validation split "
                                         "(--val-split)"),
    (["train", "--early-stopping", "0"], "argument --early-stopping: must be in [1,"),
    (["train", "--bogus"], "xpcnn train: error: unrecognized arguments: --bogus"),
    (["train", "--keep-best"], "--keep-best: keeps the epoch of the lowest validation loss: it needs a validation "
                               "split (--val-split)"),
])
def test_usage_errors_name_the_flag_under_the_commands_usage(tmp_path, args, message):
    (tmp_path / "notes.txt").write_text("not a folder")
    result = xpcnn(*args, "--no-download" if args[0] == "train" else "--json", env=env_without_data(tmp_path),
                   cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert result.stderr.startswith(f"usage: xpcnn {args[0]} ")
    assert not (tmp_path / "runs").exists()  # refused before anything was made


def test_a_validation_split_of_a_limited_run_is_refused_by_the_library_s_count(tmp_path):
    """Not by a rule of the command's own, which refused every --limit below 10 with
    --val-split (9 images split in half are fine) and let a Python user do otherwise."""
    env = env_without_data(tmp_path)
    refused = xpcnn("train", "--limit", "5", "--val-split", "0.1", "--no-download", env=env, cwd=tmp_path)
    assert refused.returncode == 2 and "xpcnn train: error: --val-split: 0.1 of 5 images leaves none to validate " \
        "on" in refused.stderr, refused.stderr
    assert not (tmp_path / "runs").exists()
    taken = xpcnn("train", "--limit", "9", "--val-split", "0.5", "--epochs", "1", "--no-download", "--no-progress",
                  "--no-plots", "--out", "run", env=env, cwd=tmp_path)
    assert taken.returncode == 0 and "val loss" in taken.stderr, taken.stderr


@pytest.mark.parametrize("args, message", [
    (["train", "--data-dir", "typo"], "data folder typo does not exist"),
    (["train", "--dataset", "mnist", "--no-download"], "mnist: train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                                                       "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte not found"),
    (["train", "--dataset", "fashion-mnist", "--no-download"], "fashion-mnist: train-images-idx3-ubyte"),
])
def test_data_that_was_asked_for_is_never_replaced_by_the_subset(tmp_path, args, message):
    result = xpcnn(*args, env=env_without_data(tmp_path), cwd=tmp_path)
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert "bundled" not in result.stderr
    assert not (tmp_path / "runs").exists()  # the run never started: no folder is left behind


def test_a_run_that_never_started_removes_the_folders_it_made_and_only_those(tmp_path):
    (tmp_path / "kept").mkdir()
    for out in ("deep/er/run", "kept/run"):
        result = xpcnn("train", "--data-dir", "typo", "--out", out, env=env_without_data(tmp_path), cwd=tmp_path)
        assert result.returncode == 1 and "data folder typo does not exist" in result.stderr, result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["kept"] and not any((tmp_path / "kept").iterdir())


@pytest.mark.parametrize("args, message", [
    (["--backend", "cupy", "--data-dir", "typo"], "backend cupy:"),  # the backend first, before any data
    (["--device", "cuda:7", "--data-dir", "typo"], "backend numpy on device cuda:7:"),
    (["--warmup", "5", "--schedule", "constant"], "--warmup: applies to the cosine schedule only, not constant"),
    (["--momentum", "1.5"], "argument --momentum: must be in [0, 1), got 1.5"),
    (["--weight-decay", "-1"], "argument --weight-decay: must be >= 0 and finite, got -1.0"),
])
def test_flags_are_checked_before_any_work(tmp_path, args, message):
    result = xpcnn("train", *args, env=env_without_data(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "data:" not in result.stderr


def test_debug_is_accepted_after_the_command(tmp_path):
    result = xpcnn("evaluate", "missing.npz", "--debug", env=env_without_data(tmp_path), cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" in result.stderr


def test_evaluate_uses_the_dataset_the_model_was_trained_on(run, tmp_path):
    tmp, env, _ = run
    with np.load(tmp / "run" / "checkpoint.npz") as archive:
        arrays = {key: archive[key] for key in archive.files}
    meta = json.loads(arrays["__meta__"].tobytes())
    meta["trainer"]["info"]["data"].update(name="fashion-mnist", classes=list(FASHION_MNIST.classes))
    meta["trainer"]["info"]["settings"]["data"] = None
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(tmp_path / "fashion.npz", **arrays)
    result = xpcnn("evaluate", str(tmp_path / "fashion.npz"), "--no-download", env=env, cwd=tmp)
    assert result.returncode == 1 and "fashion-mnist: t10k-images-idx3-ubyte" in result.stderr, result.stderr
    typo = xpcnn("evaluate", "run/checkpoint.npz", "--data-dir", "typo", env=env, cwd=tmp)
    assert typo.returncode == 1 and "data folder typo does not exist" in typo.stderr
    other = xpcnn("evaluate", "run", "--dataset", "fashion-mnist", env=env, cwd=tmp)
    assert other.returncode == 1 and "but fashion-mnist has 10 (T-shirt/top, Trouser" in other.stderr, other.stderr
    folder = xpcnn("evaluate", "run", "--dataset", "images", env=env, cwd=tmp)  # which folder: a usage error
    assert folder.returncode == 2 and folder.stderr.startswith("usage: xpcnn evaluate"), folder.stderr
    assert folder.stderr.endswith("error: --data-dir: a folder of pictures (--dataset images) needs the folder\n")


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="full MNIST not in ../shared/data/mnist")
def test_evaluate_needs_only_the_test_files(run, tmp_path):
    tmp, env, _ = run
    (tmp_path / "data").mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(SHARED_MNIST / name, tmp_path / "data")
    result = xpcnn("evaluate", "run/checkpoint.npz", "--data-dir", str(tmp_path / "data"), "--json", env=env, cwd=tmp)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["images"] == 10_000


def test_evaluate_json_is_json_and_nothing_else(run):
    tmp, env, _ = run
    result = xpcnn("evaluate", "run/checkpoint.npz", "--json", env=env, cwd=tmp)
    report = json.loads(result.stdout)
    assert result.returncode == 0 and "bundled MNIST subset" in report["data"]
    assert set(report) == {"accuracy", "loss", "images", "data", "classes", "macro", "confusion"}
    assert [row["class"] for row in report["classes"]] == [str(digit) for digit in range(10)]
    assert sum(row["support"] for row in report["classes"]) == report["images"]
    assert [sum(row) for row in report["confusion"]] == [row["support"] for row in report["classes"]]
    correct = sum(report["confusion"][k][k] for k in range(10))
    assert correct == round(report["accuracy"] * report["images"])


def test_failures_are_one_line_exit_1(tmp_path):
    env = env_without_data(tmp_path)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    for command in ("evaluate {}", "predict {} x.npy", "parity --model {}"):  # the file's fault, not a flag's
        result = xpcnn(*command.format("junk.npz").split(), env=env, cwd=tmp_path)
        assert result.returncode == 1, (command, result.stderr)
        assert result.stderr.startswith(f"xpcnn {command.split()[0]}: error: junk.npz: not a checkpoint archive")
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    result = xpcnn("--debug", "evaluate", "junk.npz", env=env, cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" in result.stderr


def test_a_file_name_that_is_no_utf8_is_printed_escaped(run):
    tmp, env, _ = run
    name = os.fsdecode(b"digit-\xff.npy")
    np.save(tmp / name, np.zeros((28, 28), np.uint8))
    result = subprocess.run([sys.executable, "-m", "xpcnn", "predict", "run", name], env={**env, "PYTHONIOENCODING":
                            "utf-8:strict"}, cwd=tmp, capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"digit-\\udcff.npy: ")


def test_a_file_name_with_a_line_break_stays_on_its_one_line(run):
    tmp, env, _ = run
    np.save(tmp / "digit\nxpcnn predict: fine.npy", np.zeros((28, 28), np.uint8))
    (tmp / "notes\nxpcnn predict: fine.png").write_text("not a picture")
    result = xpcnn("predict", "run", "digit\nxpcnn predict: fine.npy", "notes\nxpcnn predict: fine.png", env=env,
                   cwd=tmp)
    assert result.returncode == 1
    assert result.stdout.startswith("digit\\nxpcnn predict: fine.npy: ") and result.stdout.count("\n") == 1
    assert result.stderr.startswith("xpcnn predict: error: notes\\nxpcnn predict: fine.png: not a readable image")
    assert result.stderr.count("\n") == 1
    pictures = colour_folder(tmp / "pictures", per_class=2)
    (pictures / "red" / "notes\nfine.png").write_text("not a picture")
    result = xpcnn("train", "--dataset", "images", "--data-dir", str(pictures), "--out", "never", "--no-progress",
                   env=env, cwd=tmp)
    assert result.returncode == 1 and "red/notes\\nfine.png: not a picture" in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def test_an_error_without_words_is_still_named(monkeypatch):
    cli = importlib.import_module("xpcnn.cli.main")  # the module, not the function xpcnn.cli.main

    def out_of_memory(args):
        raise MemoryError()

    monkeypatch.setitem(cli.COMMANDS, "info", out_of_memory)
    said = []
    assert cli._main(cli.parse(cli.build_parser(), ["info"]), said.append) == 1
    assert said == ["xpcnn info: error: out of memory"]


def test_refuses_to_overwrite_a_run_and_resumes(run):
    tmp, env, _ = run
    result = xpcnn("train", "--out", "run", "--no-download", env=env, cwd=tmp)
    assert result.returncode == 2 and "--resume" in result.stderr
    result = xpcnn("train", "--out", "run", "--resume", "--epochs", "2", "--no-download", "--limit", "1500",
                   "--val-split", "0.1", "--no-progress", "--no-plots", env=env, cwd=tmp)
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stderr and "epoch 2/2" in result.stderr


def ctrl_c_after_the_first_checkpoint(args: list[str], run: Path, env: dict[str, str], cwd: Path) -> str:
    """Run `xpcnn *args`, press Ctrl-C once `run` holds a checkpoint; what it said (stderr),
    after checking it exited 130."""
    process = subprocess.Popen([sys.executable, "-m", "xpcnn", *args], env=env, cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "checkpoint.npz").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    return stderr


def test_the_continue_command_quotes_the_folder(tmp_path):
    env = env_without_data(tmp_path)
    stderr = ctrl_c_after_the_first_checkpoint(
        ["train", "--no-download", "--limit", "3000", "--epochs", "2", "--out", "my run", "--checkpoint-every", "5",
         "--no-progress", "--no-plots"], tmp_path / "my run", env, tmp_path)
    command = stderr.split("continue with: ")[1].strip()
    assert command == "xpcnn train --out 'my run' --resume --checkpoint-every 5 --no-progress --no-plots"
    assert xpcnn(*shlex.split(command)[1:], "--no-progress", env=env, cwd=tmp_path).returncode == 0
    assert not list((tmp_path / "my run").glob("*.png"))  # the resumed run draws none either


def test_ctrl_c_saves_and_resume_finishes(tmp_path):
    env = env_without_data(tmp_path)
    stdout = ctrl_c_after_the_first_checkpoint(
        ["train", "--no-download", "--limit", "3000", "--epochs", "2", "--out", "run", "--checkpoint-every", "5",
         "--no-progress", "--no-plots"], tmp_path / "run", env, tmp_path)
    assert "checkpoint saved" in stdout and "--resume" in stdout
    steps = load_checkpoint(tmp_path / "run" / "checkpoint.npz").optimizer["steps"]
    assert 0 < steps < 2 * 47
    result = xpcnn("train", "--out", "run", "--resume", "--no-download", "--limit", "3000", "--no-progress",
                   "--no-plots", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert load_checkpoint(tmp_path / "run" / "checkpoint.npz").optimizer["steps"] == 2 * 47


def test_info_lists_backends(tmp_path):
    result = xpcnn("info", env=env_without_data(tmp_path), cwd=tmp_path)
    assert result.returncode == 0
    assert "backend numpy: usable" in result.stdout and "backend cupy:" in result.stdout
    assert "OPENBLAS_CORETYPE=" in result.stdout


# -- SIGKILL during training, then resume ---------------------------------------------------


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "xpcnn", *args]


def kill_train_args(out: Path) -> list[str]:
    return ["train", "--no-download", "--limit", "1280", "--epochs", "2", "--out", str(out), "--no-progress",
            "--no-plots", "--checkpoint-every", "1", "--model", "lenet", "--batch-size", "128", "--augment", "1"]


KILL_STEPS = 2 * 1280 // 128


def saved_steps(run: Path) -> int:
    try:
        return load_checkpoint(run / "checkpoint.npz").optimizer["steps"]
    except FileNotFoundError:
        return 0


def check_run_folder(run: Path) -> None:
    """The checkpoint loads, and the metrics file is its history or one epoch behind."""
    if not (run / "checkpoint.npz").exists():
        return
    history = load_checkpoint(run / "checkpoint.npz").trainer["history"]
    metrics = run / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    assert rows == history[: len(rows)] and len(rows) >= len(history) - 1


def test_sigkill_during_training_and_resume_equals_an_uninterrupted_run(tmp_path):
    """Kill a real run at random moments (after a random number of steps, plus a random
    fraction of a step: inside steps and inside checkpoint writes), resume each time."""
    env = env_without_data(tmp_path)
    reference = tmp_path / "reference"
    subprocess.run(cli_command(*kill_train_args(reference)), env=env, check=True, capture_output=True, timeout=600)
    run = tmp_path / "run"
    rng = random.Random(0)
    targets = sorted(rng.sample(range(1, KILL_STEPS), 6))
    for target in targets:
        resume = ["--resume"] if (run / "checkpoint.npz").exists() else []
        process = subprocess.Popen(cli_command(*kill_train_args(run), *resume), env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while saved_steps(run) < target and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))
        process.send_signal(signal.SIGKILL)
        process.wait()
        check_run_folder(run)
    finish = subprocess.run(cli_command(*kill_train_args(run), "--resume"), env=env, capture_output=True, text=True,
                            timeout=600)
    assert finish.returncode == 0, finish.stderr[-2000:]
    check_run_folder(run)
    final, expected = load_checkpoint(run / "checkpoint.npz"), load_checkpoint(reference / "checkpoint.npz")
    for name, value in expected.model.params.items():
        np.testing.assert_array_equal(final.model.params[name], value, err_msg=name)
    for name, value in expected.model.buffers.items():
        np.testing.assert_array_equal(final.model.buffers[name], value, err_msg=name)
    assert final.optimizer["steps"] == expected.optimizer["steps"] == KILL_STEPS
    print(f"{len(targets)} SIGKILLs after steps {targets}, resumed to identical weights")


# -- resume: every setting and the same images come from the checkpoint ---------------------------


def final_weights(run: Path) -> dict[str, np.ndarray]:
    return {name: to_numpy(value) for name, value in load_checkpoint(run / "checkpoint.npz").model.params.items()}


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="full MNIST not in ../shared/data/mnist")
def test_the_printed_continue_command_reproduces_an_uninterrupted_run(tmp_path):
    env = env_without_data(tmp_path)
    flags = ["--model", "lenet", "--data-dir", str(SHARED_MNIST), "--limit", "640", "--seed", "3", "--augment", "1",
             "--epochs", "2", "--val-split", "0.1", "--no-progress", "--no-plots"]
    assert xpcnn("train", *flags, "--out", "whole", env=env, cwd=tmp_path).returncode == 0
    stdout = ctrl_c_after_the_first_checkpoint(["train", *flags, "--out", "cut", "--checkpoint-every", "3"],
                                               tmp_path / "cut", env, tmp_path)
    steps = load_checkpoint(tmp_path / "cut" / "checkpoint.npz").optimizer["steps"]
    assert 0 < steps < 2 * 9 and steps != 9  # interrupted inside an epoch (9 batches of 64 per epoch)
    command = stdout.split("continue with: ")[1].strip()
    assert command == "xpcnn train --out cut --resume --checkpoint-every 3 --no-progress --no-plots"
    resumed = xpcnn(*shlex.split(command)[1:], "--no-progress", env=dict(env, XPCNN_DATA_DIR=str(tmp_path)),
                    cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"data: full mnist from {SHARED_MNIST.resolve()}" in resumed.stderr
    whole, cut = final_weights(tmp_path / "whole"), final_weights(tmp_path / "cut")
    for name, value in whole.items():
        np.testing.assert_array_equal(cut[name], value, err_msg=name)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """A finished one-epoch run on 320 bundled images."""
    tmp = tmp_path_factory.mktemp("short")
    env = env_without_data(tmp)
    result = xpcnn("train", "--no-download", "--limit", "320", "--epochs", "1", "--out", "run", "--no-progress",
                   "--no-plots", env=env, cwd=tmp)
    assert result.returncode == 0, result.stderr
    return tmp, env


@pytest.mark.parametrize("flags, message", [
    (["--lr", "0.5"], "--lr: 0.5 differs from the run's saved 0.01"),
    (["--model", "lenet"], "--model: lenet differs from the run's saved tutorial"),
    (["--limit", "400"], "--limit: 400 differs from the run's saved 320"),
    (["--seed", "1"], "--seed: 1 differs from the run's saved 0"),
    (["--dtype", "float64"], "--dtype: float64 differs from the run's saved float32"),
    (["--batch-size", "32"], "--batch-size: 32 differs from the run's saved 64"),
    (["--data-dir", "elsewhere"], "--data-dir: elsewhere differs from the run's saved (the bundled subset)"),
    (["--epochs", "0"], "--epochs: must be in [1, 1,000,000], got 0"),
    (["--early-stopping", "2"], "--early-stopping: 2 differs from the run, which had none"),
    (["--image-size", "16"], "--image-size: 16 differs from the run, which had none (it applies to --dataset images "
                             "only; this run read mnist)"),
    (["--digits"], "--digits: the run began without it (it applies to --dataset images only; this run read mnist); "
                   "resume without it, or start a new run"),
    (["--keep-best"], "--keep-best: the run began without it; resume without it, or start a new run"),
    (["--flip"], "--flip: the run began without it; resume without it, or start a new run"),
])
def test_resume_refuses_flags_that_change_the_run(short_run, flags, message):
    tmp, env = short_run
    result = xpcnn("train", "--out", "run", "--resume", *flags, env=env, cwd=tmp)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_resume_accepts_equal_flags_and_another_backend(short_run):
    tmp, env = short_run
    result = xpcnn("train", "--out", "run", "--resume", "--lr", "0.01", "--model", "seed", "--limit", "320",
                   "--backend", "array_api_strict", "--no-progress", "--no-plots", env=env, cwd=tmp)
    assert result.returncode == 0, result.stderr
    assert "is complete (1 epoch): evaluating it again on array_api_strict" in result.stderr


def test_extending_a_finished_run_replans_the_schedule(tmp_path):
    env = env_without_data(tmp_path)
    first = xpcnn("train", "--no-download", "--limit", "320", "--epochs", "1", "--out", "run", "--no-progress",
                  "--no-plots", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    more = xpcnn("train", "--out", "run", "--resume", "--epochs", "3", "--no-progress", "--no-plots", env=env,
                 cwd=tmp_path)
    assert more.returncode == 0, more.stderr
    assert "extending the run from 1 to 3 epochs: the cosine schedule now spans 15 steps" in more.stderr
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert rows[1]["lr"] > 1e-3 and rows[2]["train_loss"] < rows[0]["train_loss"]  # learning again, not at lr 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["epochs"] == 3 and summary["settings"]["epochs"] == 3
    shorter = xpcnn("train", "--out", "run", "--resume", "--epochs", "2", env=env, cwd=tmp_path)
    assert shorter.returncode == 2 and "a run can be extended, not shortened" in shorter.stderr
    assert "data:" not in shorter.stderr  # refused before any data is read


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="full MNIST not in ../shared/data/mnist")
def test_resume_never_switches_to_other_data(tmp_path):
    env = env_without_data(tmp_path)
    data = tmp_path / "data"
    shutil.copytree(SHARED_MNIST, data)
    first = xpcnn("train", "--data-dir", "data", "--limit", "200", "--epochs", "1", "--out", "run", "--no-progress",
                  "--no-plots", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    shutil.rmtree(data)
    (tmp_path / "cache" / "mnist").mkdir(parents=True)  # full MNIST elsewhere must not be picked up either
    for name in os.listdir(SHARED_MNIST):
        shutil.copy(SHARED_MNIST / name, tmp_path / "cache" / "mnist")
    result = xpcnn("train", "--out", "run", "--resume", "--epochs", "2", env=env, cwd=tmp_path)
    assert result.returncode == 1 and f"the run's data is gone from {data}" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1


def test_export_writes_an_onnx_model_that_runs(run):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    tmp, env, _ = run
    result = xpcnn("export", "run/checkpoint.npz", "run.onnx", env=env, cwd=tmp)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("run.onnx: ONNX opset 17")
    images = load_bundled().test.images[:20]
    logits = ort.InferenceSession(str(tmp / "run.onnx")).run(
        None, {"pixels": (images / 255.0).astype(np.float32)}
    )[0]
    model = load_checkpoint(tmp / "run" / "checkpoint.npz").model
    expected = model.forward(normalize(images, MNIST.mean, MNIST.std), training=False)
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4)
    bad = xpcnn("export", "missing.npz", "x.onnx", env=env, cwd=tmp)
    assert bad.returncode == 1 and "missing.npz: no such checkpoint file" in bad.stderr
    for opset, message in (("5", "argument --opset: must be >= 17"), ("99", "--opset: must be in [17, ")):
        beyond = xpcnn("export", "run", "new.onnx", "--opset", opset, env=env, cwd=tmp)  # both usage errors
        assert beyond.returncode == 2 and message in beyond.stderr and not (tmp / "new.onnx").exists(), beyond.stderr


@pytest.mark.gpu
@pytest.mark.parametrize("where, asked", [(("torch", "cuda"), ()), (("cupy", None), ("--cuda-graphs",))],
                         ids=["torch:cuda", "cupy"])
def test_training_on_a_gpu_replays_cuda_graphs_unasked_on_torch_asked_on_cupy_and_resumed(tmp_path, where, asked):
    if backend.device_unusable_reason(*where) is not None and os.environ.get("XPCNN_REQUIRE_GPU") != "1":
        pytest.skip(f"{where[0]}: {backend.device_unusable_reason(*where)}")
    env = env_without_data(tmp_path)
    place = ("--backend", where[0], *(("--device", where[1]) if where[1] else ()))
    common = ("train", "--no-download", "--limit", "600", "--epochs", "1", "--no-progress", "--no-plots", *place)
    recorded = xpcnn(*common, "--out", "recorded", *asked, env=env, cwd=tmp_path)
    direct = xpcnn(*common, "--out", "direct", "--no-cuda-graphs", env=env, cwd=tmp_path)
    assert recorded.returncode == direct.returncode == 0, recorded.stderr + direct.stderr
    assert "recorded as CUDA graphs" in recorded.stderr and "CUDA graphs" not in direct.stderr
    assert recorded.stdout.split()[:2] == direct.stdout.split()[:2] == ["test", "accuracy"]
    accuracies = [float(result.stdout.split()[2].rstrip("%")) for result in (recorded, direct)]
    assert abs(accuracies[0] - accuracies[1]) < 0.5  # the same training, to float rounding
    resumed = xpcnn("train", "--out", "recorded", "--resume", "--epochs", "2", "--no-progress", "--no-plots", *place,
                    env=env, cwd=tmp_path)
    assert resumed.returncode == 0 and "recorded as CUDA graphs" in resumed.stderr, resumed.stderr  # the run's own


# -- a folder of pictures: colour, any size, end to end ------------------------------------------


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """A folder of colour pictures whose classes differ only by colour (helpers.colour_folder),
    and a run of the command on it."""
    pytest.importorskip("PIL")
    tmp = tmp_path_factory.mktemp("pictures")
    colour_folder(tmp / "pics", per_class=40)
    env = env_without_data(tmp)
    result = xpcnn("train", "--dataset", "images", "--data-dir", "pics", "--image-size", "16", "--epochs", "3",
                   "--out", "run", "--no-progress", "--no-plots", env=env, cwd=tmp)
    assert result.returncode == 0, result.stderr
    return tmp, env, result


def test_a_folder_of_colour_pictures_trains_out_of_the_box(pictures):
    tmp, env, result = pictures
    assert "folder" in result.stderr and "120 pictures of 3 classes, 16x16 RGB" in result.stderr
    assert "training compact" in result.stderr  # the preset for any image size
    summary = json.loads((tmp / "run" / "summary.json").read_text())
    assert summary["test_accuracy"] >= 0.95, summary
    again = xpcnn("train", "--dataset", "images", "--data-dir", "pics", "--image-size", "16", "--epochs", "1",
                  "--out", "again", "--no-progress", "--no-plots", env=env, cwd=tmp)
    assert "read from the cache" not in result.stderr and "read from the cache" in again.stderr


def test_the_same_pictures_in_grey_cannot_be_told_apart(pictures):
    tmp, env, _ = pictures
    result = xpcnn("train", "--dataset", "images", "--data-dir", "pics", "--image-size", "16", "--epochs", "3",
                   "--channels", "1", "--out", "grey", "--no-progress", "--no-plots", env=env, cwd=tmp)
    assert result.returncode == 0, result.stderr
    assert "16x16 grey" in result.stderr
    assert json.loads((tmp / "grey" / "summary.json").read_text())["test_accuracy"] < 0.6  # 3 classes: chance 1/3


def test_a_picture_model_is_evaluated_used_exported_and_checked(pictures):
    from PIL import Image

    tmp, env, _ = pictures
    evaluated = xpcnn("evaluate", "run", "--json", env=env, cwd=tmp)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["accuracy"] >= 0.95 and json.loads(evaluated.stdout)["images"] == 24
    own = xpcnn("evaluate", "run", "--data-dir", "pics", "--json", env=env, cwd=tmp)  # its test pictures only
    assert own.returncode == 0 and json.loads(own.stdout) == json.loads(evaluated.stdout), own.stderr
    own = xpcnn("evaluate", "run", "--data-dir", "pics", "--skip-bad-images", env=env, cwd=tmp)
    assert own.returncode == 2 and "--skip-bad-images: applies to another folder" in own.stderr
    Image.fromarray(np.full((50, 70, 3), (225, 85, 100), np.uint8)).save(tmp / "red.jpg")
    Image.fromarray(np.dstack([np.full((30, 20, 3), (60, 170, 70), np.uint8), np.full((30, 20), 255, np.uint8)]),
                    "RGBA").save(tmp / "green.png")
    Image.fromarray(np.full((64, 64), 127, np.uint8)).save(tmp / "grey.png")
    predicted = xpcnn("predict", "run", "red.jpg", "green.png", "grey.png", "--top", "2", env=env, cwd=tmp)
    assert predicted.returncode == 0, predicted.stderr
    lines = predicted.stdout.splitlines()
    assert lines[0].startswith("red.jpg: red (") and lines[1].startswith("green.png: green (") and len(lines) == 3
    colour_folder(tmp / "other", per_class=5, seed=1)  # never trained on: scored whole
    other = xpcnn("evaluate", "run", "--data-dir", "other", "--json", env=env, cwd=tmp)
    assert other.returncode == 0 and json.loads(other.stdout)["images"] == 15, other.stderr
    inverted = xpcnn("predict", "run", "red.jpg", "--invert", env=env, cwd=tmp)
    assert inverted.returncode == 2 and "--invert: is for pictures of digits; this model was trained on photos " \
        "(images)" in inverted.stderr
    (tmp / "other" / "blue" / "notes.txt").write_text("a stray file")
    stray = xpcnn("evaluate", "run", "--data-dir", "other", "--json", env=env, cwd=tmp)
    assert stray.returncode == 1 and "notes.txt: not a picture" in stray.stderr
    skipped = xpcnn("evaluate", "run", "--data-dir", "other", "--skip-bad-images", "--json", env=env, cwd=tmp)
    assert skipped.returncode == 0 and json.loads(skipped.stdout)["images"] == 15, skipped.stderr
    own = xpcnn("evaluate", "run", "--skip-bad-images", env=env, cwd=tmp)
    assert own.returncode == 2 and "--skip-bad-images: applies to another folder of pictures" in own.stderr
    parity = xpcnn("parity", "--model", "run", "--backends", "numpy,array_api_strict", env=env, cwd=tmp)
    assert parity.returncode == 0 and "random 3x16x16 images" in parity.stdout and "GlobalAvgPool2D" in parity.stdout


def test_a_picture_model_exports_its_channels_and_normalisation(pictures):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from xpcnn.datasets import load_images

    tmp, env, _ = pictures
    exported = xpcnn("export", "run", "run.onnx", env=env, cwd=tmp)
    assert exported.returncode == 0 and "(batch, 3, 16, 16)" in exported.stdout, exported.stderr
    test = load_images(tmp / "pics", image_size=16).test
    logits = ort.InferenceSession(str(tmp / "run.onnx")).run(None, {"pixels": (test.images / 255).astype(np.float32)})
    expected = load_checkpoint(tmp / "run").model.forward(test.normalize(test.images), training=False)
    np.testing.assert_allclose(logits[0], expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("backend_name", ["numpy", "torch", "array_api_strict"])
def test_an_interrupted_picture_run_resumes_to_the_same_weights(pictures, backend_name, tmp_path):
    if backend_name not in backend.available_backends():
        pytest.skip(f"{backend_name} is not installed")
    source, env, _ = pictures
    shutil.copytree(source / "pics", tmp_path / "pics")
    args = ["train", "--dataset", "images", "--data-dir", "pics", "--image-size", "12", "--epochs", "2",
            "--batch-size", "16", "--augment", "2", "--pad", "reflect", "--flip", "--checkpoint-every", "1",
            "--backend", backend_name, "--no-progress", "--no-plots"]
    assert xpcnn(*args, "--out", "reference", env=env, cwd=tmp_path).returncode == 0
    ctrl_c_after_the_first_checkpoint([*args, "--out", "run"], tmp_path / "run", env, tmp_path)
    resumed = xpcnn("train", "--out", "run", "--resume", "--backend", backend_name, "--no-progress", "--no-plots",
                    env=env, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert final_weights(tmp_path / "run").keys() == final_weights(tmp_path / "reference").keys()
    for name, value in final_weights(tmp_path / "reference").items():
        np.testing.assert_array_equal(final_weights(tmp_path / "run")[name], value, err_msg=name)


def test_a_folder_of_digit_pictures_trains_as_digits_and_resumes_so(tmp_path, monkeypatch):
    """--digits reads each picture as predict reads a digit, and the model says so."""
    from PIL import Image

    from xpcnn.cli.main import main

    test = load_bundled().test
    for label in range(10):
        (tmp_path / "digits" / str(label)).mkdir(parents=True)
        for index, image in enumerate(test.images[test.labels == label][:6]):  # dark ink on paper
            Image.fromarray(255 - image.reshape(28, 28)).resize((40, 40)).save(tmp_path / "digits" / str(label) /
                                                                             f"{index}.png")
    monkeypatch.chdir(tmp_path)
    flags = ["--dataset", "images", "--data-dir", "digits", "--digits", "--image-size", "28", "--no-progress",
             "--no-plots"]
    assert main(["train", *flags, "--epochs", "1", "--out", "run"]) == 0
    saved = load_checkpoint(tmp_path / "run")
    assert saved.data_statistics()["pictures"] == "digits" and saved.selection().reader["pictures"] == "digits"
    assert main(["train", "--out", "run", "--resume", "--digits", "--epochs", "2", "--no-progress"]) == 0


def test_a_run_on_pictures_that_changed_is_not_resumed(pictures, tmp_path):
    from PIL import Image

    source, env, _ = pictures
    shutil.copytree(source / "pics", tmp_path / "pics")
    args = ["train", "--dataset", "images", "--data-dir", "pics", "--image-size", "12", "--epochs", "3",
            "--checkpoint-every", "1", "--no-progress", "--no-plots", "--out", "run"]
    ctrl_c_after_the_first_checkpoint(args, tmp_path / "run", env, tmp_path)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "pics" / "red" / "000.png")
    resumed = xpcnn("train", "--out", "run", "--resume", "--no-progress", env=env, cwd=tmp_path)
    assert resumed.returncode == 1 and "have changed since the run read them" in resumed.stderr
    evaluated = xpcnn("evaluate", "run", env=env, cwd=tmp_path)
    assert evaluated.returncode == 1 and "have changed since the run read them" in evaluated.stderr


@pytest.mark.parametrize("flags, message", [
    (["--image-size", "16"], "--image-size applies to --dataset images only"),
    (["--dataset", "images"], "--dataset images reads the folder of pictures --data-dir: give it"),
    (["--dataset", "images", "--data-dir", "nowhere"], "nowhere"),
    (["--dataset", "images", "--data-dir", ".", "--test-split", "0"], "--test-split: .* in \\(0, 1\\)"),
    (["--skip-bad-images"], "--skip-bad-images applies to --dataset images only"),
    (["--digits"], "--digits applies to --dataset images only"),
    (["--dataset", "images", "--data-dir", "nowhere", "--digits", "--channels", "3"],
     r"--channels: pictures of digits \(--digits\) are grey: 1, or leave it out"),
    (["--pad", "reflect"], "--pad: says what --augment's shifts bring in"),
    # refused before the folder is read (it does not exist)
    (["--dataset", "images", "--data-dir", "nowhere", "--image-size", "8", "--augment", "8"],
     "--augment: shifts of up to 8 pixels would move 8x8 images out of sight"),
    (["--dataset", "images", "--data-dir", "nowhere", "--image-size", "4", "--model", "resnet20"],
     r"--augment: shifts of up to 4 pixels \(resnet20's recipe; --augment N sets fewer\) would move 4x4 images"),
    (["--dataset", "images", "--data-dir", "nowhere", "--image-size", "8", "--model", "fast"],
     r"--image-size: preset fast takes images of at least 12x12 pixels, not 8x8"),
    (["--dataset", "images", "--data-dir", "given", "--test-split", "0.5"],
     r"--test-split: given holds train/ and test/, which split it; a test split is drawn from a folder of class"),
])
def test_folder_flags_are_checked(tmp_path, flags, message):
    for part in ("train", "test"):
        (tmp_path / "given" / part).mkdir(parents=True)  # refused before its pictures are looked for
    result = xpcnn("train", *flags, "--no-progress", env=env_without_data(tmp_path), cwd=tmp_path)
    assert result.returncode in (1, 2) and re.search(message, result.stderr), result.stderr
    assert "Traceback" not in result.stderr and (result.returncode == 2) == result.stderr.startswith("usage:")


@pytest.mark.parametrize("value", ["1", "-0.1", "nan"])
def test_label_smoothing_outside_0_to_1_is_a_usage_error(tmp_path, value):
    result = xpcnn("train", "--label-smoothing", value, "--no-download", env=env_without_data(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and "argument --label-smoothing: must be in [0, 1), got" in result.stderr
    assert result.stderr.startswith("usage: xpcnn train ") and not (tmp_path / "runs").exists()


def test_label_smoothing_is_recorded_and_kept_by_a_resumed_run(tmp_path):
    env = env_without_data(tmp_path)
    first = xpcnn("train", "--no-download", "--limit", "320", "--epochs", "1", "--label-smoothing", "0.1", "--out",
                  "run", "--no-progress", "--no-plots", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert ", label smoothing 0.1; run folder run" in first.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["settings"]["label_smoothing"] == 0.1
    other = xpcnn("train", "--out", "run", "--resume", "--label-smoothing", "0.2", env=env, cwd=tmp_path)
    assert other.returncode == 2 and "--label-smoothing: 0.2 differs from the run's saved 0.1" in other.stderr
    more = xpcnn("train", "--out", "run", "--resume", "--label-smoothing", "0.1", "--epochs", "2", "--no-progress",
                 "--no-plots", env=env, cwd=tmp_path)
    assert more.returncode == 0, more.stderr
    assert load_checkpoint(tmp_path / "run" / "checkpoint.npz").trainer["label_smoothing"] == 0.1


def test_a_run_without_label_smoothing_refuses_it_on_resume(short_run):
    tmp, env = short_run
    result = xpcnn("train", "--out", "run", "--resume", "--label-smoothing", "0.1", env=env, cwd=tmp)
    assert result.returncode == 2 and "--label-smoothing: 0.1 differs from the run's saved 0.0" in result.stderr


def test_label_smoothing_defaults_to_the_recipe_s():
    from xpcnn.cli.arguments import build_parser, parse
    from xpcnn.cli.training import _recipe

    def recipe(*flags):
        return _recipe(parse(build_parser(), ["train", *flags]))

    assert recipe("--model", "cifar").label_smoothing == 0.2 and recipe().label_smoothing == 0.0
    assert recipe("--model", "cifar", "--label-smoothing", "0").label_smoothing == 0.0
    assert recipe("--label-smoothing", "0.1").label_smoothing == 0.1


def test_flips_and_padding_default_to_the_recipe_s_and_can_be_turned_off():
    from xpcnn.cli.arguments import build_parser, parse
    from xpcnn.cli.training import _recipe

    def recipe(*flags):
        return _recipe(parse(build_parser(), ["train", *flags]))

    assert (recipe("--model", "cifar").flip, recipe("--model", "cifar").pad) == (True, "reflect")
    assert recipe("--model", "resnet20").flip and not recipe("--model", "cifar", "--no-flip").flip
    assert recipe("--flip").flip and not recipe().flip and recipe("--model", "cifar", "--pad", "zero").pad == "zero"


# -- the residual presets, end to end -----------------------------------------------------------


def test_resnet20_trains_on_pictures_and_is_evaluated_used_exported_and_resumed(pictures, tmp_path):
    from PIL import Image

    source, env, _ = pictures
    shutil.copytree(source / "pics", tmp_path / "pics")
    args = ["train", "--model", "resnet20", "--width", "0.25", "--dataset", "images", "--data-dir", "pics",
            "--image-size", "12", "--epochs", "2", "--batch-size", "32", "--no-progress", "--no-plots"]
    trained = xpcnn(*args, "--out", "run", env=env, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "training resnet20 (17,415 parameters)" in trained.stderr
    settings = json.loads((tmp_path / "run" / "summary.json").read_text())["settings"]
    assert (settings["optimizer"], settings["schedule"], settings["augment"], settings["flip"]) == (
        "sgd", "multistep", 4, True)
    assert xpcnn("evaluate", "run", env=env, cwd=tmp_path).returncode == 0
    Image.fromarray(np.full((20, 30, 3), (225, 85, 100), np.uint8)).save(tmp_path / "red.png")
    assert xpcnn("predict", "run", "red.png", env=env, cwd=tmp_path).stdout.startswith("red.png: ")
    if importlib.util.find_spec("onnx") is not None:
        exported = xpcnn("export", "run", "run.onnx", env=env, cwd=tmp_path)
        assert exported.returncode == 0 and "(batch, 3, 12, 12)" in exported.stdout, exported.stderr
    again = xpcnn(*args, "--out", "run", "--resume", env=env, cwd=tmp_path)  # the first command, resumed
    assert again.returncode == 0 and "is complete" in again.stderr, again.stderr
    extended = xpcnn("train", "--out", "run", "--resume", "--epochs", "3", "--no-progress", "--no-plots",
                     env=env, cwd=tmp_path)
    assert extended.returncode == 0 and "epoch 3/3" in extended.stderr, extended.stderr
    refused = xpcnn("train", "--out", "run", "--resume", "--width", "1", env=env, cwd=tmp_path)
    assert refused.returncode == 2 and "--width: 1 is not the width of the run's network" in refused.stderr
    wrong = xpcnn("train", "--model", "lenet", "--width", "2", env=env, cwd=tmp_path)
    assert wrong.returncode == 2 and "--width: applies to resnet20 and cifar, not lenet" in wrong.stderr
    cycled = xpcnn("train", "--model", "cifar", "--momentum", "0.5", env=env, cwd=tmp_path)
    assert cycled.returncode == 2 and "--momentum: the onecycle schedule cycles SGD's momentum" in cycled.stderr
    nesterov = xpcnn("train", "--model", "resnet20", "--nesterov", "--momentum", "0", env=env, cwd=tmp_path)
    assert nesterov.returncode == 2 and "--nesterov: needs a momentum above 0" in nesterov.stderr


def test_cifar_preset_trains_on_a_synthetic_cifar10_archive(tmp_path, monkeypatch, capsys):
    from xpcnn.cli.main import main

    from ..datasets.test_cifar import installed_cifar10

    installed_cifar10(tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--model", "cifar", "--width", "0.125", "--dataset", "cifar10", "--data-dir", ".",
                 "--epochs", "1", "--batch-size", "25", "--out", "run", "--no-progress", "--no-plots"]) == 0
    settings = json.loads((tmp_path / "run" / "summary.json").read_text())["settings"]
    assert (settings["nesterov"], settings["label_smoothing"], settings["pad"]) == (True, 0.2, "reflect")
    assert main(["evaluate", "run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["images"] == 10


def test_main_says_its_errors_on_the_stderr_a_caller_set(tmp_path):
    """It wrote to the stderr of the moment xpcnn.cli.main was imported."""
    import contextlib
    import io

    from xpcnn.cli.main import main

    said = io.StringIO()
    with contextlib.redirect_stderr(said):
        assert main(["evaluate", str(tmp_path / "nowhere")]) == 1
    assert said.getvalue().startswith("xpcnn evaluate: error: ") and "nowhere" in said.getvalue()


def test_a_ctrl_c_between_the_fit_and_its_test_says_how_to_continue(tmp_path, monkeypatch, capsys):
    """It said "xpcnn: interrupted" alone, while the run's checkpoint was whole."""
    from xpcnn.cli.main import main
    from xpcnn.train import Trainer

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XPCNN_DATA_DIR", str(tmp_path))  # no full MNIST: the bundled subset
    test = Trainer.finish

    def ctrl_c(trainer, *data):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "finish", ctrl_c)
    flags = ["--no-download", "--limit", "128", "--epochs", "1", "--no-progress", "--no-plots"]
    assert main(["train", *flags, "--out", "run"]) == 130
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"interrupted; the run continues from its checkpoint {Path('run', 'checkpoint.npz')}; "
                           "continue with: xpcnn train --out run --resume"), line
    monkeypatch.setattr(Trainer, "finish", test)
    assert main(shlex.split(line.split("continue with: ")[1])[1:]) == 0
    assert "test accuracy" in capsys.readouterr().out
    monkeypatch.setattr(Trainer, "finish", ctrl_c)  # a run that never saved says only that it was interrupted
    monkeypatch.setattr(Trainer, "fit", ctrl_c)
    assert main(["train", *flags, "--out", "never"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "xpcnn: interrupted"
    assert not (tmp_path / "never").exists()


def test_the_commands_quieting_of_warnings_ends_with_the_command(capsys):
    """The CLI silences Pillow's and NumPy's warnings (it says the same in one line); a
    Python user who calls main() keeps their own filters afterwards."""
    import warnings

    from xpcnn.cli.main import main

    before = list(warnings.filters)
    assert main(["info"]) == 0
    assert warnings.filters == before


def test_the_other_processes_of_a_job_print_no_results(tmp_path):
    """Under `mpirun -n 2 xpcnn evaluate RUN --json` every process printed its result:
    two JSON documents on stdout, which no reader parses."""
    env = dict(env_without_data(tmp_path), OMPI_COMM_WORLD_SIZE="2", OMPI_COMM_WORLD_RANK="1")
    other = xpcnn("info", env=env, cwd=tmp_path)
    assert other.returncode == 0 and other.stdout == "" and other.stderr == "", other.stderr
    env["OMPI_COMM_WORLD_RANK"] = "0"
    assert "backend numpy" in xpcnn("info", env=env, cwd=tmp_path).stdout


@pytest.mark.mpi
@pytest.mark.usefixtures("bundled_mnist")
def test_processes_resuming_a_run_to_other_totals_or_not_at_all_are_refused(tmp_path):
    """`--resume --epochs 2` in one process and `--resume` in the other: the first
    trained while the second, finding the run complete, evaluated it, and the job hung.
    `--resume` in one only was named by a difference of data statistics."""
    from ..test_distributed import mpirun, run, train_args, xpcnn_command

    assert run(xpcnn_command() + train_args(tmp_path / "run", "tutorial")).returncode == 0
    resume = ["train", "--out", str(tmp_path / "run"), "--resume", "--no-progress", "--no-plots"]
    job = run(mpirun() + ["-n", "1"] + xpcnn_command() + resume + ["--epochs", "2", ":", "-n", "1"]
              + xpcnn_command() + resume, timeout=120)
    assert job.returncode == 1, job.stderr
    assert "process 1 of 2 has other settings than process 0: epochs 1 against 2" in job.stderr, job.stderr
    fresh = [arg for arg in resume if arg != "--resume"]
    job = run(mpirun() + ["-n", "1"] + xpcnn_command() + resume + [":", "-n", "1"] + xpcnn_command() + fresh,
              timeout=120)
    assert job.returncode == 1, job.stderr
    assert "process 1 of 2 has other settings than process 0: resume False against True" in job.stderr, job.stderr


def test_a_network_whose_values_overflow_is_one_line_not_numpys_warnings(tmp_path):
    from xpcnn.io.checkpoint import save_checkpoint
    from xpcnn.presets import build

    net = build("tutorial")
    net.load_state_dict({key: value * 1e19 for key, value in net.state_dict().items()})
    save_checkpoint(tmp_path / "huge.npz", net, data=load_bundled().train)
    np.save(tmp_path / "digit.npy", load_bundled().test.images[0])
    env = env_without_data(tmp_path)
    del env["PYTHONWARNINGS"]  # warnings as a user sees them
    result = xpcnn("predict", "huge.npz", "digit.npy", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "outputs are not finite" in result.stderr, result.stderr
