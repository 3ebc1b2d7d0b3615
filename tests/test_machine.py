"""What `xpcnn info` and the benchmarks say about this machine (xpcnn/machine.py)."""

from __future__ import annotations

import pytest

from xpcnn import backend, machine


def test_report_names_processor_backends_and_blas():
    lines = machine.report()
    assert lines[0].startswith("xpcnn ") and lines[1].startswith("machine: ") and "cores" in lines[1]
    assert any(line.startswith("backend numpy: usable; devices (dtypes): cpu (float32, float64)") for line in lines)
    assert all("None" not in line and "?" not in line for line in lines if line.startswith("BLAS: "))


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


def test_blas_threads_are_limited_inside_the_block_only():
    pytest.importorskip("threadpoolctl")
    from threadpoolctl import threadpool_info

    def threads():
        return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}

    before = threads()
    with machine.blas_threads(1):
        assert threads() <= {1}
    assert threads() == before
