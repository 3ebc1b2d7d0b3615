"""Inverted dropout with reproducible masks."""

from __future__ import annotations

from typing import Any

from .. import backend, capture, init
from ..checks import integer, number
from .base import Layer


class Dropout(Layer):
    """Training: y = x * mask / (1 - p), mask ~ Bernoulli(1 - p); evaluation: y = x.

    The n-th training mask is drawn on the host from (seed, n), so a seed gives the same
    masks on every backend and after a checkpoint resume (the counter is saved state).
    Without `seed`, it is drawn from the library's generator (xpcnn.seed): two dropout
    layers draw different masks.
    """

    def __init__(self, p: float = 0.5, *, seed: int | None = None) -> None:
        super().__init__()
        self.p = number(p, "Dropout p", 0.0, 1.0, high_included=False)
        if seed is None:  # drawn from the library's generator, as a layer's weights are (xpcnn.seed)
            seed = int(init.host_rng(None).integers(2**31))
        self.seed, self.calls = integer(seed, "Dropout seed", 0), 0

    def config(self) -> dict[str, Any]:
        return {"p": self.p, "seed": self.seed}

    def extra_state(self) -> dict[str, int]:
        return {"calls": self.calls}

    def load_extra_state(self, state: dict[str, int]) -> None:
        if set(state) != {"calls"} or not isinstance(state["calls"], int) or state["calls"] < 0:
            raise ValueError(f"{self!r}: expected extra state {{'calls': int >= 0}}, got {state!r}")
        self.calls = state["calls"]

    def forward(self, x: Any, training: bool = True) -> Any:
        self._namespace(x)
        if not training or self.p == 0.0:
            return self._save_for_backward(training, None, x)
        # Drawn on the host for every step, also when the step is a recorded CUDA graph.
        mask = capture.from_host(lambda: self._next_mask(tuple(x.shape)), x)
        y, scaled_mask = backend.fast_path(apply_mask, x)(x, mask, self.p)
        return self._save_for_backward(training, scaled_mask, y)

    def _next_mask(self, shape: tuple[int, ...]) -> Any:
        mask = init.keep_mask(self.seed, self.calls, self.p, shape)
        self.calls += 1
        return mask

    def backward(self, dy: Any) -> Any:
        scaled_mask = self._saved_for_backward(dy)
        return dy if scaled_mask is None else dy * scaled_mask


def apply_mask(x: Any, mask: Any, p: float) -> tuple[Any, Any]:
    """x * mask / (1 - p) for a keep-mask of 0 and 1 in x's dtype and shape, and the
    scaled mask, which the gradient multiplies by."""
    scaled_mask = mask / (1 - p)
    return x * scaled_mask, scaled_mask
