"""Sequential: a network as an ordered list of layers."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import array_api_compat

from . import backend, init, weights
from .hooks import LayerHook
from .layers import LAYER_TYPES, Layer
from .layers.base import Shape
from .layers.fused import FusedBlock, block_at

MAX_VALUES = 1 << 29  # parameters of an architecture read from a file: 2 GiB of float32
MAX_LAYERS = 10_000


class Sequential:
    """Layers applied in order; parameters named "<index>.<name>" (e.g. "0.weight").

    `fuse` (default True): a forward runs the layers of each block of
    xpcnn.layers.fused.FUSIONS as one step (see forward); False runs every layer alone."""

    def __init__(self, layers: Sequence[Layer]) -> None:
        if not isinstance(layers, (list, tuple)):
            raise TypeError(f"Sequential takes a list of layers, got {type(layers).__name__}: Sequential([layer, ...])")
        layers = list(layers)
        for index, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: item {index} is {type(layer).__name__}, not a Layer")
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        first: dict[int, int] = {}
        for index, layer in enumerate(layers):
            if first.setdefault(id(layer), index) != index:  # it would overwrite its own saved activations
                raise ValueError(f"Sequential: the same {layer!r} object is at positions {first[id(layer)]} and "
                                 f"{index}; a layer keeps what its backward needs, so use one object per position")
        self.layers = layers
        # What the network was trained on: {"name", "classes", "mean", "std", "input_shape"
        # (C, H, W), ...}, set by Trainer.fit and load_checkpoint, or by you; what predict,
        # summary and save_checkpoint read (see datasets.Dataset.statistics).
        self.data: dict[str, Any] | None = None
        self.hooks: list[LayerHook] = []  # see hooked()
        self.fuse = True  # see forward
        self._steps: list[tuple[int, Any]] | None = None  # what the last training forward ran

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> Layer:
        return self.layers[index]

    def __repr__(self) -> str:
        inner = "".join(f"\n  ({i}) {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({inner}\n)"

    @contextmanager
    def hooked(self, *hooks: LayerHook) -> Iterator[Sequential]:
        """Run `hooks` around every layer's forward and backward inside the block."""
        for hook in hooks:
            if not isinstance(hook, LayerHook):
                raise TypeError(f"hooked takes LayerHooks (xpcnn.hooks), got {type(hook).__name__}")
        self.hooks += hooks
        try:
            yield self
        finally:
            for hook in hooks:
                self.hooks.remove(hook)

    def forward(self, x: Any, training: bool = True) -> Any:
        """The network's output for x. The layers of each fused block (xpcnn.layers.fused:
        the same results, fewer passes over memory on a fast path) run as one step unless
        `fuse` is False or hooks are attached, which see every layer."""
        fusing = self.fuse and not self.hooks
        steps: list[tuple[int, Any]] = []  # (index of the first layer, what ran): backward's way back
        with backend.on_device(x):
            index = 0
            while index < len(self.layers):
                step: Any = (block_at(self.layers, index, tuple(x.shape)) if fusing else None) or self.layers[index]
                for hook in self.hooks:
                    hook.before_forward(index, step, x)
                x = step.forward(x, training)
                for hook in self.hooks:
                    hook.after_forward(index, step, x)
                steps.append((index, step))
                index += len(step.layers) if isinstance(step, FusedBlock) else 1
        if training:
            self._steps = steps
        return x

    __call__ = forward

    def backward(self, dy: Any, input_grad: bool = True) -> Any:
        """Backpropagate `dy` through every layer, last to first; returns d(loss)/d(input),
        or None with `input_grad=False`, which lets the first layer skip that work (the
        input is data: training never needs its gradient)."""
        # Without a training forward to walk back through, the layers say so.
        steps, self._steps = self._steps or list(enumerate(self.layers)), None
        with backend.on_device(dy):
            for index, layer in reversed(steps):
                for hook in self.hooks:
                    hook.before_backward(index, layer, dy)
                if index == 0 and not input_grad and layer.skips_input_grad:
                    dy = layer.backward(dy, input_grad=False)
                else:
                    dy = layer.backward(dy)
                for hook in self.hooks:
                    hook.after_backward(index, layer, dy)
        return dy if input_grad else None

    def _named(self, attribute: str) -> dict[str, Any]:
        return {
            f"{index}.{key}": value
            for index, layer in enumerate(self.layers)
            for key, value in getattr(layer, attribute).items()
        }

    @property
    def params(self) -> dict[str, Any]:
        """Every trainable array, by name; the arrays themselves, not copies."""
        return self._named("params")

    @property
    def grads(self) -> dict[str, Any]:
        """The gradients of the last backward, by parameter name."""
        return self._named("grads")

    @property
    def buffers(self) -> dict[str, Any]:
        """Saved, untrained state (running statistics), by name."""
        return self._named("buffers")

    def state_dict(self) -> dict[str, Any]:
        """Parameters and buffers as host NumPy copies under PyTorch's names ("0.weight",
        "1.running_mean", "1.num_batches_tracked"), as torch.nn.Sequential.state_dict()
        has them for the same layers in the same order (see xpcnn.weights)."""
        return weights.state_dict(self)

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        """Take parameters and buffers from `state` (NumPy arrays, or tensors such as torch's
        state_dict()), converted to this network's backend, device and dtype; a shape that
        differs is named by its key; with `strict`, so is a missing or unexpected key."""
        weights.load_state_dict(self, state, strict)

    def set_array(self, name: str, value: Any) -> None:
        """Replace parameter or buffer `name` (e.g. "3.running_mean") with `value`."""
        index, _, key = name.partition(".")
        layer = self.layers[int(index)]
        store = layer.params if key in layer.params else layer.buffers
        if key not in store:
            raise KeyError(f"{layer!r} has no parameter or buffer {key!r}")
        store[key] = value

    def to(self, backend_name: str, device: Any = None, dtype: Any = None) -> Sequential:
        """Move every layer to a backend, device and dtype (default: keep the dtype)."""
        self._steps = None  # what a fused block saved stays behind, as the layers' caches do
        for layer in self.layers:
            layer.to(backend_name, device, dtype)
        return self

    def release_work_memory(self) -> None:
        """Drop what the last training forward saved for backward, in the layers and in
        fused blocks, and the layers' work arrays."""
        self._steps = None
        for layer in self.layers:
            layer.release_work_memory()

    def _first_param(self) -> Any:
        for value in self.params.values():
            return value
        raise ValueError("this network has no parameters")

    @property
    def backend(self) -> str:
        return backend.backend_of(self._first_param())

    @property
    def dtype(self) -> str:
        return backend.dtype_name(self._first_param().dtype)

    @property
    def device(self) -> Any:
        return array_api_compat.device(self._first_param())

    def num_params(self) -> int:
        return sum(math.prod(p.shape) for p in self.params.values())

    def output_shapes(self, input_shape: Shape) -> list[Shape]:
        """The output shape of each layer for `input_shape`; raises on the first misfit."""
        shapes, shape = [], tuple(input_shape)
        for layer in self.layers:
            shape = layer.output_shape(shape)
            shapes.append(shape)
        return shapes

    def training_flops(self, input_shape: Shape) -> float:
        """Floating-point operations of one training step for one input of `input_shape`
        (C, H, W): the matrix products of convolution and dense layers, forward and both
        gradients (3x the forward's, 2 per multiply-add); the element-wise rest is small
        beside them."""
        from .layers import Conv2D, Dense

        total = 0.0
        for layer, out in zip(self.layers, self.output_shapes((1, *input_shape))):
            if isinstance(layer, Conv2D):
                kh, kw = layer.kernel_size
                total += 2.0 * layer.in_channels * kh * kw * math.prod(out[1:])
            elif isinstance(layer, Dense):
                total += 2.0 * layer.in_features * layer.out_features
        return 3 * total

    def summary(self, input_shape: Shape | None = None) -> str:
        """A table of layers, output shapes and parameter counts for inputs of `input_shape`,
        batch included: (N, C, H, W), e.g. (1, 1, 28, 28); by default one image of the shape
        the network was trained on (`data`)."""
        if input_shape is None:
            if not self.data or "input_shape" not in self.data:
                raise ValueError("summary needs an input shape, (N, C, H, W) such as (1, 1, 28, 28): this network "
                                 "does not know its data yet (Trainer.fit and load_checkpoint tell it)")
            input_shape = (1, *self.data["input_shape"])
        rows = [("#", "layer", "output shape", "params")]
        for index, (layer, shape) in enumerate(zip(self.layers, self.output_shapes(input_shape))):
            count = sum(math.prod(p.shape) for p in layer.params.values())
            rows.append((str(index), repr(layer), str(shape), f"{count:,}"))
        widths = [max(len(row[col]) for row in rows) for col in range(4)]
        line = "  ".join("-" * w for w in widths)
        text = [
            "  ".join(cell.ljust(w) if c < 3 else cell.rjust(w) for c, (cell, w) in enumerate(zip(row, widths)))
            for row in rows
        ]
        text.insert(1, line)
        text += [line, f"input {tuple(input_shape)}, {self.num_params():,} parameters"]
        return "\n".join(text)

    def config(self) -> list[dict[str, Any]]:
        """The architecture as JSON-ready data; `Sequential.from_config` rebuilds it."""
        return [{"type": type(layer).__name__, "config": layer.config()} for layer in self.layers]

    @classmethod
    def planned_arrays(cls, config: Any, max_values: int = MAX_VALUES) -> dict[str, tuple[str, Shape]]:
        """What `from_config(config)` would hold, without building it: {"0.weight": ("param",
        shape), "1.running_mean": ("buffer", shape), ...}. Unknown layer types, malformed
        arguments and more than `max_values` values in all raise ValueError naming the layer."""
        if not isinstance(config, list) or len(config) > MAX_LAYERS:
            raise ValueError(f"architecture must be a list of at most {MAX_LAYERS} layers, got {type(config).__name__}")
        planned: dict[str, tuple[str, Shape]] = {}
        for index, entry in enumerate(config):
            kind = _layer_type(index, entry)
            try:
                shapes = kind.planned_shapes(entry["config"])
            except (TypeError, ValueError, OverflowError) as exc:
                raise _bad_config(index, entry, exc) from None
            for name, shape in shapes.items():
                planned[f"{index}.{name}"] = ("buffer" if name in kind.buffer_names else "param", shape)
        total = sum(math.prod(shape) for _, shape in planned.values())
        if total > max_values:
            raise ValueError(f"architecture asks for {total:,} parameter values, over the limit of {max_values:,}")
        return planned

    @classmethod
    def from_config(cls, config: Any, max_values: int = MAX_VALUES) -> Sequential:
        """Build a network (fresh weights) from `config()` output, after `planned_arrays`
        has checked it: nothing is allocated for a config that is refused."""
        cls.planned_arrays(config, max_values)
        layers = []
        with init.using(init.host_rng(0)):  # values to be replaced: the library's generator stays as it was
            for index, entry in enumerate(config):
                try:
                    layers.append(LAYER_TYPES[entry["type"]](**entry["config"]))
                except (TypeError, ValueError, OverflowError) as exc:
                    raise _bad_config(index, entry, exc) from None
        return cls(layers)


def _bad_config(index: int, entry: dict[str, Any], error: Exception) -> ValueError:
    return ValueError(f"layer {index} ({entry['type']}): bad config {entry['config']!r}: {error}"[:300])


def _layer_type(index: int, entry: Any) -> type[Layer]:
    """The layer class of one `config()` entry, after checking the entry's form."""
    if not isinstance(entry, dict) or set(entry) != {"type", "config"}:
        raise ValueError(f"layer {index}: expected {{'type': ..., 'config': {{...}}}}, got {entry!r}"[:300])
    kind, args = entry["type"], entry["config"]
    if not isinstance(kind, str) or kind not in LAYER_TYPES:
        raise ValueError(f"layer {index}: unknown layer type {kind!r}; known: {', '.join(LAYER_TYPES)}"[:300])
    if not isinstance(args, dict) or not all(isinstance(v, (bool, int, float, str, list)) for v in args.values()):
        raise ValueError(f"layer {index} ({kind}): config must map names to numbers, strings or lists, "
                         f"got {args!r}"[:300])
    return LAYER_TYPES[kind]
