"""A description of this machine for run summaries, `xpcnn info` and the benchmarks:
processor, cores, the BLAS library NumPy calls with its kernel and threads, and which
backends and devices are usable."""

from __future__ import annotations

import importlib.util
import os
import platform
from pathlib import Path

import numpy as np

from . import backend
from ._version import __version__


def cpu() -> str:
    """Processor model and core count, e.g. "AMD EPYC 7B13, 2 cores"."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def blas() -> list[str]:
    """One line per BLAS library loaded in this process: API, version, kernel, threads
    (needs threadpoolctl; empty without it)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [f"{pool.get('internal_api')} {pool.get('version')} ({pool.get('architecture', '?')} kernel, "
            f"{pool.get('num_threads')} threads)" for pool in threadpool_info() if pool.get("user_api") == "blas"]


def report() -> list[str]:
    """What `xpcnn info` prints: versions, processor, each backend (usable, with devices,
    or why not), BLAS, and the OpenBLAS kernel override if one is set."""
    lines = [f"xpcnn {__version__}, Python {platform.python_version()}, NumPy {np.__version__}", f"machine: {cpu()}"]
    for name in backend.BACKENDS:
        reason = backend.unavailable_reason(name)
        if reason is None:
            devices = [f"{spec} ({', '.join(backend.device_dtypes(name, spec))})" for spec in backend.devices(name)]
            lines.append(f"backend {name}: usable; devices (dtypes): {', '.join(devices)}")
        else:
            lines.append(f"backend {name}: not usable: {reason}")
    lines += cuda()
    lines += [f"BLAS: {line}" for line in blas() or ["unknown (install threadpoolctl to see it)"]]
    lines.append(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    return lines


def cuda() -> list[str]:
    """Which CUDA the installed CuPy and PyTorch see (nothing for a library not installed)."""
    lines = []
    if importlib.util.find_spec("cupy") is not None:
        try:
            import cupy

            runtime, driver = cupy.cuda.runtime.runtimeGetVersion(), cupy.cuda.runtime.driverGetVersion()
            lines.append(f"CuPy {cupy.__version__}: CUDA runtime {runtime}, driver {driver}")
        except Exception as exc:  # noqa: BLE001  (CuPy raises its own CUDA error types)
            lines.append(f"CuPy: no CUDA driver or device ({type(exc).__name__}: {exc})")
    if importlib.util.find_spec("torch") is not None:
        import torch

        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        lines.append(f"PyTorch {torch.__version__}: {build}, {torch.cuda.device_count()} CUDA devices")
    return lines

