"""What `xpcnn info` and the benchmarks say about this machine (xpcnn/diagnostics/machine.py)."""

from __future__ import annotations

import importlib.util
import platform
import subprocess
import sys

import pytest

from xpcnn import backend
from xpcnn.diagnostics import machine


def test_report_names_processor_backends_and_blas():
    lines = machine.report()
    assert lines[0].startswith("xpcnn ") and lines[1].startswith("machine: ") and "cores" in lines[1]
    assert any(line.startswith("backend numpy: usable; devices (dtypes): cpu (float32, float64)") for line in lines)
    assert all("None" not in line and "?" not in line for line in lines if line.startswith("BLAS: "))
    assert f"  fast paths of numpy: {machine.fast_paths('numpy')}" in lines or any(
        line.startswith(f"  fast paths of numpy: {machine.fast_paths('numpy')} (") for line in lines)
    assert not any(line.startswith("  fast paths of torch") for line in lines)  # it has none


def test_a_fast_path_package_is_named_with_its_version_whatever_its_distribution_is_called(monkeypatch):
    """CuPy's distribution is cupy-cuda13x (or 12x): its version comes from the module."""
    cupy = pytest.importorskip("cupy")
    monkeypatch.delenv("XPCNN_STANDARD_PATH", raising=False)
    monkeypatch.setitem(backend.FAST_PATHS, "numpy", (("xpcnn.kernels.cupy", "cupy"),))
    assert machine.fast_paths("numpy") == f"xpcnn.kernels.cupy (cupy {cupy.__version__})"


def test_the_fast_paths_numpy_takes_are_named(monkeypatch):
    monkeypatch.delenv("XPCNN_STANDARD_PATH", raising=False)
    monkeypatch.setenv("XPCNN_NUMBA", "off")
    assert machine.fast_paths("numpy") == "xpcnn.kernels.numpy"
    assert machine.fast_paths("torch") == "none"
    if importlib.util.find_spec("numba") is not None:
        assert ("  fast paths of numpy: xpcnn.kernels.numpy (xpcnn.kernels.numba: XPCNN_NUMBA is off)"
                in machine.report())
        monkeypatch.delenv("XPCNN_NUMBA")
        assert machine.fast_paths("numpy").startswith("xpcnn.kernels.numba (numba ")
    monkeypatch.setenv("XPCNN_STANDARD_PATH", "True")
    assert machine.fast_paths("numpy") == "none"
    monkeypatch.setenv("XPCNN_STANDARD_PATH", "maybe")
    with pytest.raises(ValueError, match=r"XPCNN_STANDARD_PATH='maybe': expected 1 or 0"):
        machine.fast_paths("numpy")


def test_dtypes_are_those_each_device_has():
    if backend.unavailable_reason("array_api_strict") is not None:
        pytest.skip("array_api_strict is not installed")
    assert backend.device_dtypes("array_api_strict", "no_float64") == ["float32"]
    assert "no_float64 (float32)" in next(line for line in machine.report() if "array_api_strict" in line)


def test_two_workers_by_default_on_numpy_for_big_enough_steps_with_two_cores_and_blas_limits(monkeypatch):
    big, small = machine.WORKER_STEP_FLOPS, machine.WORKER_STEP_FLOPS / 2
    monkeypatch.setattr(machine, "usable_cores", lambda: 8)
    monkeypatch.setattr(machine, "can_limit_blas", lambda: True)
    assert machine.default_workers("numpy", big) == 2
    assert machine.default_workers("numpy", small) == 1  # the tutorial preset: meeting costs what it gains
    assert machine.default_workers("torch", big) == machine.default_workers("array_api_strict", big) == 1
    monkeypatch.setattr(machine, "usable_cores", lambda: 1)  # taskset -c 0, or a container's one CPU
    assert machine.default_workers("numpy", big) == 1
    monkeypatch.setattr(machine, "usable_cores", lambda: 8)
    monkeypatch.setattr(machine, "can_limit_blas", lambda: False)
    assert machine.default_workers("numpy", big) == 1


def test_usable_cores_are_the_affinity_s_else_the_machine_s(monkeypatch):
    """The process's affinity (taskset and containers give it fewer cores than the machine
    has), else the machine's count, else 1; where the affinity is every core, as on most
    machines, counting the wrong one would pass unseen."""
    monkeypatch.setattr(machine.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(machine.os, "sched_getaffinity", lambda pid: {0, 3}, raising=False)
    assert machine.usable_cores() == 2
    assert machine.cpu().endswith(", 8 cores (2 usable by this process)")

    def refused(pid):
        raise OSError("not permitted")

    monkeypatch.setattr(machine.os, "sched_getaffinity", refused)
    assert machine.usable_cores() == 8
    monkeypatch.delattr(machine.os, "sched_getaffinity")  # not on Linux
    assert machine.usable_cores() == 8 and machine.cpu().endswith(", 8 cores")
    monkeypatch.setattr(machine.os, "cpu_count", lambda: None)  # undetermined
    assert machine.usable_cores() == 1


@pytest.mark.parametrize("cores, limits, line", [
    (1, False, "  training on numpy: 1 worker thread (one usable core)"),  # threadpoolctl would not make it 2
    (1, True, "  training on numpy: 1 worker thread (one usable core)"),
    (2, False, "  training on numpy: 1 worker thread (pip install threadpoolctl (in xpcnn's clone: pip install "
               "'.[threads]') lets steps of 1 GFLOP or more use 2)"),
    (2, True, "  training on numpy: 2 worker threads for steps of 1 GFLOP or more"),
])
def test_info_says_why_numpy_trains_with_one_worker(monkeypatch, cores, limits, line):
    monkeypatch.setattr(machine, "usable_cores", lambda: cores)
    monkeypatch.setattr(machine, "can_limit_blas", lambda: limits)
    assert any(said.startswith(line) for said in machine.report()), machine.report()


def test_blas_threads_are_limited_inside_the_block_only():
    pytest.importorskip("threadpoolctl")
    from threadpoolctl import threadpool_info

    def threads():
        return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}

    before = threads()
    with machine.blas_threads(1):
        assert threads() <= {1}
    assert threads() == before


# Arrays that a worker thread makes and frees together, as a training step's are.
FREED_AND_MADE_AGAIN = """
import resource, sys, threading
import numpy as np
from xpcnn.diagnostics import machine
kept = sys.argv[1] == "keep" and machine.keep_freed_memory()
def step():
    arrays = [np.ones(1 << 20, np.float32) for _ in range(8)]  # 8 x 4 MiB alive together
    del arrays
def work():
    for _ in range(3):
        step()
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for _ in range(10):
        step()
    print(kept, (resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before) / 10)
thread = threading.Thread(target=work)
thread.start()
thread.join()
"""


def test_kept_memory_is_not_faulted_in_again_step_after_step():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's allocator only")

    def faults_per_step(mode: str) -> tuple[bool, float]:
        out = subprocess.run([sys.executable, "-c", FREED_AND_MADE_AGAIN, mode], capture_output=True, text=True,
                             check=True, timeout=120).stdout.split()
        return out[0] == "True", float(out[1])

    _, by_default = faults_per_step("default")
    if by_default < 1000:  # 32 MiB made afresh is 8,192 pages
        pytest.skip(f"this glibc keeps the memory anyway ({by_default:.0f} page faults a step)")
    kept, after = faults_per_step("keep")
    assert kept and after < 100, f"{after:.0f} page faults a step after keep_freed_memory, {by_default:.0f} before"
