"""An xpcnn network as a torch.nn module with the same structure, names and weights.

    module = xpcnn.io.torch_module.to_torch(net)  # nn.Sequential; net.state_dict() loads into it

Each layer becomes its torch counterpart at the same position, a Residual a module
holding `body` and `shortcut` nn.Sequentials, so parameter and buffer names agree
("3.body.0.weight") and weights move both ways through state_dict / load_state_dict.
For comparing with PyTorch, or handing a trained network on; needs torch installed
(an optional dependency: the library never imports it for its own work).
"""

from __future__ import annotations

import functools
from typing import Any

from .. import backend, layers
from ..model import Residual


def to_torch(model: Any, device: str = "cpu", dtype: Any = None) -> Any:
    """`model` (a Sequential) as a torch nn.Sequential with its weights, buffers and
    batch-norm counters, on `device`, in `dtype` (default: the model's). ValueError
    naming the layer for a layer with no torch counterpart; backend.BackendUnavailable
    where torch cannot use `device`."""
    try:
        import torch
    except ImportError:
        raise ImportError("to_torch needs PyTorch: pip install torch") from None
    backend.require("torch", device)  # one line, not torch's about its build
    module = _sequential(torch.nn, model, "")  # first: a layer it cannot rebuild is named before any dtype
    module = module.to(dtype=getattr(torch, model.dtype if dtype is None else backend.float_name(dtype)))
    module.load_state_dict({key: torch.from_numpy(value) for key, value in model.state_dict().items()})
    return module.to(device=device)


def _sequential(nn: Any, chain: Any, prefix: str) -> Any:
    return nn.Sequential(*(_module(nn, layer, f"{prefix}{index}") for index, layer in enumerate(chain)))


def _module(nn: Any, layer: layers.Layer, position: str) -> Any:
    """The torch module that computes what `layer` does, its arrays under the same names."""
    if isinstance(layer, Residual):
        shortcut = None if layer.shortcut is None else _sequential(nn, layer.shortcut, f"{position}.shortcut.")
        return _Residual(nn)(_sequential(nn, layer.body, f"{position}.body."), shortcut)
    if isinstance(layer, layers.Conv2D):
        return _conv(nn, layer)
    simple = {
        layers.Dense: lambda: nn.Linear(layer.in_features, layer.out_features),
        layers.BatchNorm2D: lambda: nn.BatchNorm2d(layer.num_features, layer.eps, layer.momentum),
        layers.MaxPool2D: lambda: nn.MaxPool2d(layer.kernel_size, layer.stride),
        layers.AvgPool2D: lambda: nn.AvgPool2d(layer.kernel_size, layer.stride),
        layers.GlobalAvgPool2D: lambda: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
        layers.Dropout: lambda: nn.Dropout(layer.p),
        layers.ReLU: nn.ReLU, layers.Tanh: nn.Tanh, layers.Sigmoid: nn.Sigmoid, layers.Flatten: nn.Flatten,
        layers.GELU: lambda: nn.GELU(approximate="tanh"),
    }
    if type(layer) not in simple:
        raise ValueError(f"layer {position} ({type(layer).__name__}) has no torch counterpart")
    return simple[type(layer)]()


def _conv(nn: Any, layer: layers.Conv2D) -> Any:
    top, bottom, left, right = layer.padding
    conv = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, bias=layer.bias)
    if (top, left) == (bottom, right):
        conv.padding = (top, left)
        return conv
    padded = _PaddedConv(nn)(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, bias=layer.bias)
    padded.sides = (left, right, top, bottom)  # a ZeroPad2d of its own would take the next index
    return padded


@functools.cache
def _Residual(nn: Any) -> type:  # noqa: N802  (a class made on first use: torch is imported late)
    class Residual(nn.Module):
        """body(x) + shortcut(x), the shortcut the identity when None."""

        def __init__(self, body: Any, shortcut: Any) -> None:
            super().__init__()
            self.body, self.shortcut = body, shortcut

        def forward(self, x: Any) -> Any:
            return self.body(x) + (x if self.shortcut is None else self.shortcut(x))

    return Residual


@functools.cache
def _PaddedConv(nn: Any) -> type:  # noqa: N802
    class PaddedConv2d(nn.Conv2d):
        """A convolution after zero padding of unequal sides (left, right, top, bottom)."""

        sides: tuple[int, int, int, int] = (0, 0, 0, 0)

        def forward(self, x: Any) -> Any:
            return super().forward(nn.functional.pad(x, self.sides))

    return PaddedConv2d
