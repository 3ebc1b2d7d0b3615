"""Mini-batches: shuffled per epoch from a seed, optionally shifted (augmentation),
normalised on the host, then moved to the backend."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .. import backend
from ..distributed import shard_bounds
from .loading import Dataset


def num_batches(size: int, batch_size: int) -> int:
    """Batches per epoch; the last, partial batch is kept."""
    return -(-size // batch_size)


def epoch_order(size: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of one epoch: a function of (seed, epoch) alone, so a resumed run
    sees the same batches as an uninterrupted one."""
    return np.random.default_rng([seed, epoch]).permutation(size)


def random_shifts(images: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Each image moved by its own random (dy, dx) in [-max_shift, max_shift], zero-filled:
    (n, H, W) -> (n, H, W). Digits stay digits when shifted a little, so the network
    learns position invariance instead of memorising positions."""
    n, h, w = images.shape
    padded = np.zeros((n, h + 2 * max_shift, w + 2 * max_shift), images.dtype)
    padded[:, max_shift : max_shift + h, max_shift : max_shift + w] = images
    offsets = rng.integers(0, 2 * max_shift + 1, size=(n, 2))
    rows = offsets[:, :1] + np.arange(h)  # (n, H)
    cols = offsets[:, 1:] + np.arange(w)  # (n, W)
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


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
    augment: int = 0,
    shard: tuple[int, int] = (0, 1),
) -> Iterator[tuple[Any, Any]]:
    """Yield (images (n, 1, H, W), labels (n,) int64) on the backend, from batch `start` on.

    `augment` > 0 shifts each image by up to that many pixels, drawn from (seed, epoch,
    batch), so a resumed run sees the same shifted images. `shard` (rank, size): yield
    only process `rank`'s slice of each batch (see distributed.shard_bounds), its shifts
    drawn for the whole batch, so N processes together see what one process would."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if augment < 0:
        raise ValueError(f"augment must be >= 0 pixels, got {augment}")
    order = epoch_order(len(dataset), seed, epoch) if shuffle else np.arange(len(dataset))
    for index in range(start, num_batches(len(dataset), batch_size)):
        picked = order[index * batch_size : (index + 1) * batch_size]
        lo, hi = shard_bounds(len(picked), *shard)
        if augment:
            everyone = random_shifts(dataset.images[picked], augment, np.random.default_rng([seed, epoch, index, 1]))
            raw = everyone[lo:hi]
        else:
            raw = dataset.images[picked[lo:hi]]
        picked = picked[lo:hi]
        images = dataset.normalize(raw)
        yield (
            backend.to_backend(images, backend_name, device, dtype),
            backend.to_backend(dataset.labels[picked], backend_name, device),
        )
