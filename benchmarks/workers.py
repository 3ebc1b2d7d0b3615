"""Training-loop throughput: xpcnn's Trainer with 1 and 2 worker threads against a PyTorch
loop, same machine, same batches, taking turns.

    python benchmarks/workers.py [--presets lenet,fast,tutorial] [--repeats 5] [--save]

Each repeat trains one epoch of `--steps` batches of the same random images of the
preset's shape (uint8; digits normalised as MNIST, 3x32x32 pictures for resnet20, cifar and
compact) per contender, in rotating order: xpcnn's Trainer (NumPy,
`workers` 1 and 2; with 2, BLAS gets one thread per worker) and PyTorch (its default
threads, here all cores) running the same loop a user writes: batches from xpcnn's
iterator, zero_grad, forward, cross-entropy, backward, step, and .item() of the loss and
the correct count. The optimizer is each preset's recipe's, at a constant learning rate
(SGD with its momentum, Nesterov and weight decay, or Adam). Reports medians (min-max) of
images/s and the ratios to PyTorch.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import release_openblas  # noqa: E402  (before NumPy is imported)

OPENBLAS_WAS = release_openblas()

import numpy as np  # noqa: E402
from common import blas_description, emit, keep_freed_memory, machine, pytorch_loop_step, torch_twin  # noqa: E402

from xpcnn import presets  # noqa: E402
from xpcnn.datasets import MNIST, Dataset, batches  # noqa: E402
from xpcnn.train import Trainer  # noqa: E402


def xpcnn_epochs(preset: str, data: Dataset, batch: int, workers: int):
    """A function training one more epoch of `data` per call; returns its seconds."""
    model = presets.build(preset)
    recipe = presets.recipe(preset)
    optimizer = recipe.replace(schedule="constant").build_optimizer(model, 1)
    trainer = Trainer(model, optimizer, batch_size=batch, progress=False, log=lambda message: None, workers=workers)

    def epoch() -> float:
        trainer.fit(data, trainer.state.epoch + 1)
        return trainer.history[-1]["seconds"]

    return epoch


def pytorch_epochs(preset: str, data: Dataset, batch: int):
    import torch

    recipe = presets.recipe(preset)
    net = torch_twin(presets.build(preset))
    optimizer = (torch.optim.SGD(net.parameters(), recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
                                 weight_decay=recipe.weight_decay) if recipe.optimizer == "sgd"
                 else torch.optim.Adam(net.parameters(), recipe.lr, betas=recipe.betas or (0.9, 0.999),
                                       weight_decay=recipe.weight_decay))
    epochs = iter(range(10**6))

    def epoch() -> float:
        started = time.perf_counter()
        for x, y in batches(data, batch, seed=0, epoch=next(epochs)):
            pytorch_loop_step(net, optimizer, x, y)
        return time.perf_counter() - started

    return epoch


def measure(preset: str, batch: int, steps: int, repeats: int) -> dict[str, list[float]]:
    rng = np.random.default_rng(0)
    shape, labels = presets.DEFAULT_SHAPES[preset], rng.integers(0, 10, steps * batch)
    if shape == presets.DIGITS:
        data = Dataset(rng.integers(0, 256, (steps * batch, 28, 28), dtype=np.uint8), labels, MNIST)
    else:  # random pictures of the preset's own shape
        data = Dataset.from_arrays(rng.integers(0, 256, (steps * batch, *shape), dtype=np.uint8), labels, 10)
    contenders = {"xpcnn, 1 worker": xpcnn_epochs(preset, data, batch, 1),
                  "xpcnn, 2 workers": xpcnn_epochs(preset, data, batch, 2),
                  "PyTorch": pytorch_epochs(preset, data, batch)}
    for epoch in contenders.values():  # warm-up
        epoch()
    speeds: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for turn in range(repeats):
        for name in names[turn % 3:] + names[: turn % 3]:
            speeds[name].append(len(data) / contenders[name]())
    return speeds


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def ratio(mine: list[float], theirs: list[float]) -> str:
    values = [a / b for a, b in zip(mine, theirs)]
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def table_lines(preset_names: list[str], batch_sizes: list[int], images: int, repeats: int) -> list[str]:
    """The table: per preset and batch size, images/s of each contender and the ratios."""
    lines = ["| preset | batch | xpcnn, 1 worker | xpcnn, 2 workers | PyTorch | 1 worker / PyTorch | "
             "2 workers / PyTorch |", "|---|---|---|---|---|---|---|"]
    for preset in preset_names:
        for batch in batch_sizes:
            speeds = measure(preset, batch, max(1, images // batch), repeats)
            one, two, theirs = speeds["xpcnn, 1 worker"], speeds["xpcnn, 2 workers"], speeds["PyTorch"]
            lines.append(f"| {preset} | {batch} | {fmt(one)} | {fmt(two)} | {fmt(theirs)} | {ratio(one, theirs)} | "
                         f"{ratio(two, theirs)} |")
            print(lines[-1], file=sys.stderr, flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="lenet,fast,tutorial")
    parser.add_argument("--batches", default="64,256")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=4096, help="images per epoch (one timed repeat)")
    parser.add_argument("--save", action="store_true", help="also write it under benchmarks/results/")
    args = parser.parse_args()
    import torch

    lines = [f"# Training-loop throughput: xpcnn's Trainer (1 and 2 workers) vs PyTorch, {time.strftime('%Y-%m-%d')}",
             "", f"- machine: {machine()}; BLAS: {blas_description()}; PyTorch {torch.__version__} with "
             f"{torch.get_num_threads()} threads",
             "- OpenBLAS overrides before this run: "
             + (", ".join(f"{k}={v}" for k, v in OPENBLAS_WAS.items() if v) or "none") + " (unset here)",
             keep_freed_memory(),
             f"- one epoch of {args.images:,} images per repeat, {args.repeats} repeats in rotating order, "
             "median (min-max) images/s", ""]
    lines += table_lines(args.presets.split(","), [int(size) for size in args.batches.split(",")], args.images,
                         args.repeats)
    text = "\n".join(lines)
    emit(text, "workers", args.save)

if __name__ == "__main__":
    main()
