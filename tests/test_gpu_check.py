"""The GPU check (benchmarks/gpu_check.sh, gpu_steps.py) can only show itself on a GPU
machine, which few sessions have: here it must stop at once, saying why, and its steps
must run when CPU backends stand in for CUDA, so that the first device run is not wasted."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tarfile
import types
from pathlib import Path

import pytest

from xpcnn import backend

ROOT = Path(__file__).resolve().parents[1]


def gpu_steps():
    spec = importlib.util.spec_from_file_location("gpu_steps", ROOT / "benchmarks" / "gpu_steps.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(backend.unavailable_reason("cupy") is None, reason="a CUDA device is here")
def test_without_cuda_the_check_stops_after_the_preflight_saying_why(tmp_path):
    # What it did, not how long it took: on a loaded machine a wall-clock bound fails, not the check.
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], cwd=ROOT, capture_output=True,
                            text=True, env={**os.environ, "OUT": str(tmp_path)}, timeout=120)
    assert result.returncode == 3, result.stderr
    assert "no usable CUDA device here" in result.stderr and "CuPy cannot compute" in result.stderr
    assert "PROBLEM:" in (tmp_path / "env.txt").read_text()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["env.txt"]  # no step ran after it
    assert "gpu_check: kernels" not in result.stderr


def test_the_steps_run_with_cpu_backends_standing_in(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    steps = gpu_steps()
    monkeypatch.setattr(steps, "PAIRS", [("numpy", "torch")])
    monkeypatch.setattr(steps, "GPU_BACKENDS", [("torch", "cpu")])
    monkeypatch.setattr(sys, "argv", ["gpu_steps.py"])
    assert steps.parity(tmp_path) == 0
    assert (tmp_path / "parity.txt").read_text().count("PASS") >= 4
    (tmp_path / "pytest-gpu.txt").write_text("3 passed\n")
    assert steps.summary(tmp_path) == 0
    page = (tmp_path / "summary.md").read_text()
    assert "| numpy vs torch | lenet | float64 |" in page and "(no train.txt" in page and "3 passed" in page


def test_the_results_come_back_in_fewer_files_than_a_device_run_brings_back(tmp_path):
    """A device run brings back at most 8 files of $OUT, and the check writes 11: gpu_check.sh
    packs them after every step, so that a check cut short also brings back what it had."""
    steps, work, out = gpu_steps(), tmp_path / "work", tmp_path / "out"
    script = (ROOT / "benchmarks" / "gpu_check.sh").read_text()
    written = sorted(set(re.findall(r"\$WORK/([\w.-]+)", script)) | {"env.txt", "parity.txt", "parity.jsonl",
                                                                     "train.txt", "products.md"})
    assert len(written) == 11  # with the preflight's mark of kernels that did not compile
    work.mkdir()
    out.mkdir()
    for name in written:
        (work / name).write_text(f"{name}: 3 passed\n")
    row = {"pair": ["numpy", "cupy"], "preset": "lenet", "dtype": "float32", "passed": True, "compare": {"rows": []}}
    (work / "parity.jsonl").write_text(json.dumps(row) + "\n")
    assert steps.pack(work, out) == 0
    assert sorted(path.name for path in out.iterdir()) == sorted(["summary.md", "env.txt", steps.ARCHIVE])
    assert len(list(out.iterdir())) <= steps.FILES_BACK
    with tarfile.open(out / steps.ARCHIVE) as archive:
        assert sorted(archive.getnames()) == sorted([*written, "summary.md"])
    assert "pytest-kernels.txt: 3 passed" in (out / "summary.md").read_text()
    step = script[script.index("step() {"):script.index("\n}\n", script.index("step() {"))]
    assert 'gpu_steps.py pack "$WORK" "$OUT"' in step  # after every step


def test_the_preflight_compiles_the_kernels_once_or_says_why_they_do_not(tmp_path, monkeypatch):
    """A kernel that does not compile would fail every test and step after seconds of
    compiling each: the preflight finds it once, and the check goes on without them."""
    from .kernels import cuda_on_cpu

    steps, fast, looked_up = gpu_steps(), cuda_on_cpu.kernel_module(), []
    monkeypatch.setattr(fast, "_module", lambda: types.SimpleNamespace(get_function=looked_up.append))
    said = steps.compile_kernels(tmp_path)
    assert re.fullmatch(r"xpcnn's CUDA kernels: \d+ instances compiled in [\d.]+ s", said), said
    assert looked_up == fast._names()[:1] and not (tmp_path / steps.KERNELS_FAILED).exists()

    def broken():
        raise RuntimeError("ptxas error: Entry function uses too much shared data")

    monkeypatch.setattr(fast, "_module", broken)
    said = steps.compile_kernels(tmp_path)
    assert said.startswith("PROBLEM (the check goes on without them)") and "too much shared data" in said
    assert "too much shared data" in (tmp_path / steps.KERNELS_FAILED).read_text()
    script = (ROOT / "benchmarks" / "gpu_check.sh").read_text()
    assert f'if [ -e "$WORK/{steps.KERNELS_FAILED}" ]' in script and "export XPCNN_CUPY=0" in script


def test_a_step_cut_as_it_wrote_is_summarised_and_packed(tmp_path):
    """A time-out can end a step in the middle of a line of parity.jsonl or of a character."""
    steps, work, out = gpu_steps(), tmp_path / "work", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    (work / "parity.jsonl").write_text('{"pair": ["numpy", "cu')
    (work / "pytest-gpu.txt").write_bytes("12 passed \u2192".encode()[:-1])
    assert steps.pack(work, out) == 0
    page = (out / "summary.md").read_text()
    assert "a line cut short" in page and "12 passed" in page
    with tarfile.open(out / steps.ARCHIVE) as archive:
        assert sorted(archive.getnames()) == ["parity.jsonl", "pytest-gpu.txt", "summary.md"]


def test_a_parity_configuration_that_fails_leaves_the_others_theirs(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    steps = gpu_steps()
    monkeypatch.setattr(steps, "PAIRS", [("numpy", "no-such-backend"), ("numpy", "torch")])
    assert steps.parity(tmp_path) == 1
    assert (tmp_path / "parity.txt").read_text().count("PASS") >= 4
    assert steps.summary(tmp_path) == 0
    page = (tmp_path / "summary.md").read_text()
    assert page.count("| numpy vs no-such-backend |") == 4 and page.count("| FAIL |") == 4
    assert "| numpy vs torch | lenet | float64 |" in page


def test_a_training_run_that_fails_leaves_the_others_their_lines(tmp_path, monkeypatch):
    steps = gpu_steps()

    def row(name, device, graphs):
        if name == "cupy":
            raise RuntimeError("no recording")
        return f"{name} {graphs}: test accuracy 95%"

    monkeypatch.setattr(steps, "_train_row", row)
    assert steps.train(tmp_path) == 1
    lines = (tmp_path / "train.txt").read_text().splitlines()
    assert len(lines) == 4 and all("failed: RuntimeError('no recording')" in line for line in lines[:2])
    assert lines[2:] == ["torch True: test accuracy 95%", "torch False: test accuracy 95%"]


def test_the_products_step_finds_each_product_of_a_training_step(monkeypatch):
    """lenet: 4 forward, 7 backward (no input gradient for the data), each its own shape;
    on the standard path, as on CuPy (NumPy's fast path writes one of them in place)."""
    monkeypatch.setenv("XPCNN_STANDARD_PATH", "1")
    steps = gpu_steps()
    fast_path = backend.fast_path
    cases = steps.product_cases("lenet", 4, ("numpy", None))
    assert backend.fast_path is fast_path and len(cases) == 11
    assert all(a.ndim == b.ndim == 2 and a.shape[1] == b.shape[0] for a, b in cases)



def test_the_summary_shows_a_nan_difference_that_parity_wrote_as_null(tmp_path):
    """parity's to_dict writes a NaN or infinite difference as null: the summary read it as a number."""
    row = {"pair": ["numpy", "torch"], "preset": "lenet", "dtype": "float32", "passed": False,
           "compare": {"rows": [{"view": "local", "max_rel": 1e-9}, {"view": "local", "max_rel": None}]}}
    (tmp_path / "parity.jsonl").write_text(json.dumps(row) + "\n")
    assert gpu_steps().summary(tmp_path) == 0
    assert "| numpy vs torch | lenet | float32 | nan | FAIL |" in (tmp_path / "summary.md").read_text()
