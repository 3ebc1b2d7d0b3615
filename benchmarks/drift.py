"""How far xpcnn's float32 training drifts from PyTorch's on the residual presets.

    python benchmarks/drift.py [--images 2048] [--save]

`resnet20` and `cifar` (each with its recipe's optimizer: SGD with momentum, Nesterov and
weight decay, at its learning rate, no schedule), the same initial weights in xpcnn
(NumPy) and in its torch twin, one epoch of the same synthetic 3x32x32 batches (random
pixels normalised as CIFAR-10's, random labels), the label smoothing of the recipe, and
no augmentation or dropout, which would draw differently. Reported per step: both losses,
and the largest weight drift, max |w - w_torch| relative to the largest weight of the same
layer. In float64 the same comparison agrees to 1e-9 (tests/test_model.py); in float32 the
two libraries sum in different orders, and the drift is that rounding, grown by the
training's own sensitivity.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import release_openblas  # noqa: E402  (before NumPy is imported)

OPENBLAS_WAS = release_openblas()

import numpy as np  # noqa: E402
from common import blas_description, emit, machine, torch_twin  # noqa: E402

import xpcnn  # noqa: E402
from xpcnn import presets  # noqa: E402
from xpcnn.datasets import CIFAR10  # noqa: E402


def drift(model, twin) -> float:
    """Largest per-layer relative weight drift between an xpcnn network and its twin: a
    bias that stays near 0 is judged against its layer's weights, as in xpcnn.parity."""
    theirs = {name: value.numpy() for name, value in twin.state_dict().items()}
    layers: dict[str, list[str]] = {}
    for name in model.params:
        layers.setdefault(name.rpartition(".")[0], []).append(name)
    worst = 0.0
    for names in layers.values():
        scale = max(max(float(np.abs(theirs[name]).max()) for name in names), 1e-12)
        gap = max(float(np.abs(model.params[name] - theirs[name]).max()) for name in names)
        worst = max(worst, gap / scale)
    return worst


def train_both(name: str, images: int, batch: int, seed: int = 0) -> list[tuple[float, float, float]]:
    """(xpcnn loss, torch loss, weight drift) after each step of one epoch."""
    import torch

    model = presets.build(name, seed)
    twin = torch_twin(model)
    recipe = presets.recipe(name)
    settings = {"momentum": recipe.momentum, "nesterov": recipe.nesterov, "weight_decay": recipe.weight_decay}
    ours = xpcnn.optim.SGD(model, recipe.lr, **settings)
    theirs = torch.optim.SGD(twin.parameters(), recipe.lr, **settings)
    loss_fn = xpcnn.SoftmaxCrossEntropy(label_smoothing=recipe.label_smoothing)
    their_loss = torch.nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    rng = np.random.default_rng(seed)
    mean, std = np.reshape(CIFAR10.mean, (1, 3, 1, 1)), np.reshape(CIFAR10.std, (1, 3, 1, 1))
    rows = []
    for _ in range(images // batch):
        x = ((rng.integers(0, 256, (batch, 3, 32, 32)) / 255 - mean) / std).astype(np.float32)
        y = rng.integers(0, 10, batch)
        loss = float(loss_fn.forward(model.forward(x), y))
        model.backward(loss_fn.backward(), input_grad=False)
        ours.step()
        theirs.zero_grad()
        their = their_loss(twin(torch.from_numpy(x)), torch.from_numpy(y))
        their.backward()
        theirs.step()
        rows.append((loss, float(their), drift(model, twin)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2048, help="images in the epoch")
    parser.add_argument("--save", action="store_true", help="also write it under benchmarks/results/")
    args = parser.parse_args()
    import torch

    lines = [f"# float32 drift from PyTorch, resnet20 and cifar, {time.strftime('%Y-%m-%d')}", "",
             f"- machine: {machine()}; BLAS: {blas_description()}; PyTorch {torch.__version__}",
             f"- one epoch of {args.images:,} synthetic 3x32x32 images at each recipe's batch size; "
             "drift = max over layers of max|w - w_torch| / max|w_torch| of the layer", ""]
    for name in ("resnet20", "cifar"):
        batch = presets.recipe(name).batch_size
        rows = train_both(name, args.images, batch)
        lines += [f"## {name} (batch {batch}, {len(rows)} steps)", "", "| step | xpcnn loss | PyTorch loss | drift |",
                  "|---|---|---|---|"]
        lines += [f"| {step} | {ours:.6f} | {theirs:.6f} | {gap:.2e} |" for step, (ours, theirs, gap) in
                  enumerate(rows, 1)]
        lines.append("")
        print(lines[-3], file=sys.stderr, flush=True)
    emit("\n".join(lines), "drift", args.save)


if __name__ == "__main__":
    main()
