"""Time to 99 % on full MNIST with the `fast` recipe: xpcnn (NumPy), xpcnn on the torch
backend, and PyTorch, side by side in one process, same machine and threads.

    python benchmarks/time_to_accuracy.py [--seeds 0,1,2] [--threads N] [--save]

All three train `presets.build("fast", seed)` from the same initial weights on the same
batches (xpcnn's batch iterator, seed-shuffled) with the preset's recipe: one epoch, batch
256, Adam lr 1e-2, betas (0.7, 0.9), PyTorch's OneCycleLR (beta1 cycling 0.95-0.85).
Each loop does what a training loop does: it reads the loss and the correct count of every
step (xpcnn's Trainer does; PyTorch's loop calls .item() on both). xpcnn trains with the
worker threads `xpcnn train` uses by default (machine.default_workers: 2 on NumPy with two
cores or more, 1 on torch); PyTorch with its default threads. The clock counts the
epoch, data included; the test set is evaluated after it. The contenders take turns
within each seed, in rotating order. It also reports what the batch iterator alone costs
(shuffle, normalise, move), as a share of xpcnn's epoch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import release_openblas  # noqa: E402  (before NumPy is imported)

OPENBLAS_WAS = release_openblas()

from common import blas_description, emit, keep_freed_memory, machine, pytorch_loop_step, torch_twin  # noqa: E402

from xpcnn import presets  # noqa: E402
from xpcnn.datasets import batches, load_dataset, num_batches  # noqa: E402
from xpcnn.train import Trainer  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
CONTENDERS = ("xpcnn (NumPy)", "xpcnn on torch", "PyTorch")  # xpcnn with the worker threads `xpcnn train` uses


def xpcnn_run(data, seed: int, backend_name: str) -> tuple[float, float]:
    """(training seconds, test accuracy) of the preset's recipe run by xpcnn's Trainer."""
    trainer = Trainer.for_preset("fast", None, len(data.train), seed=seed, backend_name=backend_name,
                                 progress=False, log=lambda message: None, workers=None)  # as `xpcnn train`
    trainer.fit(data.train, 1)
    return trainer.history[-1]["seconds"], trainer.finish(data.test)["accuracy"]


def pytorch_run(data, seed: int) -> tuple[float, float]:
    """The same recipe in plain PyTorch, from the same initial weights and batches."""
    import torch

    recipe = presets.recipe("fast")
    net = torch_twin(presets.build("fast", seed))
    optimizer = torch.optim.Adam(net.parameters(), recipe.lr, betas=recipe.betas)
    total = num_batches(len(data.train), recipe.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, recipe.lr, total_steps=total)
    started = time.perf_counter()
    for x, y in batches(data.train, recipe.batch_size, seed=seed, epoch=0):
        pytorch_loop_step(net, optimizer, x, y)
        schedule.step()
    seconds = time.perf_counter() - started
    net.eval()
    with torch.no_grad():
        test_x = torch.from_numpy(data.test.normalize(data.test.images))
        accuracy = float((net(test_x).argmax(1) == torch.from_numpy(data.test.labels)).float().mean())
    return seconds, accuracy


def batch_seconds(data) -> float:
    """One epoch of the batch iterator alone (host work and the move to NumPy)."""
    started = time.perf_counter()
    for _ in batches(data.train, presets.recipe("fast").batch_size, seed=0, epoch=0):
        pass
    return time.perf_counter() - started


def measure(data, seeds: list[int]) -> dict[str, list[tuple[float, float]]]:
    runs = {
        CONTENDERS[0]: lambda seed: xpcnn_run(data, seed, "numpy"),
        CONTENDERS[1]: lambda seed: xpcnn_run(data, seed, "torch"),
        CONTENDERS[2]: lambda seed: pytorch_run(data, seed),
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in CONTENDERS}
    for turn, seed in enumerate(seeds):
        order = CONTENDERS[turn % 3:] + CONTENDERS[: turn % 3]
        for name in order:
            results[name].append(runs[name](seed))
            seconds, accuracy = results[name][-1]
            print(f"  seed {seed}, {name}: {seconds:.1f} s, {accuracy:.2%}", file=sys.stderr, flush=True)
    return results


def report(results, seeds: list[int], loading: float, threads: int, source: str, allocator: str) -> str:
    import torch

    lines = [f"# Time to 99 % on MNIST: the `fast` recipe, {time.strftime('%Y-%m-%d')}\n",
             f"- machine: {machine()}; threads {threads}; BLAS: {blas_description()}; PyTorch {torch.__version__}",
             "- OpenBLAS overrides before this run: "
             + (", ".join(f"{k}={v}" for k, v in OPENBLAS_WAS.items() if v) or "none") + " (unset here)",
             allocator,
             f"- data: {source}; recipe: {presets.recipe('fast')}; seeds {', '.join(map(str, seeds))}\n",
             "| library | training seconds (median, min-max) | test accuracy (mean, min-max) | seeds >= 99.0 % |",
             "|---|---|---|---|"]
    for name in CONTENDERS:
        seconds = [s for s, _ in results[name]]
        accuracy = [a for _, a in results[name]]
        lines.append(f"| {name} | {statistics.median(seconds):.1f} ({min(seconds):.1f}-{max(seconds):.1f}) | "
                     f"{statistics.mean(accuracy):.2%} ({min(accuracy):.2%}-{max(accuracy):.2%}) | "
                     f"{sum(a >= 0.99 for a in accuracy)} of {len(accuracy)} |")
    ours, theirs = (statistics.median(s for s, _ in results[name]) for name in (CONTENDERS[0], CONTENDERS[2]))
    lines.append(f"\nxpcnn (NumPy) takes {ours / theirs:.2f}x PyTorch's training time. The batch iterator alone "
                 f"takes {loading:.2f} s an epoch, {loading / ours:.1%} of xpcnn's.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("XPCNN_DATA_DIR", str(DEFAULT_DATA)))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--save", action="store_true", help="also write it under benchmarks/results/")
    args = parser.parse_args()

    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    data = load_dataset("mnist", args.data_dir, download=False, allow_bundled=False)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    allocator = keep_freed_memory()
    results = measure(data, seeds)
    text = report(results, seeds, batch_seconds(data), args.threads, data.source, allocator)
    emit(text, "time-to-99", args.save)

if __name__ == "__main__":
    main()
