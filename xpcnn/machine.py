"""A description of this machine for run summaries, `xpcnn info` and the benchmarks:
processor, cores, the BLAS library NumPy calls with its kernel and threads, and which
backends and devices are usable; and how training uses its cores (BLAS threads, worker
threads) and memory (the C library's allocator)."""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import importlib.util
import os
import platform
from collections.abc import Iterator
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
    usable, cores = usable_cores(), os.cpu_count()
    return f"{name}, {cores} cores" + (f" ({usable} usable by this process)" if usable != cores else "")


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, as taskset and containers set
    it), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def blas() -> list[str]:
    """One line per BLAS library loaded in this process: API, version, kernel, threads
    (needs threadpoolctl; empty without it)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [f"{pool.get('internal_api')} {pool.get('version')} ({pool.get('architecture', '?')} kernel, "
            f"{pool.get('num_threads')} threads)" for pool in threadpool_info() if pool.get("user_api") == "blas"]


def can_limit_blas() -> bool:
    """Whether this process can set its BLAS thread count (threadpoolctl is installed)."""
    return importlib.util.find_spec("threadpoolctl") is not None


@contextlib.contextmanager
def blas_threads(count: int) -> Iterator[None]:
    """Run the block with BLAS using `count` threads (threadpoolctl; unchanged without it).
    Worker threads that call BLAS at once need it: each call would otherwise start all
    the cores' BLAS threads, and two such calls fight over them."""
    if not can_limit_blas():
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(count, user_api="blas"):
        yield


WORKER_STEP_FLOPS = 1e9  # the least work per training step that two worker threads pay off for


def default_workers(backend_name: str, step_flops: float) -> int:
    """Worker threads that `xpcnn train` uses for a training step of `step_flops` (see
    Sequential.training_flops): two on NumPy, whose element-wise work runs on one thread
    so that one model leaves a core idle for much of a step, when the machine has two
    cores or more, BLAS threads can be limited, and the step is 1 GFLOP or more (below,
    meeting at every layer costs what the second core gains: measured by
    benchmarks/workers.py); else one. Other backends use all cores (or a GPU) already."""
    usable = backend_name == "numpy" and usable_cores() >= 2 and can_limit_blas()
    return 2 if usable and step_flops >= WORKER_STEP_FLOPS else 1


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Have glibc's allocator keep the memory that arrays free for the next ones instead of
    handing it back to the OS; True where it could (glibc), False elsewhere (no change).

    A training step makes and frees tens of MB of arrays (the standard has no `out=`).
    By default glibc returns freed memory, in worker threads after nearly every step, and
    the kernel zeroes it again page by page when the next arrays use it: 1,000-3,000 page
    faults a step, 7-15 % of a `fast` epoch with two worker threads (2-core Xeon). It is
    for the whole process and for good (arrays up to 32 MiB come from the heap, and up
    to 1 GiB of free heap is kept), so `xpcnn train` calls it and the library does not.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))


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
    if default_workers("numpy", WORKER_STEP_FLOPS) > 1:
        lines.append(f"training on NumPy: 2 worker threads for steps of {WORKER_STEP_FLOPS / 1e9:g} GFLOP or more "
                     "(the lenet and fast presets), 1 below (tutorial)")
    else:
        lines.append("training on NumPy: 1 worker thread" + ("" if can_limit_blas() else
                     " (pip install 'xpcnn[threads]' lets lenet and fast use 2)"))
    lines.append(f"NumPy's fast paths: {numpy_fast_paths()}{_compiled_paths_hint()}")
    lines.append(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    return lines


def numpy_fast_paths() -> str:
    """Which fast paths NumPy takes here (see backend.fast_path), for `xpcnn info` and run
    summaries: batch norm's float32 results differ in the last bits between them."""
    modules = backend.fast_paths("numpy")
    if "xpcnn.fast_numba" in modules:
        numba = importlib.import_module("numba")  # imported already: xpcnn.fast_numba uses it
        modules[modules.index("xpcnn.fast_numba")] = f"xpcnn.fast_numba (numba {numba.__version__})"
    return ", then ".join(modules) or "none"


def _compiled_paths_hint() -> str:
    """Why NumPy takes no compiled fast paths here, if it does not."""
    if backend.switch("XPCNN_STANDARD_PATH"):
        return " (XPCNN_STANDARD_PATH is set)"
    if "xpcnn.fast_numba" in backend.fast_paths("numpy"):
        return ""
    if importlib.util.find_spec("numba") is None:
        return " (pip install 'xpcnn[numba]' compiles batch norm, pooling, im2col, col2im and Adam)"
    return " (XPCNN_NUMBA is off)" if backend.switch("XPCNN_NUMBA") is False else " (numba does not import here)"


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

