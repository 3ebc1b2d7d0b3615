"""Initial values and random masks, drawn on the host so every backend gets the same.

Weights come from a seeded NumPy Generator and are then moved to the backend: the same
seed gives the same network on NumPy, CuPy, PyTorch and array-api-strict. Dropout masks
are drawn from (seed, call) for the same reason, and so that a resumed run draws the
masks an uninterrupted one would.
"""

from __future__ import annotations

import numpy as np

from . import distributed


def host_rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    """A NumPy Generator: the given one, or a new one seeded with `seed` (0 for None)."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(0 if seed is None else seed)


def kaiming_normal(shape: tuple[int, ...], fan_in: int, rng: np.random.Generator) -> np.ndarray:
    """He/Kaiming normal weights, std sqrt(2 / fan_in), drawn on the host (NumPy float32).

    Drawn in float64 and rounded once, so a float64 copy of the same network differs from
    the float32 one only by that rounding.
    """
    values = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
    return values.astype(np.float32)


def fan_in_uniform(shape: tuple[int, ...], fan_in: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform in [-1/sqrt(fan_in), 1/sqrt(fan_in)], drawn on the host (NumPy float32):
    PyTorch's default for the weights and biases of Conv2d and Linear."""
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, shape).astype(np.float32)


def zeros(shape: tuple[int, ...]) -> np.ndarray:
    """Host zeros (NumPy float32): the starting value of biases and running means."""
    return np.zeros(shape, dtype=np.float32)


def ones(shape: tuple[int, ...]) -> np.ndarray:
    """Host ones (NumPy float32): the starting value of scales and running variances."""
    return np.ones(shape, dtype=np.float32)


def keep_mask(seed: int, call: int, p: float, shape: tuple[int, ...]) -> np.ndarray:
    """A host keep-mask of `shape` (1.0 kept, 0.0 dropped, float64), each value kept with
    probability 1 - p.

    Drawn from (seed, call), so the n-th mask of a seed is the same on every backend and
    after a resume, whatever happened in between.
    """
    rng = np.random.default_rng([seed, call])
    # In data-parallel training, drawn for the whole batch and sliced: N processes see
    # the masks one process would (see xpcnn.distributed).
    rows = int(shape[0])
    start, total = distributed.batch_rows(rows)
    return (rng.random((total, *shape[1:]))[start : start + rows] >= p).astype(np.float64)
