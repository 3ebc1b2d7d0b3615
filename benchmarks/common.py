"""Shared by the benchmarks: a PyTorch twin of an xpcnn network, FLOP counts, machine facts.

OpenBLAS reads OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE when NumPy is first imported, so
`release_openblas()` must run before anything imports NumPy; it records what was set.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

OPENBLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def release_openblas() -> dict[str, str | None]:
    """Unset the OpenBLAS kernel overrides for this process; returns their old values."""
    return {name: os.environ.pop(name, None) for name in OPENBLAS_VARIABLES}


def machine() -> str:
    """CPU model, cores, operating system (imports NumPy: call after release_openblas)."""
    from xpcnn.diagnostics import machine as this_machine

    return f"{this_machine.cpu()}, {platform.system()} {platform.release()}"


def keep_freed_memory() -> str:
    """Set the allocator as `xpcnn train` does (machine.keep_freed_memory), for the whole
    process, so for every contender alike; returns the report's line about it."""
    from xpcnn.diagnostics import machine as this_machine

    kept = this_machine.keep_freed_memory()
    return ("- allocator: glibc keeps freed memory for every contender, as `xpcnn train` sets it "
            "(machine.keep_freed_memory)" if kept else "- allocator: unchanged (not glibc)")


def blas_description() -> str:
    from xpcnn.diagnostics import machine as this_machine

    return "; ".join(this_machine.blas()) or "unknown"


def torch_twin(model: Any, device: str = "cpu") -> Any:
    """The same network in torch.nn, with the same weights (float32)."""
    from xpcnn.io.torch_module import to_torch

    return to_torch(model, device, "float32")


def timed(function: Any, repeats: int) -> float:
    """Seconds of `repeats` calls of function()."""
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return time.perf_counter() - start


def pytorch_loop_step(net: Any, optimizer: Any, x: Any, y: Any) -> None:
    """One step of a PyTorch training loop as users write it, reading the loss and the
    correct count as xpcnn's Trainer does (host NumPy batches in)."""
    import torch

    x, y = torch.from_numpy(x), torch.from_numpy(y)
    optimizer.zero_grad(set_to_none=True)
    logits = net(x)
    loss = torch.nn.functional.cross_entropy(logits, y)
    loss.backward()
    optimizer.step()
    loss.item(), (logits.argmax(1) == y).sum().item()


def emit(text: str, name: str, save: bool) -> None:
    """Print a report; with `save`, also write it as benchmarks/results/<name>-<date>.md."""
    import sys

    print(text)
    if save:
        path = Path(__file__).resolve().parent / "results" / f"{name}-{time.strftime('%Y%m%d')}.md"
        path.write_text(text + "\n")
        print(f"saved {path}", file=sys.stderr)
