"""Mini-batches: shuffled per epoch from a seed, optionally changed at random
(augmentation: shifts, crops, flips), normalised on the host, then moved to the backend."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import backend
from ..checks import flag, integer
from ..distributed import shard_bounds
from .dataset import Dataset


def num_batches(size: int, batch_size: int) -> int:
    """Batches per epoch; the last, partial batch is kept."""
    return -(-size // batch_size)


def epoch_order(size: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of one epoch: a function of (seed, epoch) alone, so a resumed run
    sees the same batches as an uninterrupted one."""
    return np.random.default_rng([seed, epoch]).permutation(size)


@dataclass(frozen=True)
class Augment:
    """Random changes to training images, drawn on the host from (seed, epoch, batch) for
    the whole batch, so every backend, worker and MPI rank sees the same images: each
    image cut at a random place out of itself padded by `pixels` on every side (a shift
    by up to `pixels`; padded with zeros, or with `pad="reflect"` the image mirrored at its
    edges), then, with `flip`, mirrored left to right with probability 1/2. Shifts suit
    digits; crops with reflection and flips suit photos (a mirrored "3" is no digit)."""

    pixels: int = 0
    pad: str = "zero"
    flip: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.pixels, bool) or not isinstance(self.pixels, (int, np.integer)) or self.pixels < 0:
            raise ValueError(f"augment pixels must be an integer >= 0, got {self.pixels!r}")
        if self.pad not in PADS:
            raise ValueError(f"augment pad must be one of {', '.join(PADS)}, got {self.pad!r}")
        object.__setattr__(self, "pixels", int(self.pixels))  # Python's, which a run's record (JSON) keeps
        object.__setattr__(self, "flip", flag(self.flip, "augment flip"))

    @classmethod
    def of(cls, value: int | Augment) -> Augment:
        """An Augment as given, or for an integer n shifts of up to n pixels."""
        return value if isinstance(value, Augment) else cls(value)

    def __bool__(self) -> bool:
        return bool(self.pixels or self.flip)

    def __str__(self) -> str:
        parts = []
        if self.pixels:
            parts.append(f"{'shifts' if self.pad == 'zero' else 'reflected crops'} of up to {self.pixels} px")
        if self.flip:
            parts.append("flips")
        return " and ".join(parts) or "none"

    def apply(self, images: np.ndarray, seed: int, epoch: int, batch: int) -> np.ndarray:
        """`images` (n, C, H, W) changed as drawn for batch `batch` of `epoch`."""
        if self.pixels:
            images = random_crops(images, self.pixels, self.pad, np.random.default_rng([seed, epoch, batch, 1]))
        if self.flip:
            mirrored = np.random.default_rng([seed, epoch, batch, 2]).random(images.shape[0]) < 0.5
            images = np.where(mirrored[:, None, None, None], images[..., ::-1], images)
        return images


PADS = ("zero", "reflect")


def random_crops(images: np.ndarray, pixels: int, pad: str, rng: np.random.Generator) -> np.ndarray:
    """Each image (n, C, H, W) padded by `pixels` on every side (zeros, or reflected) and
    cut back to (H, W) at its own random offset: a random shift by up to `pixels` in each
    direction, so the network learns that position does not change the class."""
    n, c, h, w = images.shape
    if pad == "zero":
        padded = np.zeros((n, c, h + 2 * pixels, w + 2 * pixels), images.dtype)
        padded[:, :, pixels : pixels + h, pixels : pixels + w] = images
    else:
        padded = np.pad(images, ((0, 0), (0, 0), (pixels, pixels), (pixels, pixels)), mode="reflect")
    offsets = rng.integers(0, 2 * pixels + 1, size=(n, 2))
    cropped = np.empty_like(images)
    for k, (top, left) in enumerate(offsets):  # a slice per image: 3x faster than one gather of them all
        cropped[k] = padded[k, :, top : top + h, left : left + w]
    return cropped


def _checked_shard(shard: Any) -> tuple[int, int]:
    """`shard` as (rank, size) of Python ints, 0 <= rank < size."""
    if not isinstance(shard, (tuple, list)) or len(shard) != 2:
        raise TypeError(f"shard must be a pair (rank, size), got {shard!r}")
    rank, size = integer(shard[0], "shard rank", 0), integer(shard[1], "shard size", 1)
    if rank >= size:
        raise ValueError(f"shard rank must be below the size, {size}, got {rank}")
    return rank, size


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
    augment: int | Augment = 0,
    shard: tuple[int, int] = (0, 1),
) -> Iterator[tuple[Any, Any]]:
    """Yield (images (n, C, H, W), labels (n,) int64) on the backend, from batch `start` on.

    `augment` (an Augment, or n: shifts of up to n pixels) changes the images as drawn
    from (seed, epoch, batch), so a resumed run sees the same images. `shard` (rank,
    size): yield only process `rank`'s slice of each batch (see distributed.shard_bounds),
    its changes drawn for the whole batch, so N processes together see what one would."""
    if not isinstance(dataset, Dataset):
        raise TypeError(f"batches takes a Dataset (Dataset.from_arrays(images, labels) makes one), got "
                        f"{type(dataset).__name__}")
    batch_size = integer(batch_size, "batch_size", 1)
    seed, epoch, start = (integer(value, what, 0) for value, what in ((seed, "seed"), (epoch, "epoch"),
                                                                     (start, "start")))
    augment, shard = Augment.of(augment), _checked_shard(shard)
    order = epoch_order(len(dataset), seed, epoch) if shuffle else np.arange(len(dataset))
    for index in range(start, num_batches(len(dataset), batch_size)):
        picked = order[index * batch_size : (index + 1) * batch_size]
        lo, hi = shard_bounds(len(picked), *shard)
        if augment:
            raw = augment.apply(dataset.images[picked], seed, epoch, index)[lo:hi]
        else:
            raw = dataset.images[picked[lo:hi]]
        picked = picked[lo:hi]
        images = dataset.normalize(raw, "float32" if dtype is None else dtype)  # None: to_backend keeps float32
        yield (
            backend.to_backend(images, backend_name, device, dtype),
            backend.to_backend(dataset.labels[picked], backend_name, device),
        )
