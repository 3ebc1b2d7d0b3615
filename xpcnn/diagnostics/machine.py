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

from .. import backend
from .._version import __version__
from ..extras import install_hint


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
    Sequential.training_flops): two on a backend whose element-wise work runs on one
    thread (NumPy), so that one model leaves a core idle for much of a step, when the
    machine has two cores or more, BLAS threads can be limited, and the step is 1 GFLOP or
    more (below, meeting at every layer costs what the second core gains: measured by
    benchmarks/workers.py); else one. Other backends use all cores (or a GPU) already."""
    usable = backend.elementwise_on_one_thread(backend_name) and usable_cores() >= 2 and can_limit_blas()
    return 2 if usable and step_flops >= WORKER_STEP_FLOPS else 1


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Have glibc's allocator keep the memory that arrays free for the next ones instead of
    handing it back to the OS; True where it could (glibc), False elsewhere (no change).

    A training step makes and frees tens of MB of arrays (the standard has no `out=`).
    By default glibc returns freed memory, in worker threads after nearly every step, and
    the kernel zeroes it again page by page when the next arrays use it: thousands of page
    faults a step, a share of an epoch that benchmarks/workers.py shows. It is
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
    or why not; its fast paths and worker threads), the GPU libraries' CUDA, BLAS, and the
    OpenBLAS kernel override if one is set."""
    lines = [f"xpcnn {__version__}, Python {platform.python_version()}, NumPy {np.__version__}", f"machine: {cpu()}"]
    for name in backend.BACKENDS:
        lines += _backend_lines(name)
    lines += backend.cuda_versions()
    lines += [f"BLAS: {line}" for line in blas() or ["unknown (install threadpoolctl to see it)"]]
    lines.append(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    return lines


def _backend_lines(name: str) -> list[str]:
    """Backend `name`: usable with its devices and dtypes, or why not; then how it trains
    (worker threads, fast paths) where that is a choice."""
    reason = backend.unavailable_reason(name)
    if reason is not None:
        return [f"backend {name}: not usable: {reason}"]
    devices = [f"{spec} ({', '.join(backend.device_dtypes(name, spec))})" for spec in backend.devices(name)]
    lines = [f"backend {name}: usable; devices (dtypes): {', '.join(devices)}"]
    if backend.elementwise_on_one_thread(name):
        if default_workers(name, WORKER_STEP_FLOPS) > 1:
            lines.append(f"  training on {name}: 2 worker threads for steps of {WORKER_STEP_FLOPS / 1e9:g} GFLOP or "
                         "more (every preset but tutorial, at its own batch and image size), 1 below")
        elif usable_cores() < 2:  # a second worker would have no core of its own, whatever is installed
            lines.append(f"  training on {name}: 1 worker thread (one usable core)")
        else:
            lines.append(f"  training on {name}: 1 worker thread" + ("" if can_limit_blas() else
                         f" ({install_hint('threads')} lets steps of 1 GFLOP or more use 2)"))
    modules = backend.fast_path_modules(name)
    if modules:
        unused = [f"{module}: {why}" for module, _, why in modules if why is not None]
        lines.append(f"  fast paths of {name}: {fast_paths(name)}" + (f" ({'; '.join(unused)})" if unused else ""))
    return lines


def fast_paths(name: str) -> str:
    """The kernel modules backend `name` takes here, with the versions of the packages they
    need, for `xpcnn info` and run summaries (batch norm's float32 results differ in the
    last bits between them); "none" where it takes none."""
    needed = {module: needs for module, needs, _ in backend.fast_path_modules(name)}
    return ", then ".join(module + (f" ({needed[module]} {_version(needed[module])})" if needed[module] else "")
                          for module in backend.fast_paths(name)) or "none"


def _version(package: str) -> str:
    """The version of an importable package, as the module says it: its distribution may
    have another name (CuPy's is named for its CUDA: cupy-cuda13x)."""
    return str(getattr(importlib.import_module(package), "__version__", "unknown"))
