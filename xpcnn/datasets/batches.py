"""Mini-batches: shuffled per epoch from a seed, normalised on the host, then moved."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .. import backend
from .loading import Dataset


def num_batches(size: int, batch_size: int) -> int:
    """Batches per epoch; the last, partial batch is kept."""
    return -(-size // batch_size)


def epoch_order(size: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of one epoch: a function of (seed, epoch) alone, so a resumed run
    sees the same batches as an uninterrupted one."""
    return np.random.default_rng([seed, epoch]).permutation(size)


def batches(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    epoch: int = 0,
    start: int = 0,
    backend_name: str = "numpy",
    device: Any = None,
    dtype: str = "float32",
) -> Iterator[tuple[Any, Any]]:
    """Yield (images (n, 1, H, W), labels (n,) int64) on the backend, from batch `start` on."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = epoch_order(len(dataset), seed, epoch) if shuffle else np.arange(len(dataset))
    for index in range(start, num_batches(len(dataset), batch_size)):
        picked = order[index * batch_size : (index + 1) * batch_size]
        images = dataset.normalize(dataset.images[picked])
        yield (
            backend.to_backend(images, backend_name, device, dtype),
            backend.to_backend(dataset.labels[picked], backend_name, device),
        )
