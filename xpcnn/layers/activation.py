"""Element-wise activations. Each caches what its derivative needs: its output, or for ReLU a 0/1 mask."""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace, device

from .. import backend
from .base import Layer


class ReLU(Layer):
    """y = max(x, 0); dy passes where y > 0 (the subgradient at 0 is 0, as in PyTorch)."""

    def forward(self, x: Any, training: bool = True) -> Any:
        self._namespace(x)
        y, mask = relu(x, training)
        return self._save_for_backward(training, mask, y)

    def backward(self, dy: Any) -> Any:
        return dy * self._saved_for_backward(dy)


def relu(x: Any, training: bool) -> tuple[Any, Any]:
    """max(x, 0), and when training the mask that the gradient is multiplied by."""
    xp = array_namespace(x)
    y = xp.maximum(x, xp.zeros((), dtype=x.dtype, device=device(x)))
    # The mask of the derivative, made while y is fresh in the cache; backward
    # multiplies by it (NumPy's where is several times slower on random masks).
    return y, (backend.fast_path(positive, y)(y) if training else None)


def positive(y: Any) -> Any:
    """Where y > 0, as 0 and 1 in y's dtype (the standard multiplies no float by a bool)."""
    return array_namespace(y).astype(y > 0, y.dtype)


class Tanh(Layer):
    """y = tanh(x); dx = dy * (1 - y^2)."""

    def forward(self, x: Any, training: bool = True) -> Any:
        xp = self._namespace(x)
        y = xp.tanh(x)
        return self._save_for_backward(training, y, y)

    def backward(self, dy: Any) -> Any:
        y = self._saved_for_backward(dy)
        return dy * (1 - y * y)


class Sigmoid(Layer):
    """y = 1 / (1 + exp(-x)), computed without overflow; dx = dy * y * (1 - y)."""

    def forward(self, x: Any, training: bool = True) -> Any:
        xp = self._namespace(x)
        # exp(-|x|) <= 1 never overflows; both branches of the where are finite.
        e = xp.exp(-xp.abs(x))
        y = xp.where(x >= 0, 1 / (1 + e), e / (1 + e))
        return self._save_for_backward(training, y, y)

    def backward(self, dy: Any) -> Any:
        y = self._saved_for_backward(dy)
        return dy * y * (1 - y)
