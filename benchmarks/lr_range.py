"""How good the learning-rate range test's suggestion is: for each preset, the rate
`xpcnn train --find-lr` suggests, then the preset's recipe trained at that rate, at a
third and a tenth of it (other rules of thumb), and at the recipe's own tuned rate.

    python benchmarks/lr_range.py [--presets tutorial,lenet,fast] [--data-dir DIR] [--seed 0] [--save]

Without --data-dir it reads the MNIST subset inside the package. Each training run is
`xpcnn train --model P --lr R` (start_run, then fit and finish): the test accuracy on
the data's test split. Accuracy does not depend on the machine's speed; no timing is made.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, machine  # noqa: E402

from xpcnn import presets  # noqa: E402
from xpcnn.train import find_lr, start_run  # noqa: E402


def quiet(message: str) -> None:
    """The runs' notes: not needed in the report."""


def run(preset: str, lr: float | None, data_dir: str | None, seed: int) -> tuple[Any, Any]:
    """(trainer, splits) of a new run of `preset` at rate `lr` (None: the recipe's)."""
    recipe = presets.recipe(preset).replace(lr=lr)
    return start_run(preset, recipe, data_dir=data_dir, download=False, seed=seed, progress=False, log=quiet)


def measure(preset: str, data_dir: str | None, seed: int) -> list[str]:
    """The report's rows of one preset: the suggestion, then the accuracy at each rate."""
    trainer, (train, _, _) = run(preset, None, data_dir, seed)
    found = find_lr(trainer, train)
    print(f"{preset}: suggested {found.suggested}", file=sys.stderr, flush=True)
    if found.suggested is None:
        return [f"| {preset} | none: the loss fell at no rate | | |"]
    rows = []
    own = presets.recipe(preset).lr
    for label, lr in (("suggested", found.suggested), ("a third of it", found.suggested / 3),
                      ("a tenth of it", found.suggested / 10), ("the recipe's", own)):
        trainer, (train, val, test) = run(preset, lr, data_dir, seed)
        trainer.fit(train, trainer.epochs, val)
        accuracy = trainer.finish(test)["accuracy"]
        print(f"  {label} {lr:.3g}: {accuracy:.2%}", file=sys.stderr, flush=True)
        rows.append(f"| {preset} | {label} | {lr:.2g} | {accuracy:.2%} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tutorial,lenet,fast")
    parser.add_argument("--data-dir", help="full MNIST's files (default: the bundled subset)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", action="store_true", help="write the report to benchmarks/results/")
    args = parser.parse_args()
    data = f"MNIST from {args.data_dir}" if args.data_dir else "the bundled MNIST subset (10,000 train / 2,000 test)"
    lines = [f"# The learning-rate range test's suggestion, trained ({time.strftime('%Y-%m-%d')})", "",
             f"- machine: {machine()}", f"- data: {data}; seed {args.seed}; each preset's recipe but for the rate",
             "- the suggestion: `find_lr` (100 steps from 1e-7 to 10), the rate of the lowest smoothed loss", "",
             "| preset | rate | value | test accuracy |", "|---|---|---|---|"]
    for preset in args.presets.split(","):
        lines += measure(preset, args.data_dir, args.seed)
    emit("\n".join(lines), "lr-range", args.save)


if __name__ == "__main__":
    main()
