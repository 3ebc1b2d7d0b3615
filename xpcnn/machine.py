"""A description of this machine for run summaries, `xpcnn info` and the benchmarks:
processor, cores, and the BLAS library NumPy calls with its kernel and threads."""

from __future__ import annotations

import os
import platform
from pathlib import Path


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
