"""Anomaly detection: find where the first NaN or Inf of a step appeared.

Opt-in (`Trainer(anomaly=True)`, `xpcnn train --detect-anomaly`), like PyTorch's
detect_anomaly: every layer's output, input gradient and parameter gradients are checked,
at the price of one scalar transfer per check.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace

from .model import Sequential


class NonFiniteError(FloatingPointError):
    """A NaN or Inf appeared; the message names the step, the layer and the quantity."""


def check_finite(array: Any, where: str) -> None:
    """Raise NonFiniteError naming `where` if `array` holds a NaN or an Inf."""
    xp = array_namespace(array)
    if xp.isdtype(array.dtype, "real floating") and not bool(xp.all(xp.isfinite(array))):
        nan = int(xp.sum(xp.astype(xp.isnan(array), xp.int64)))
        inf = int(xp.sum(xp.astype(xp.isinf(array), xp.int64)))
        total = 1
        for size in array.shape:
            total *= size
        raise NonFiniteError(f"{where}: {nan} NaN and {inf} Inf among {total:,} values")


def _name(index: int, layer: Any) -> str:
    return f"layer {index} ({type(layer).__name__})"


def forward_checked(model: Sequential, x: Any, training: bool, step: str) -> Any:
    """model.forward, checking the input and each layer's output."""
    check_finite(x, f"{step}: the input batch")
    for index, layer in enumerate(model):
        x = layer.forward(x, training)
        check_finite(x, f"{step}: output of {_name(index, layer)} in forward")
    return x


def backward_checked(model: Sequential, dy: Any, step: str, input_grad: bool = True) -> Any:
    """model.backward, checking each layer's input gradient and parameter gradients."""
    check_finite(dy, f"{step}: gradient of the loss")
    for index in reversed(range(len(model))):
        layer = model[index]
        dy = model.backward_layer(index, dy, input_grad)
        for key, grad in layer.grads.items():
            check_finite(grad, f"{step}: gradient of {_name(index, layer)} {key} in backward")
        if dy is not None:
            check_finite(dy, f"{step}: input gradient of {_name(index, layer)} in backward")
    return dy
