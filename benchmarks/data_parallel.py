"""Data-parallel training: 1 process against N processes (mpirun), same run, same machine.

    python benchmarks/data_parallel.py [--model lenet] [--processes 2] [--limit 8192]

Needs the test and mpi extras (threadpoolctl, mpi4py, mpirun) and full MNIST
(--data-dir, $XPCNN_DATA_DIR, or ../shared/data/mnist beside the repository).

Trains one epoch of `--limit` full-MNIST images with `xpcnn.Trainer`, first in this
process, then under `mpirun -n N` (the script starts itself as the workers), and reports
images per second and the time each step spends in reductions: the packed gradient
allreduce, and the small ones (loss, batch-norm statistics, the stop flag), waiting for
the slower process included. Each process gets cores / N BLAS threads, so the comparison
is of the same machine used two ways. It is not a speed-up from more hardware: the point
of MPI is several machines. On one machine N processes win only where one process leaves
cores idle (NumPy's element-wise work runs on one thread), and lose where BLAS already
used them all.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import release_openblas  # noqa: E402  (before NumPy is imported)

OPENBLAS_WAS = release_openblas()

from common import blas_description, machine  # noqa: E402

from xpcnn import distributed, presets  # noqa: E402
from xpcnn.datasets import load_dataset  # noqa: E402
from xpcnn.train import Trainer  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


class Timed(distributed.Communicator):
    """A communicator that adds up the seconds spent in each kind of reduction."""

    def __init__(self, inner: distributed.Communicator) -> None:
        self.inner, self.rank, self.size, self.kind = inner, inner.rank, inner.size, inner.kind
        self.seconds = {"gradients": 0.0, "small": 0.0}
        self.gradient_values = 0

    def _timed(self, kind: str, call, *args):
        start = time.perf_counter()
        result = call(*args)
        self.seconds[kind] += time.perf_counter() - start
        return result

    def sum_arrays(self, arrays):
        values = sum(int(a.size) for a in arrays)
        kind = "gradients" if values > 10_000 else "small"  # batch-norm sums are a few hundred values
        if kind == "gradients":
            self.gradient_values = values
        return self._timed(kind, self.inner.sum_arrays, arrays)

    def sum_numbers(self, *values):
        return self._timed("small", self.inner.sum_numbers, *values)

    def any(self, flag):
        return self._timed("small", self.inner.any, flag)

    def gather(self, value):
        return self.inner.gather(value)

    def broadcast(self, value):
        return self.inner.broadcast(value)

    def fail(self, error):
        self.inner.fail(error)


def worker(args: argparse.Namespace) -> dict:
    """One epoch in this process (one of N under mpirun); rank 0's measurements."""
    from threadpoolctl import threadpool_limits

    comm = Timed(distributed.world())
    threadpool_limits(max(1, (os.cpu_count() or 1) // comm.size))
    train = load_dataset("mnist", args.data_dir, download=False, allow_bundled=False).train.sample(args.limit)
    trainer = Trainer.for_preset(args.model, presets.recipe(args.model).replace(batch_size=args.batch_size),
                                 len(train), progress=False, log=lambda message: None, comm=comm,
                                 workers=1)  # processes against one process, not worker threads
    trainer.fit(train, 1)
    seconds, steps = trainer.history[-1]["seconds"], trainer.optimizer.steps
    return {"processes": comm.size, "threads": max(1, (os.cpu_count() or 1) // comm.size),
            "images_per_second": len(train) / seconds, "step_ms": 1e3 * seconds / steps,
            "gradients_ms": 1e3 * comm.seconds["gradients"] / steps, "small_ms": 1e3 * comm.seconds["small"] / steps,
            "gradient_values": comm.gradient_values}


def launch(args: argparse.Namespace) -> dict:
    """This script as `--processes` MPI workers; rank 0's result."""
    mpirun = Path(sys.executable).parent / "mpirun"
    flags = ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    command = [str(mpirun if mpirun.exists() else "mpirun"), *flags, "-n", str(args.processes), sys.executable,
               __file__, "--worker", "--model", args.model, "--limit", str(args.limit), "--batch-size",
               str(args.batch_size), "--data-dir", args.data_dir]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the {args.processes} MPI workers failed (exit {done.returncode}):\n{done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet", choices=sorted(presets.PRESETS))
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--limit", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--data-dir", default=os.environ.get("XPCNN_DATA_DIR", str(DEFAULT_DATA)))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = worker(args)
        if result["processes"] == 1 or distributed.launched_rank() == 0:
            print(json.dumps(result), flush=True)
        return
    rows = [worker(args), launch(args)]
    print(f"# Data-parallel training: 1 vs {args.processes} processes, {args.model}, {time.strftime('%Y-%m-%d')}\n")
    print(f"- machine: {machine()}; BLAS: {blas_description()}")
    overrides = ", ".join(f"{k}={v}" for k, v in OPENBLAS_WAS.items() if v) or "none"
    print(f"- OpenBLAS overrides before this run: {overrides} (unset here)")
    print(f"- one epoch of {args.limit:,} full-MNIST images, global batch {args.batch_size}; "
          f"gradient allreduce of {rows[1]['gradient_values']:,} float32 values per step\n")
    print("| processes | BLAS threads each | images/s | ms per step | gradient allreduce ms/step | "
          "other reductions ms/step |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['processes']} | {row['threads']} | {row['images_per_second']:,.0f} | {row['step_ms']:.1f} | "
              f"{row['gradients_ms']:.2f} | {row['small_ms']:.2f} |")


if __name__ == "__main__":
    main()
