"""Initial values and random masks, drawn on the host so every backend gets the same.

Weights come from a seeded NumPy Generator and are then moved to the backend: the same
seed gives the same network on NumPy, CuPy, PyTorch and array-api-strict. A layer given
no generator (`rng=None`) draws from the library's own, which `xpcnn.seed(n)` seeds (0
when xpcnn is imported), as torch.manual_seed does for PyTorch: successive layers differ,
and a script that seeds first builds the same network every time. Dropout masks are drawn
from (seed, call), so that every backend and a resumed run draw the same masks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from . import distributed
from .checks import integer

_library = [np.random.default_rng(0)]  # the generator of layers given none (a list: using() swaps it)


def seed(value: int) -> None:
    """Seed the generator that layers built without `rng=` (and Dropout without `seed=`)
    draw from: the same seed, the same network, on every backend."""
    _library[0] = np.random.default_rng(_checked_seed(value, "seed"))


def _checked_seed(value: object, what: str, kinds: str = "an integer") -> int:
    """`value` as a seed, an integer >= 0 (not a bool: True would seed with 1); TypeError
    (saying it must be `kinds`) or ValueError naming `what` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{what} must be {kinds}, got {value!r}")
    return integer(value, what, 0)


def host_rng(seed: int | np.random.Generator | None, what: str = "rng") -> np.random.Generator:
    """A NumPy Generator: the given one, a new one seeded with `seed` (an integer >= 0,
    else TypeError or ValueError naming `what`), or for None the library's own (see
    `seed`), which every layer given none advances."""
    if isinstance(seed, np.random.Generator):
        return seed
    return _library[0] if seed is None else np.random.default_rng(
        _checked_seed(seed, what, "an integer seed or a numpy.random.Generator"))


@contextlib.contextmanager
def using(generator: np.random.Generator) -> Iterator[None]:
    """Layers built inside the block without `rng=` draw from `generator`, not from the
    library's: what rebuilding a saved network does (its values are replaced anyway), so
    that loading a checkpoint changes no network a script builds next."""
    saved, _library[0] = _library[0], generator
    try:
        yield
    finally:
        _library[0] = saved


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
