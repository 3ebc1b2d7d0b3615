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
