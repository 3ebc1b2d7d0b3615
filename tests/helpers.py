"""Input builders shared by the tests."""

from __future__ import annotations

import numpy as np


def distinct_values(shape: tuple[int, ...], rng: np.random.Generator, gap: float = 0.1) -> np.ndarray:
    """Values at least `gap` apart (a shuffled ramp), so no max-pool window has a near-tie
    that a finite difference of size 1e-6 could cross."""
    size = int(np.prod(shape))
    return (rng.permutation(size) - size / 2).reshape(shape) * gap


def away_from_zero(shape: tuple[int, ...], rng: np.random.Generator, margin: float = 0.05) -> np.ndarray:
    """Normal values pushed at least `margin` away from 0, the kink of ReLU."""
    values = rng.standard_normal(shape)
    return np.sign(values) * (np.abs(values) + margin) + (values == 0) * margin
