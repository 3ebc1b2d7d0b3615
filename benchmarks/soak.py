"""Soak: does memory stay flat over a long run? (a benchmark, not a timed test)

    python benchmarks/soak.py [--epochs 8] [--predictions 5000] [--save]

Trains the `tutorial` preset for several epochs on the bundled MNIST subset through the same
Trainer the CLI uses (progress bar on, checkpoint every epoch), then runs thousands of
single-image predictions. After each epoch, and after each block of predictions, it
records the resident memory (current and peak). A leak through layer caches, histories,
progress bars or checkpoint buffers shows as current memory growing epoch after epoch.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import xpcnn
from xpcnn import presets
from xpcnn.datasets import MNIST, load_bundled
from xpcnn.evaluation import predict
from xpcnn.optim import SGD
from xpcnn.train import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def resident_mib() -> float:
    """Current resident set size, from /proc (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--predictions", type=int, default=5000)
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args()
    data = load_bundled()
    model = presets.build("tutorial")
    rows = []
    with tempfile.TemporaryDirectory() as run_dir:
        # Progress bar on (to stderr), as in the CLI: a leak through tqdm would show here too.
        trainer = Trainer(model, SGD(model, 0.01, momentum=0.9), batch_size=64, run_dir=run_dir, log=lambda m: None)
        for epoch in range(1, args.epochs + 1):
            start = time.perf_counter()
            trainer.fit(data.train, epoch, val=data.test)
            rows.append((f"epoch {epoch}", time.perf_counter() - start, resident_mib(), peak_mib()))
        blocks = 5
        for block in range(1, blocks + 1):
            start = time.perf_counter()
            for index in range(args.predictions // blocks):
                predict(model, data.test.images[index % len(data.test)], MNIST.mean, MNIST.std)
            rows.append(
                (
                    f"{block * (args.predictions // blocks):,} predictions",
                    time.perf_counter() - start,
                    resident_mib(),
                    peak_mib(),
                )
            )
    # Resident memory breathes by one batch's arrays as the allocator reuses or returns
    # them; a leak shows as a rising floor. Compare the highest reading of the early epochs
    # (after the first, which pays for the imports and first allocations) with the late ones.
    epoch_rss = [r[2] for r in rows[: args.epochs]]
    half = max(2, (args.epochs + 1) // 2)
    growth = max(epoch_rss[half:], default=0.0) - max(epoch_rss[1:half], default=0.0)
    prediction_growth = rows[-1][2] - rows[args.epochs][2]
    flat = max(growth, prediction_growth) < 5
    verdict = "flat: no growth beyond allocator noise" if flat else "GROWING: look for a leak"
    lines = [
        f"# Soak, tutorial preset, {time.strftime('%Y-%m-%d')}",
        "",
        f"- machine: {machine()}; xpcnn {xpcnn.__version__}, NumPy {np.__version__}",
        f"- {args.epochs} epochs of the bundled subset ({len(data.train):,} images, batch 64, validation on "
        f"{len(data.test):,}) with a checkpoint each epoch, then {args.predictions:,} single-image predictions",
        "",
        "| after | seconds | resident MiB | peak MiB |",
        "|---|---|---|---|",
        *[f"| {name} | {seconds:.1f} | {rss:.1f} | {peak:.1f} |" for name, seconds, rss, peak in rows],
        "",
        f"Highest resident memory in epochs {half + 1}-{args.epochs} minus that in epochs 2-{half}: {growth:+.1f} MiB; "
        f"over the predictions: {prediction_growth:+.1f} MiB "
        f"({verdict}).",
    ]
    report = "\n".join(lines)
    print(report)
    if args.save:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "soak.md").write_text(report + "\n")


if __name__ == "__main__":
    main()
