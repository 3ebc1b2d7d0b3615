"""Element-wise activations. Each caches what its derivative needs: its output, for ReLU a 0/1 mask, for
GELU its input (clipped) and the tanh of its inner term."""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import array_namespace, device

from .. import backend
from .base import Layer


class ReLU(Layer):
    """y = max(x, 0); dy passes where y > 0 (the subgradient at 0 is 0, as in PyTorch)."""

    def forward(self, x: Any, training: bool = True) -> Any:
        self._namespace(x)
        y, mask = backend.fast_path(relu, x)(x, training)
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


GELU_SCALE = math.sqrt(2 / math.pi)
GELU_CUBIC = 0.044715
# Beyond |x| = 20 the tanh of GELU is exactly +-1 in float32 and float64 (its argument is
# over 300), so the cubic is taken of x clipped there: the same values, and no overflow
# (x^3 overflows float32 beyond |x| ~ 7e12, and x^2 times a zero (1 - t^2) would be NaN).
GELU_BOUND = 20.0


class GELU(Layer):
    """GELU's tanh form, as torch.nn.GELU(approximate="tanh"): y = 0.5 x (1 + t) with
    t = tanh(sqrt(2/pi) (x + 0.044715 x^3)); dx = dy * (0.5 (1 + t) + 0.5 x (1 - t^2)
    sqrt(2/pi) (1 + 3 * 0.044715 x^2)). For any finite x, y and dx are finite: y = x and
    dx = dy for large positive x, 0 for large negative (torch's gradient is NaN beyond
    |x| ~ 1e13 in float32)."""

    def forward(self, x: Any, training: bool = True) -> Any:
        self._namespace(x)
        # Resolved together, so that the gradient reads what this forward saved.
        forward, gradient = (backend.fast_path(f, x) for f in (gelu, gelu_gradient))
        y, saved = forward(x, training)
        return self._save_for_backward(training, (gradient, saved), y)

    def backward(self, dy: Any) -> Any:
        gradient, saved = self._saved_for_backward(dy)
        return gradient(dy, saved)


def gelu(x: Any, training: bool) -> tuple[Any, Any]:
    """GELU's output for x and, when training, what its gradient needs (None otherwise)."""
    xp = array_namespace(x)
    near = xp.clip(x, -GELU_BOUND, GELU_BOUND)  # (N, ...): x where t is not yet +-1
    t = xp.tanh(GELU_SCALE * (near + GELU_CUBIC * (near * near * near)))  # (N, ...), in [-1, 1]
    y = 0.5 * x * (1 + t)  # (N, ...): x itself, not `near`, so that y = x for large x
    return y, ((near, t) if training else None)


def gelu_gradient(dy: Any, saved: Any) -> Any:
    """d(loss)/dx from dy and what `gelu` saved."""
    near, t = saved  # (N, ...) each, dy's shape
    # Where x was clipped t is +-1: the second term is 0 there, as it is for x itself.
    slope = GELU_SCALE * (1 + (3 * GELU_CUBIC) * (near * near))  # d/dx of t's argument
    return dy * (0.5 * (1 + t) + 0.5 * near * (1 - t * t) * slope)
