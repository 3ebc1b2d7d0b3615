"""Gradient checking: analytic backward against central finite differences.

The error of a tensor is max|analytic - numeric| / max(max|analytic|, max|numeric|, floor):
a relative error in the max norm, which stays meaningful where single entries are near 0.
The floor, 1e-3 * max(1, sum|terms|), keeps a gradient that is truly zero (a bias
followed by batch norm) from being judged by the rounding noise of the finite
differences, about 1e-16 * sum|terms| / eps: the objective is a sum of terms (a layer's
outputs times a random probe), whose rounding grows with their magnitudes, not with
their sum, which may cancel.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from array_api_compat import array_namespace, device, is_array_api_obj

from .. import backend
from ..checks import number
from ..model import Sequential

_FLOOR = 1e-3


class GradcheckError(AssertionError):
    """Analytic and numeric gradients disagree beyond the tolerance."""


@dataclass
class GradcheckResult:
    """Relative error per checked tensor ("input", "weight", ...) and the worst of them."""

    errors: dict[str, float] = field(default_factory=dict)

    @property
    def worst(self) -> float:
        """The largest error; NaN where any is (max() would skip a NaN that is not first)."""
        if any(math.isnan(error) for error in self.errors.values()):
            return math.nan
        return max(self.errors.values(), default=0.0)

    def __str__(self) -> str:
        return ", ".join(f"{name}: {err:.2e}" for name, err in self.errors.items())


def relative_error(analytic: np.ndarray, numeric: np.ndarray, floor: float = _FLOOR) -> float:
    """max|a - n| / max(max|a|, max|n|, floor)."""
    scale = max(float(np.max(np.abs(analytic), initial=0.0)), float(np.max(np.abs(numeric), initial=0.0)))
    return float(np.max(np.abs(analytic - numeric), initial=0.0)) / max(scale, floor)


def _numeric_gradient(objective: Callable[[], float], array: Any, eps: float) -> np.ndarray:
    """d objective / d array by central differences, perturbing `array` in place."""
    grad = np.empty(tuple(array.shape))
    for index in np.ndindex(*grad.shape):
        original = float(array[index])
        array[index] = original + eps
        plus = objective()
        array[index] = original - eps
        minus = objective()
        array[index] = original
        grad[index] = (plus - minus) / (2 * eps)
    return grad


def _finish(result: GradcheckResult, tol: float, what: str, raise_on_fail: bool) -> GradcheckResult:
    # A NaN error fails: compared with `> tol` it would pass a backward that returns NaN.
    broken = [name for name, error in result.errors.items() if not math.isfinite(error)]
    if raise_on_fail and broken:
        raise GradcheckError(f"gradcheck of {what} failed: {', '.join(broken)}: NaN or Inf in the backward's gradient "
                             f"or in the finite differences (is the input finite?) ({result})")
    if raise_on_fail and result.worst > tol:
        raise GradcheckError(
            f"gradcheck of {what} failed: worst relative error {result.worst:.3e} > {tol:.1e} ({result})"
        )
    return result


def _require_float64(what: str, arrays: dict[str, Any]) -> None:
    """TypeError naming the first of `arrays` that is not float64, and how to convert it:
    a layer's arrays with .to(), an input with astype (the finite differences need the
    precision)."""
    for name, value in arrays.items():
        if backend.dtype_name(value.dtype) != "float64":
            how = ("convert it (NumPy: x.astype('float64'))" if name in ("input", "logits")
                   else "move the layer with .to(..., dtype='float64')")
            raise TypeError(f"gradcheck of {what} needs float64, but {name} is {value.dtype}; {how}")


def gradcheck(
    layer: Any,
    x: Any,
    *,
    eps: float = 1e-6,
    tol: float = 1e-6,
    seed: int = 0,
    raise_on_fail: bool = True,
) -> GradcheckResult:
    """Check a layer's (or a Sequential's) input and parameter gradients, in training
    (the mode backward is for: batch norm's batch statistics, dropout's mask).

    The layer is reduced to the scalar sum(forward(x) * r) with a fixed random r, whose
    gradient is backward(r). Every forward starts from the host state the layers have now
    (xpcnn.layers.Layer.extra_state), so dropout draws the same mask each time. `x` and
    the layer's arrays must be float64 (TypeError otherwise). Raises GradcheckError past
    `tol` unless `raise_on_fail` is off.
    """
    if not hasattr(layer, "forward") or not hasattr(layer, "params"):
        raise TypeError(f"gradcheck takes a layer or a Sequential, got {type(layer).__name__}")
    if not isinstance(layer, Sequential) and layer.branches():
        layer = Sequential([layer])  # a block's arrays live in its layers, which a network names
    eps, tol = number(eps, "gradcheck eps", 1e-300, 1.0), number(tol, "gradcheck tol", 0.0, math.inf)
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        raise TypeError(f"gradcheck x must be an array of the layer's backend, got {type(x).__name__}")
    _require_float64(_named(layer), {"input": x, **layer.params})
    xp = array_namespace(x)
    x = xp.asarray(x, copy=True)
    restore = _state_restorer(layer)
    y = layer.forward(x, True)
    probe_host = np.random.default_rng(seed).standard_normal(tuple(y.shape))
    probe = backend.to_backend(probe_host, backend.backend_of(x), device(x), "float64")
    floor = _FLOOR * max(1.0, float(xp.sum(xp.abs(y * probe))))  # the summed terms' magnitude
    given = {"input": layer.backward(probe), **layer.grads}
    _check_gradients(given, {"input": x, **layer.params}, _named(layer))
    analytic = {name: backend.to_numpy(grad) for name, grad in given.items()}
    as_after_one_step = _state_restorer(layer)  # what the layer is left as: one forward's state

    def objective() -> float:
        restore()
        return float(xp.sum(layer.forward(x, True) * probe))

    result = GradcheckResult()
    result.errors["input"] = relative_error(analytic["input"], _numeric_gradient(objective, x, eps), floor)
    for name, param in layer.params.items():
        result.errors[name] = relative_error(analytic[name], _numeric_gradient(objective, param, eps), floor)
    as_after_one_step()
    return _finish(result, tol, _named(layer), raise_on_fail)


def _named(layer: Any) -> str:
    """A layer's repr, or for a network one line: its layers' types."""
    if isinstance(layer, Sequential):
        return f"Sequential({', '.join(type(part).__name__ for part in layer)})"
    return repr(layer)


def _state_restorer(layer: Any) -> Callable[[], None]:
    """A function that puts back the state of `layer`, or of each layer of a network, as
    it is now: dropout's counter, so that every forward draws the same mask, and the
    buffers, so that a forward that reads one it updates (running statistics) computes
    the same function each time."""
    parts = list(layer) if isinstance(layer, Sequential) else [layer]
    saved = [part.extra_state() for part in parts]
    every = [part for _, part in layer.named_layers()] if isinstance(layer, Sequential) else [layer]
    buffers = [(part, key, _copy(value)) for part in every for key, value in part.buffers.items()]

    def restore() -> None:
        for part, state in zip(parts, saved):
            part.load_extra_state(state)
        for part, key, value in buffers:
            part.buffers[key] = _copy(value)

    return restore


def _copy(array: Any) -> Any:
    return array_namespace(array).asarray(array, copy=True)


def _check_gradients(given: dict[str, Any], arrays: dict[str, Any], what: str) -> None:
    """GradcheckError where backward gave no array of an array's shape and dtype (None, a
    list, float32 for float64): a broadcast comparison would report a made-up error, and
    training refuses such a gradient (Sequential.backward)."""
    for name, array in arrays.items():
        grad = given.get(name)
        if grad is None:
            missing = "returned no input gradient" if name == "input" else f"set no gradient for {name!r}"
            raise GradcheckError(f"gradcheck of {what}: backward {missing}")
        if not is_array_api_obj(grad):
            raise GradcheckError(f"gradcheck of {what}: the gradient of {name!r} is a {type(grad).__name__}, "
                                 "not an array")
        if tuple(grad.shape) != tuple(array.shape) or grad.dtype != array.dtype:
            raise GradcheckError(f"gradcheck of {what}: the gradient of {name!r} is {grad.dtype} "
                                 f"{tuple(grad.shape)}, the array {array.dtype} {tuple(array.shape)}")


def gradcheck_loss(
    loss: Any, logits: Any, labels: Any, *, eps: float = 1e-6, tol: float = 1e-6, raise_on_fail: bool = True
) -> GradcheckResult:
    """Check d(loss)/d(logits) of a loss with forward(logits, labels) and backward();
    `logits` must be float64 (TypeError otherwise)."""
    methods = [callable(getattr(loss, name, None)) for name in ("forward", "backward")]
    if isinstance(loss, type) or not all(methods):
        raise TypeError("gradcheck_loss takes a loss with forward(logits, labels) and backward() (an instance, such "
                        f"as SoftmaxCrossEntropy()), got {loss!r}")
    eps, tol = number(eps, "gradcheck_loss eps", 1e-300, 1.0), number(tol, "gradcheck_loss tol", 0.0, math.inf)
    for name, value in (("logits", logits), ("labels", labels)):
        if not is_array_api_obj(value):
            raise TypeError(f"gradcheck_loss {name} must be an array of the loss's backend, got {type(value).__name__}")
    _require_float64(repr(loss), {"logits": logits})
    xp = array_namespace(logits)
    logits = xp.asarray(logits, copy=True)
    loss.forward(logits, labels)
    analytic = backend.to_numpy(loss.backward())

    def objective() -> float:
        return float(loss.forward(logits, labels))

    floor = _FLOOR * max(1.0, abs(objective()))
    result = GradcheckResult({"logits": relative_error(analytic, _numeric_gradient(objective, logits, eps), floor)})
    return _finish(result, tol, repr(loss), raise_on_fail)
