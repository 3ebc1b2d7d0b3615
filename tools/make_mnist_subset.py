"""Build the MNIST subset that ships inside xpcnn (xpcnn/datasets/data/).

Draws a stratified sample (each digit in its share of the full split) from the verified
full MNIST files and writes it as a compressed .npz with a JSON of checksums:

    python tools/make_mnist_subset.py --source ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
from pathlib import Path

import numpy as np

from xpcnn.datasets.files import find_file, load_verified
from xpcnn.datasets.loading import BUNDLED_CHECKSUMS, BUNDLED_FILE
from xpcnn.datasets.sources import MNIST

OUT = Path(__file__).resolve().parent.parent / "xpcnn" / "datasets" / "data"


def stratified(labels: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of `total` items with each class in its proportion (largest remainders)."""
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts / counts.sum() * total
    quota = np.floor(exact).astype(int)
    quota[np.argsort(exact - quota)[::-1][: total - quota.sum()]] += 1
    picked = [rng.choice(np.flatnonzero(labels == c), q, replace=False) for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picked))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="folder with the four MNIST IDX files")
    parser.add_argument("--train", type=int, default=10_000)
    parser.add_argument("--test", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = {}
    for key, file in MNIST.files.items():
        path = find_file(file, [args.source])
        if path is None:
            raise SystemExit(f"{file.name}(.gz) not found in {args.source}")
        data[key] = load_verified(path, file)
    rng = np.random.default_rng(args.seed)
    arrays = {}
    for split, size in (("train", args.train), ("test", args.test)):
        keep = stratified(data[f"{split}_labels"], size, rng)
        arrays[f"{split}_images"] = data[f"{split}_images"][keep]
        arrays[f"{split}_labels"] = data[f"{split}_labels"][keep].astype(np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    content = buffer.getvalue()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / BUNDLED_FILE).write_bytes(content)
    meta = {
        "sha256": hashlib.sha256(content).hexdigest(),
        "source": "MNIST (LeCun, Cortes, Burges), CC BY-SA 3.0; stratified sample, seed "
        f"{args.seed}, drawn by tools/make_mnist_subset.py",
        "arrays": {
            k: {"shape": list(v.shape), "dtype": str(v.dtype), "sha256": hashlib.sha256(v.tobytes()).hexdigest()}
            for k, v in arrays.items()
        },
    }
    (OUT / BUNDLED_CHECKSUMS).write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {OUT / BUNDLED_FILE} ({len(content):,} bytes)")


if __name__ == "__main__":
    main()
