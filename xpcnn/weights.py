"""Weights by name, to and from other libraries: a network's state as PyTorch names it.

xpcnn names parameters the way torch.nn.Sequential does ("<index>.<name>"; inside a
Residual block "<index>.body.<index>.<name>", as a torch module with `body` and
`shortcut` nn.Sequentials names them) and keeps
PyTorch's layouts (Conv2d (O, C, kh, kw), Linear (out, in), BatchNorm2d's running
statistics), so a torch.nn.Sequential with the same layers in the same order exchanges
weights with an xpcnn Sequential through these two functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from . import backend

COUNTER = "num_batches_tracked"  # BatchNorm2D's count of training batches, an integer in PyTorch


def state_dict(model: Any) -> dict[str, np.ndarray]:
    """Parameters, buffers and batch-norm counters of `model` as host NumPy copies, in
    torch's order: layer by layer, each layer's parameters, then buffers, then counter."""
    state = {}
    for position, layer in model.named_layers():
        for key, value in {**layer.params, **layer.buffers}.items():
            state[f"{position}.{key}"] = backend.to_numpy(value).copy()
        if COUNTER in layer.extra_state():
            state[f"{position}.{COUNTER}"] = np.asarray(layer.extra_state()[COUNTER], np.int64)
    return state


def _host(key: str, value: Any) -> np.ndarray:
    """`value` as a host array; TypeError naming `key` where it is no array."""
    try:
        return backend.to_numpy(value)
    except TypeError as exc:
        raise TypeError(f"load_state_dict: {key}: {exc}") from None


def _value_problems(host: dict[str, np.ndarray], own: dict[str, Any], counters: dict[str, Any],
                    dtype: str) -> list[str]:
    """What of `host` could not be loaded as it is: an array of `own` that is not real
    numbers, or not finite in `dtype` (the cast would discard an imaginary part, or
    overflow to Inf, with only a warning), and a counter that is no count."""
    problems = []
    for key in [key for key in own if key in host]:
        value = host[key]
        if value.dtype.kind not in "fiu":
            problems.append(f"{key}: {value.dtype} values, not real numbers")
        else:
            with np.errstate(over="ignore", invalid="ignore"):
                if not np.all(np.isfinite(value.astype(dtype))):
                    problems.append(f"{key}: values that are not finite in {dtype} (NaN, Inf or too large)")
    for key in [key for key in counters if key in host]:
        value = host[key]
        if value.shape != () or value.dtype.kind not in "iu" or int(value) < 0:
            problems.append(f"{key}: must be a count, one integer >= 0, got {value.dtype} of shape {value.shape}"
                            f"{f' ({value.item()!r})' if value.size == 1 else ''}")
    return problems


def load_state_dict(model: Any, state: dict[str, Any], strict: bool = True) -> None:
    """Set `model`'s parameters, buffers and counters from `state` (arrays or tensors of
    any backend), on the model's backend, device and dtype. Nothing is changed when a key,
    shape or value does not fit: ValueError lists them."""
    own = {**model.params, **model.buffers}
    counters = {f"{position}.{COUNTER}": layer for position, layer in model.named_layers()
                if COUNTER in layer.extra_state()}
    if not isinstance(state, Mapping):
        hint = " (a torch module: pass module.state_dict())" if hasattr(state, "state_dict") else ""
        raise TypeError(f"load_state_dict takes a mapping of names to arrays{hint}, got {type(state).__name__}")
    host = {key: _host(key, value) for key, value in state.items()}
    problems = [f"{key}: shape {tuple(host[key].shape)}, this network needs {tuple(own[key].shape)}"
                for key in own if key in host and tuple(host[key].shape) != tuple(own[key].shape)]
    if strict:
        problems += [f"missing {key}" for key in [*own, *counters] if key not in host]
        problems += [f"unexpected {key}" for key in host if key not in own and key not in counters]
    place = model.backend, model.device, model.dtype  # each asks every array: once, not once a key
    problems += _value_problems(host, own, counters, place[2])
    if problems:
        raise ValueError("load_state_dict: " + "; ".join(problems))
    model.set_arrays({key: backend.to_backend(value, *place) for key, value in host.items() if key in own})
    for key, value in host.items():
        if key in counters:
            counters[key].load_extra_state({COUNTER: int(value)})
