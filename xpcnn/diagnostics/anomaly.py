"""Anomaly detection: find where the first NaN or Inf of a step appeared.

Opt-in (`Trainer(anomaly=True)`, `xpcnn train --detect-anomaly`), like PyTorch's
detect_anomaly: `AnomalyHook`, attached with `model.hooked(...)`, checks every layer's
output, running statistics, input gradient and parameter gradients, at the price of one
scalar transfer per check.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace, is_array_api_obj

from ..hooks import LayerHook, Position


class NonFiniteError(FloatingPointError):
    """A NaN or Inf appeared; the message names the step, the layer and the quantity."""


def check_finite(array: Any, where: str) -> None:
    """Raise NonFiniteError naming `where` if `array` holds a NaN or an Inf."""
    if not is_array_api_obj(array):
        raise TypeError(f"check_finite takes an array, got {type(array).__name__} ({where})")
    xp = array_namespace(array)
    if xp.isdtype(array.dtype, "real floating") and not bool(xp.all(xp.isfinite(array))):
        nan = int(xp.sum(xp.astype(xp.isnan(array), xp.int64)))
        inf = int(xp.sum(xp.astype(xp.isinf(array), xp.int64)))
        total = 1
        for size in array.shape:
            total *= size
        raise NonFiniteError(f"{where}: {nan} NaN and {inf} Inf among {total:,} values")


def _name(index: Position, layer: Any) -> str:
    return f"layer {index} ({type(layer).__name__})"


class AnomalyHook(LayerHook):
    """Checks the input batch, every layer's output and running statistics, the loss
    gradient, and every input and parameter gradient; `step` names where in training the
    check ran."""

    def __init__(self, step: str = "this step") -> None:
        self.step = step
        self._loss_gradient_checked = False

    def before_forward(self, index: Position, layer: Any, x: Any) -> None:
        if index == 0:
            check_finite(x, f"{self.step}: the input batch")
            self._loss_gradient_checked = False

    def after_forward(self, index: Position, layer: Any, y: Any) -> None:
        check_finite(y, f"{self.step}: output of {_name(index, layer)} in forward")
        for key, value in layer.buffers.items():  # batch norm's running variance can overflow while y stays finite
            check_finite(value, f"{self.step}: {key} of {_name(index, layer)} after forward")

    def before_backward(self, index: Position, layer: Any, dy: Any) -> None:
        if not self._loss_gradient_checked:  # later layers' dy was checked as an input gradient
            check_finite(dy, f"{self.step}: gradient of the loss")
            self._loss_gradient_checked = True

    def after_backward(self, index: Position, layer: Any, dx: Any) -> None:
        for key, grad in layer.grads.items():
            check_finite(grad, f"{self.step}: gradient of {_name(index, layer)} {key} in backward")
        if dx is not None:
            check_finite(dx, f"{self.step}: input gradient of {_name(index, layer)} in backward")
