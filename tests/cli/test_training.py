"""`xpcnn train` (xpcnn/cli/training.py) as a newcomer runs it: here its learning-rate
range test (--find-lr); training, resuming and their errors are in test_main.py."""

from __future__ import annotations

import argparse
import importlib.util
import json

import pytest

from .test_main import env_without_data, xpcnn


def test_find_lr_prints_the_suggested_rate_and_writes_the_test_into_the_run_folder(tmp_path):
    result = xpcnn("train", "--find-lr", "--no-download", "--limit", "640", "--batch-size", "32", "--out", "lr",
                   "--no-progress", env=env_without_data(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "lr" / "lr-range.json").read_text())
    steps = f"{len(data['lrs'])} steps from 1e-07 to {data['lrs'][-1]:.2g}, where the loss diverged"
    assert result.stdout == f"suggested --lr {data['suggested']:.2g}, where the smoothed loss was lowest ({steps})\n"
    assert "learning-rate range test of tutorial on numpy, SGD with batch 32" in result.stderr
    assert data["lrs"][0] == 1e-07 and len(data["lrs"]) <= 100 and data["diverged"]  # up to 10: SGD diverges first
    drawn = importlib.util.find_spec("matplotlib") is not None
    assert {path.name for path in (tmp_path / "lr").iterdir()} == {"lr-range.json", *["lr-range.png"] * drawn}
    trained = xpcnn("train", "--no-download", "--limit", "640", "--epochs", "1", "--out", "lr", "--no-progress",
                    "--lr", f"{data['suggested']:.2g}", env=env_without_data(tmp_path), cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr  # the run then goes into the same folder, beside the test


@pytest.mark.parametrize("flags, message", [
    (["--resume", "--out", "run"], "--find-lr tests a new run's rates in one process: not with --resume"),
    (["--lr", "0.1"], "--lr: --find-lr tries the rates from 1e-07 to 10 and suggests one: leave --lr out"),
])
def test_find_lr_with_a_flag_it_cannot_take_is_a_usage_error_that_makes_nothing(tmp_path, flags, message):
    result = xpcnn("train", "--find-lr", "--no-download", *flags, env=env_without_data(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "run").exists()  # refused before a folder was made


@pytest.mark.parametrize("resume, processes, refused", [
    (True, 1, "not with --resume"), (False, 2, "not under mpirun (2 processes)"), (True, 3, "not with --resume")])
def test_find_lr_refused_names_what_was_given(resume, processes, refused):
    """Under mpirun without --resume, the refusal named --resume too: a flag not given."""
    from xpcnn.cli.output import UsageError
    from xpcnn.cli.training import _check_find_lr

    with pytest.raises(UsageError) as error:
        _check_find_lr(argparse.Namespace(resume=resume, lr=None), processes)
    assert str(error.value) == f"--find-lr tests a new run's rates in one process: {refused}"


def test_find_lr_without_matplotlib_says_the_plot_is_skipped(tmp_path, monkeypatch, capsys):
    """Without matplotlib the test wrote lr-range.json alone and said nothing of the plot."""
    from xpcnn.cli.main import main
    from xpcnn.train import plots

    monkeypatch.setattr(plots, "available", lambda: False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("XPCNN_DATA_DIR", raising=False)
    out = tmp_path / "lr"
    assert main(["train", "--find-lr", "--no-download", "--limit", "200", "--out", str(out), "--no-progress"]) == 0
    assert "plot skipped: matplotlib is not installed" in capsys.readouterr().err
    assert [path.name for path in out.iterdir()] == ["lr-range.json"]
