"""Sequential, a network as an ordered list of layers, and Residual, a block of them with a skip
connection, which a Sequential holds as one layer."""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import array_api_compat

from . import backend, init, weights
from .checks import flag
from .hooks import AtPositions, LayerHook, Position, check_points
from .layers import LAYER_TYPES, Conv2D, Dense, Layer
from .layers.base import ArchitectureError, Shape
from .layers.fused import FusedBlock, block_at

MAX_VALUES = 1 << 29  # parameters of an architecture read from a file: 2 GiB of float32
MAX_LAYERS = 10_000  # in a config read from a file, blocks' layers included: 150 times resnet20's 63
MAX_DEPTH = 16  # blocks inside blocks, in a config read from a file: deeper is refused before recursion hurts
MAX_SEED = 2**63 - 1  # a layer's `rng` in a config: a seed, as a checkpoint's seeds are (io.schema)


class Sequential:
    """Layers applied in order; parameters named "<index>.<name>" (e.g. "0.weight"), and
    inside a block (xpcnn.Residual) "<index>.<branch>.<index>.<name>"
    ("3.body.0.weight"), as torch names them.

    `fuse` (default True): a forward runs the layers of each block of
    xpcnn.layers.fused.FUSIONS as one step (see forward); False runs every layer alone."""

    def __init__(self, layers: Sequence[Layer], *more: Layer) -> None:
        if more:  # torch's nn.Sequential(a, b) habit: Python's own "takes 2 positional arguments" counts self
            raise TypeError(f"Sequential takes one list of layers, got {1 + len(more)} arguments: "
                            "Sequential([layer, ...])")
        if not isinstance(layers, (list, tuple)):
            raise TypeError(f"Sequential takes a list of layers, got {type(layers).__name__}: Sequential([layer, ...])")
        layers = list(layers)
        for index, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: item {index} is {_not_a_layer(layer)}")
            _check_layer_state(index, layer)
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        self.layers = layers
        self._prefix = ""  # where this chain sits inside a block ("3.body"): what hooks are told
        first: dict[int, int | str] = {}
        for position, layer in self._walk():
            if first.setdefault(id(layer), position) != position:  # it would overwrite its own saved activations
                raise ValueError(f"Sequential: the same {layer!r} object is at positions {first[id(layer)]} and "
                                 f"{position}; a layer keeps what its backward needs, so use one object per position")
        # What the network was trained on: {"name", "classes", "mean", "std", "input_shape"
        # (C, H, W), ...}, set by Trainer.fit and load_checkpoint, or by you; what predict,
        # summary and save_checkpoint read (see datasets.Dataset.statistics).
        self.data: dict[str, Any] | None = None
        self.hooks: list[LayerHook] = []  # see hooked()
        self._fuse = True  # see forward
        # What the last training forward ran: (index, step, its input's shape and dtype).
        self._steps: list[tuple[int, Any, Shape | None, Any]] | None = None

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int | slice) -> Any:
        """The layer at `index`; for a slice, a network of those layers, the same objects
        (`net[:4].forward(x, training=False)` is what the fourth layer gives the fifth;
        `net[:4].to(...)` moves those layers of `net` too)."""
        if isinstance(index, slice):
            return Sequential(self.layers[index])
        try:
            return self.layers[index]
        except IndexError:
            raise IndexError(f"layer {index} of a network of {len(self.layers)} layers (0 to "
                             f"{len(self.layers) - 1}, or -1 back to -{len(self.layers)})") from None
        except TypeError:
            raise TypeError(f"a network's layers are indexed by an integer or a slice, got {index!r}") from None

    def __repr__(self) -> str:
        inner = "".join(f"\n  ({i}) {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({inner}\n)"

    def _walk(self, prefix: str = "") -> Iterator[tuple[int | str, Layer]]:
        """(position, layer) for every layer, each block before the layers inside it;
        positions from this chain's start, prefixed by `prefix`."""
        for index, layer in enumerate(self.layers):
            position = _joined(prefix, index)
            yield position, layer
            for name, branch in layer.branches().items():
                yield from branch._walk(f"{position}.{name}")

    def _position(self, index: int) -> int | str:
        return _joined(self._prefix, index)

    def positions(self, at: Position | Sequence[Position], what: str = "hooked at",
                  without: str = "every layer") -> list[str]:
        """The positions `at` names (an index, -1 the last, or "3.body.0" inside a block, or
        a list of them), as str, in the order given, each once; TypeError for what is no
        position, ValueError naming one this network has not (`what` begins the messages;
        `without` says what leaving `at` out gives, for an empty list)."""
        # Only a list, tuple or set names several: bytes, a dict or a float would be iterated or fail
        # with Python's "not iterable"; a NumPy integer (an argmax) is an index.
        wanted = list(at) if isinstance(at, (list, tuple, set, frozenset, range)) else [at]
        if not wanted:
            raise ValueError(f"{what} names no position: leave it out for {without}")
        known = [str(position) for position, _ in self._walk(self._prefix)]
        chosen: list[str] = []
        for position in wanted:
            if not isinstance(position, (bool, str)) and hasattr(position, "__index__"):
                position = operator.index(position)  # np.int64(2) is 2
            if isinstance(position, bool) or not isinstance(position, (int, str)):
                raise TypeError(f"{what} takes layer positions (an index, or a str such as '3.body.0'), "
                                f"got {position!r}")
            if isinstance(position, int) and -len(self.layers) <= position < 0:
                position += len(self.layers)
            if str(position) not in known:
                shown = ", ".join(known[:12]) + (f"... ({len(known)} in all)" if len(known) > 12 else "")
                raise ValueError(f"{what} {position!r}: the network has no layer there; its positions are {shown}")
            if str(position) not in chosen:
                chosen.append(str(position))
        return chosen

    def named_layers(self) -> list[tuple[int | str, Layer]]:
        """Every layer that computes on its own, blocks walked into, by position: an index
        at the top, "3.body.0" inside a block, the prefix of the layer's array names."""
        return [(position, layer) for position, layer in self._walk() if not layer.branches()]

    @property
    def fuse(self) -> bool:
        """Whether a forward runs each fused block as one step (see forward); setting it
        sets it inside blocks too."""
        return self._fuse

    @fuse.setter
    def fuse(self, value: bool) -> None:
        self._fuse = value
        for layer in self.layers:
            for branch in layer.branches().values():
                branch.fuse = value

    @contextmanager
    def hooked(self, *hooks: LayerHook, at: Position | Sequence[Position] | None = None) -> Iterator[Sequential]:
        """Run `hooks` around every layer's forward and backward inside the block, the
        layers inside blocks (xpcnn.Residual) too, after the block's own call; with `at`,
        only around the layers at those positions (an index, -1 the last, or "3.body.0"
        inside a block: named_layers' positions, a block's own included)."""
        for hook in hooks:
            if not isinstance(hook, LayerHook):
                raise TypeError(f"hooked takes LayerHooks (xpcnn.hooks), got {type(hook).__name__}")
            check_points(hook, LayerHook, ("before_", "after_"), type(hook).__name__, "network")
        if at is not None:
            positions = frozenset(self.positions(at))
            hooks = tuple(AtPositions(hook, positions) for hook in hooks)
        self.hooks += hooks
        try:
            with ExitStack() as inner:
                for index, layer in enumerate(self.layers):
                    for name, branch in layer.branches().items():
                        branch._prefix = f"{self._position(index)}.{name}"
                        inner.enter_context(branch.hooked(*hooks))
                yield self
        finally:
            for hook in hooks:
                self.hooks.remove(hook)

    def forward(self, x: Any, training: bool = True) -> Any:
        """The network's output for x. The layers of each fused block (xpcnn.layers.fused:
        the same results, fewer passes over memory on a fast path) run as one step unless
        `fuse` is False or hooks are attached, which see every layer."""
        training = flag(training, "Sequential.forward training")  # "no" would train: batch statistics, dropout
        fusing = self.fuse and not self.hooks
        x = backend.detached(x)
        steps: list[tuple[int, Any, Shape | None, Any]] = []  # (first layer's index, what ran, input): the way back
        with backend.on_device(x):
            index = 0
            while index < len(self.layers):
                step: Any = (block_at(self.layers, index, tuple(x.shape)) if fusing else None) or self.layers[index]
                for hook in self.hooks:
                    hook.before_forward(self._position(index), step, x)
                taken = (tuple(x.shape), x.dtype)
                x = step.forward(x, training)
                for hook in self.hooks:
                    hook.after_forward(self._position(index), step, x)
                steps.append((index, step, *taken))
                index += len(step.layers) if isinstance(step, FusedBlock) else 1
        self._steps = steps if training else None  # backward after inference: the layers refuse it
        return x

    __call__ = forward

    def backward(self, dy: Any, input_grad: bool = True) -> Any:
        """Backpropagate `dy` through every layer, last to first; returns d(loss)/d(input),
        or None with `input_grad=False`, which lets the first layer skip that work (the
        input is data: training never needs its gradient)."""
        # Without a training forward to walk back through, the layers say so.
        steps = self._steps or [(index, layer, None, None) for index, layer in enumerate(self.layers)]
        self._steps = None
        dy = backend.detached(dy)
        layers = self.named_layers()
        for _, layer in layers:  # a backward that sets no gradient leaves none, not the last one's
            layer.grads = {}
        with backend.on_device(dy):
            for index, layer, shape, dtype in reversed(steps):
                for hook in self.hooks:
                    hook.before_backward(self._position(index), layer, dy)
                if index == 0 and not input_grad and layer.skips_input_grad:
                    dy = layer.backward(dy, input_grad=False)
                else:
                    dy = layer.backward(dy)
                    _check_input_gradient(self._position(index), layer, dy, shape, dtype)
                for hook in self.hooks:
                    hook.after_backward(self._position(index), layer, dy)
        _check_gradients(layers)
        return dy if input_grad else None

    def _named(self, attribute: str) -> dict[str, Any]:
        return {
            f"{position}.{key}": value
            for position, layer in self.named_layers()
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
        differs, values that are not finite real numbers and a batch-norm counter that is no
        count are named by their key; with `strict`, so is a missing or unexpected key.
        ValueError, before anything changes."""
        weights.load_state_dict(self, state, strict)

    def set_array(self, name: str, value: Any) -> None:
        """Replace parameter or buffer `name` (e.g. "3.running_mean", "2.body.0.weight") with `value`."""
        self.set_arrays({name: value})

    def set_arrays(self, values: dict[str, Any]) -> None:
        """Replace parameters and buffers by name, as set_array does each (the layers are
        looked up once: setting each of a deep network's arrays alone takes quadratic time)."""
        layers = {str(where): layer for where, layer in self.named_layers()}
        for name, value in values.items():
            position, _, key = name.rpartition(".")
            layer = layers.get(position)
            if layer is None:
                raise KeyError(f"this network has no layer at {position!r} (for {name!r})")
            store = layer.params if key in layer.params else layer.buffers
            if key not in store:
                raise KeyError(f"{layer!r} has no parameter or buffer {key!r}")
            store[key] = value

    def to(self, backend_name: str, device: Any = None, dtype: Any = None) -> Sequential:
        """Move every layer to a backend, device and dtype (default: keep the dtype);
        backend.BackendUnavailable, saying why, where the backend cannot use that device
        (Layer.to checks it, so the first layer refuses before anything moves)."""
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
        """The first parameter, after checking that every array shares its backend, device
        and dtype: of a layer moved alone, the first one's place was reported, and
        load_state_dict moved the layer back to it, save_checkpoint wrote a file no load takes."""
        places: dict[tuple[str, str, str], str] = {}
        for name, value in {**self.params, **self.buffers}.items():
            place = (backend.backend_of(value), backend.dtype_name(value.dtype), str(array_api_compat.device(value)))
            places.setdefault(place, name)
        if not self.params:
            raise ValueError("this network has no parameters")
        if len(places) > 1:
            shown = "; ".join(f"{name} on {where} ({dtype}, device {device})" for (where, dtype, device), name
                              in places.items())
            raise ValueError(f"this network's arrays are not in one place: {shown}; move the whole network with "
                             ".to(backend, device, dtype)")
        return next(iter(self.params.values()))

    @property
    def backend(self) -> str:
        """The backend name of the network's arrays; ValueError where it has none, or they
        do not share one backend, device and dtype."""
        return backend.backend_of(self._first_param())

    @property
    def dtype(self) -> str:
        """The dtype name of the network's arrays, "float32" or "float64"; ValueError as backend."""
        return backend.dtype_name(self._first_param().dtype)

    @property
    def device(self) -> Any:
        """The device of the network's arrays, as their library names it; ValueError as backend."""
        return array_api_compat.device(self._first_param())

    def num_params(self) -> int:
        """The number of trained values: the sizes of every parameter, summed."""
        return sum(math.prod(p.shape) for p in self.params.values())

    def input_channels(self) -> int | None:
        """The channels of the images the network takes, as its first convolution or batch
        norm says (None where a dense layer comes first, or no layer says)."""
        for _, layer in self.named_layers():
            for attribute in ("in_channels", "num_features", "in_features"):
                if hasattr(layer, attribute):
                    return None if attribute == "in_features" else int(getattr(layer, attribute))
        return None

    def output_shapes(self, input_shape: Shape) -> list[Shape]:
        """The output shape of each layer for `input_shape`; Misfit (a ValueError) naming the
        first layer that cannot take its input by position ("layer 3.body.0 (Conv2D): ...")."""
        shapes, shape = [], tuple(input_shape)
        for index, layer in enumerate(self.layers):
            shape = _shape_after(layer, shape, str(index))
            shapes.append(shape)
        return shapes

    def classifying_misfit(self, input_shape: Shape, classes: int | None) -> str | None:
        """Why the network cannot classify images of `input_shape` (C, H, W) into `classes`
        classes (a layer that cannot take them, or another number of outputs; for None, only
        the first); None where it can. Training, evaluation, predict and checkpoints check
        it, each naming its data."""
        shape = "x".join(map(str, input_shape))
        try:
            outputs = self.output_shapes((1, *input_shape))[-1]
        except ValueError as exc:
            return f"the network does not take {shape} images: {exc}"
        if classes is not None and outputs != (1, classes):
            return (f"the network's output is {outputs[1:]} for each image, but there are {classes} classes: its "
                    f"last layer needs {classes} outputs")
        return None

    def shaped_layers(self, input_shape: Shape) -> list[tuple[int | str, Layer, Shape]]:
        """(position, layer, output shape) of every layer for inputs of `input_shape` (N, C, H,
        W), each block before the layers inside it; Misfit as output_shapes."""
        return list(self._shaped(input_shape))

    def _shaped(self, input_shape: Shape, prefix: str = "") -> Iterator[tuple[int | str, Layer, Shape]]:
        """(position, layer, output shape) for every layer, blocks walked into (as _walk)."""
        shape = tuple(input_shape)
        for index, layer in enumerate(self.layers):
            position = _joined(prefix, index)
            out = _shape_after(layer, shape, str(position))
            yield position, layer, out
            for name, branch in layer.branches().items():
                yield from branch._shaped(shape, f"{position}.{name}")
            shape = out

    def training_flops(self, input_shape: Shape) -> float:
        """Floating-point operations of one training step for one input of `input_shape`
        (C, H, W): the matrix products of convolution and dense layers (inside blocks
        too), forward and both gradients (3x the forward's, 2 per multiply-add); the
        element-wise rest is small beside them."""
        if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3:  # summary's (N, C, H, W), say
            raise ValueError(f"training_flops takes one image's shape (C, H, W), such as (1, 28, 28), got "
                             f"{input_shape!r}")
        total = 0.0
        for _, layer, out in self._shaped((1, *input_shape)):
            if isinstance(layer, Conv2D):
                kh, kw = layer.kernel_size
                total += 2.0 * layer.in_channels * kh * kw * math.prod(out[1:])
            elif isinstance(layer, Dense):
                total += 2.0 * layer.in_features * layer.out_features
        return 3 * total

    def summary(self, input_shape: Shape | None = None) -> str:
        """A table of layers, output shapes and parameter counts for inputs of `input_shape`,
        batch included: (N, C, H, W), e.g. (1, 1, 28, 28); by default one image of the shape
        the network was trained on (`data`). A block's layers follow it, indented."""
        if input_shape is None:
            if not self.data or "input_shape" not in self.data:
                raise ValueError("summary needs an input shape, (N, C, H, W) such as (1, 1, 28, 28): this network "
                                 "does not know its data yet (Trainer.fit and load_checkpoint tell it)")
            input_shape = (1, *self.data["input_shape"])
        rows = [("#", "layer", "output shape", "params")]
        for position, layer, shape in self._shaped(input_shape):
            indent = "  " * str(position).count(".")  # two dots a block deep
            if layer.branches():
                branches = list(layer.branches()) + ([] if "shortcut" in layer.branches() else ["identity"])
                label = f"{type(layer).__name__} ({' + '.join(branches)})"
                rows.append((str(position), indent + label, str(shape), ""))
            else:
                count = sum(math.prod(p.shape) for p in layer.params.values())
                rows.append((str(position), indent + repr(layer), str(shape), f"{count:,}"))
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

    def check_rebuildable(self) -> None:
        """ArchitectureError naming the first layer that `from_config(config())` would not
        give back, as checkpoints and parity rebuild networks: a class of its own that is
        not registered (register_layer) or shares a registered name, a config that is no
        JSON data or that loading refuses, or arrays that its `array_shapes` does not declare."""
        for position, layer in self._walk():
            kind = type(layer)
            where = f"layer {position} ({kind.__module__}.{kind.__qualname__})"
            if BUILDABLE.get(kind.__name__) is not kind:
                how = ("rename its class (a registered layer has the name), then xpcnn.register_layer(it)"
                       if kind.__name__ in BUILDABLE else "xpcnn.register_layer(its class) does")
                raise ArchitectureError(f"{where}: no layer of this class is registered under {kind.__name__!r}, so "
                                        f"no checkpoint or copy could rebuild it; {how}")
            try:
                json.dumps(layer.config(), allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise ArchitectureError(f"{where}: its config() {layer.config()!r} is no JSON data ({exc})"[:400]) \
                    from None
        planned = Sequential.planned_arrays(json.loads(json.dumps(self.config())))  # what loading checks, as it does
        held = {**{name: ("param", tuple(a.shape)) for name, a in self.params.items()},
                **{name: ("buffer", tuple(a.shape)) for name, a in self.buffers.items()}}
        differing = sorted(name for name in planned.keys() | held.keys() if planned.get(name) != held.get(name))
        if differing:
            name = differing[0]
            declared, holds = (f"a {entry[0]} of shape {entry[1]}" if entry else "none"
                               for entry in (planned.get(name), held.get(name)))
            raise ArchitectureError(f"layer {name.rpartition('.')[0]}: its array_shapes declares {declared} for "
                                    f"{name}, but it holds {holds}")

    @classmethod
    def planned_arrays(cls, config: Any, max_values: int = MAX_VALUES, depth: int = 0,
                       prefix: str = "") -> dict[str, tuple[str, Shape]]:
        """What `from_config(config)` would hold, without building it: {"0.weight": ("param",
        shape), "1.running_mean": ("buffer", shape), ...}. Unknown layer types, malformed
        arguments and more than `max_values` values in all raise ValueError naming the layer
        (`prefix` places a chain inside a block: "3.body.")."""
        where = f"layer {prefix[:-1]}" if prefix else "architecture"
        if not isinstance(config, list) or not 0 < len(config) <= MAX_LAYERS:
            raise ArchitectureError(f"{where} must be a list of 1 to {MAX_LAYERS} layers, got "
                                    f"{len(config) if isinstance(config, list) else type(config).__name__}")
        if depth == 0 and _count_layers(config) > MAX_LAYERS:  # counted before any is checked: checks take time
            raise ArchitectureError(f"architecture has more than {MAX_LAYERS:,} layers, blocks' layers included")
        planned: dict[str, tuple[str, Shape]] = {}
        for index, entry in enumerate(config):
            kind = _layer_type(f"{prefix}{index}", entry)
            try:
                arrays = kind.planned_arrays(entry["config"], depth, f"{prefix}{index}.")
            except ArchitectureError:
                raise
            except (TypeError, ValueError, OverflowError) as exc:
                raise _bad_config(f"{prefix}{index}", entry, exc) from None
            planned.update({f"{index}.{name}": kind_shape for name, kind_shape in arrays.items()})
        total = sum(math.prod(shape) for _, shape in planned.values())
        if total > max_values:
            raise ArchitectureError(f"architecture asks for {total:,} parameter values, over the limit of "
                                    f"{max_values:,}")
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
                    layers.append(BUILDABLE[entry["type"]].from_config(entry["config"]))
                except ArchitectureError:
                    raise
                except (TypeError, ValueError, OverflowError) as exc:
                    raise _bad_config(str(index), entry, exc) from None
        return cls(layers)


def _check_input_gradient(position: Position, layer: Any, dx: Any, shape: Shape | None, dtype: Any) -> None:
    """ValueError naming the layer whose backward returned a gradient of another shape or
    dtype than its input had, or no array (a backward of one's own that returns None), before
    the layer below would blame itself for it."""
    if not array_api_compat.is_array_api_obj(dx):
        raise TypeError(f"layer {position} ({layer!r}): its backward returned {type(dx).__name__}, not the gradient "
                        "of its input (an array of the input's shape)")
    if shape is not None and (tuple(dx.shape) != shape or dx.dtype != dtype):
        raise ValueError(f"layer {position} ({layer!r}): its backward returned a gradient of {dx.dtype} "
                         f"{tuple(dx.shape)} for an input of {dtype} {shape}")


def _not_a_layer(item: Any) -> str:
    """What `item`, given where a layer belongs, is, and what to give instead."""
    if isinstance(item, type) and issubclass(item, Layer):
        return f"the class {item.__name__}, not a layer: make one, {item.__name__}(...)"
    if isinstance(item, Sequential):
        return "a Sequential, not a Layer: give its layers, Sequential([*net.layers, ...]), or make it Residual(net)"
    return f"{type(item).__name__}, not a Layer"


def _check_layer_state(index: int, layer: Layer) -> None:
    """TypeError naming a layer of one's own whose state is not a Layer's: an __init__
    without super().__init__(), or params and buffers that are not arrays (a list, a
    float), which would fail deep inside a step or a save."""
    missing = [name for name in ("params", "grads", "buffers") if not isinstance(getattr(layer, name, None), dict)]
    if missing:
        raise TypeError(f"Sequential: item {index} ({type(layer).__name__}) has no {' or '.join(missing)} dict: "
                        "its __init__ must call super().__init__() first")
    for kind in ("params", "buffers"):
        for key, value in getattr(layer, kind).items():
            try:
                backend.backend_of(value)
            except TypeError:
                raise TypeError(f"Sequential: item {index} ({type(layer).__name__}): {kind}[{key!r}] is a "
                                f"{type(value).__name__}, not an array (xpcnn.init makes them)") from None


def _check_gradients(layers: list[tuple[int | str, Layer]]) -> None:
    """ValueError naming the layer whose backward left a parameter without a gradient of
    its shape and dtype: a layer of your own would else train wrong (a compiled optimizer
    update would read past the end of a smaller gradient, a broadcast one would train every
    value alike)."""
    for position, layer in layers:
        for key, param in layer.params.items():
            grad = layer.grads.get(key)
            if grad is None:
                raise ValueError(f"layer {position} ({layer!r}): its backward set no gradient for {key!r}")
            if not array_api_compat.is_array_api_obj(grad):
                raise TypeError(f"layer {position} ({layer!r}): the gradient of {key!r} is a {type(grad).__name__}, "
                                "not an array")
            if tuple(grad.shape) != tuple(param.shape) or grad.dtype != param.dtype:
                raise ValueError(f"layer {position} ({layer!r}): the gradient of {key!r} is {grad.dtype} "
                                 f"{tuple(grad.shape)}, its parameter {param.dtype} {tuple(param.shape)}")


def _count_layers(config: list[Any], depth: int = 0) -> int:
    """The layers of an unchecked config, those in blocks (lists of entries in an entry's
    config) included; counting stops soon after MAX_LAYERS, and below MAX_DEPTH blocks."""
    count = len(config)
    for entry in config:
        if count > MAX_LAYERS or depth > MAX_DEPTH:
            break
        arguments = entry.get("config") if isinstance(entry, dict) else None
        for value in arguments.values() if isinstance(arguments, dict) else ():
            if isinstance(value, list) and value and isinstance(value[0], dict):
                count += _count_layers(value, depth + 1)
    return count


def _joined(prefix: str, index: int) -> int | str:
    """A layer's position: its index at the top, "3.body.0" under prefix "3.body"."""
    return f"{prefix}.{index}" if prefix else index


class Misfit(ValueError):
    """A layer of a network cannot take the input it gets; `position` names it ("3",
    "3.body.0"), `detail` says what it expected."""

    def __init__(self, position: str, kind: str, detail: str) -> None:
        super().__init__(f"layer {position} ({kind}): {detail}")
        self.position, self.kind, self.detail = position, kind, detail

    def within(self, prefix: str) -> Misfit:
        """The same misfit, its position counted from one level up ("3" + "body.0")."""
        return Misfit(f"{prefix}.{self.position}", self.kind, self.detail)


def _shape_after(layer: Layer, shape: Shape, position: str) -> Shape:
    """layer.output_shape(shape), a misfit inside it named by its position from here."""
    try:
        return layer.output_shape(shape)
    except Misfit as exc:  # inside a block: exc.position counts from the block's branch
        raise exc.within(position) from None
    except ValueError as exc:
        raise Misfit(position, type(layer).__name__, str(exc)) from None


def _bad_config(position: str, entry: dict[str, Any], error: Exception) -> ArchitectureError:
    return ArchitectureError(f"layer {position} ({entry['type']}): bad config: {error} (given "
                             f"{entry['config']!r})"[:300])


def _layer_type(position: str, entry: Any) -> type[Layer]:
    """The layer class of one `config()` entry, after checking the entry's form."""
    if not isinstance(entry, dict) or set(entry) != {"type", "config"}:
        raise ArchitectureError(f"layer {position}: expected {{'type': ..., 'config': {{...}}}}, got {entry!r}"[:300])
    kind, args = entry["type"], entry["config"]
    if not isinstance(kind, str) or kind not in BUILDABLE:
        raise ArchitectureError(f"layer {position}: unknown layer type {kind!r}"[:200] + "; a class of your own is "
                                f"known once xpcnn.register_layer(it) has run; known: {', '.join(BUILDABLE)}"[:300])
    if not isinstance(args, dict) or not all(isinstance(v, (bool, int, float, str, list)) for v in args.values()):
        raise ArchitectureError(f"layer {position} ({kind}): config must map names to numbers, strings or lists, "
                                f"got {args!r}"[:300])
    seed = args.get("rng", 0)  # the constructor takes any seed NumPy does: a list of a million takes a second
    if type(seed) is not int or not 0 <= seed <= MAX_SEED:
        raise ArchitectureError(f"layer {position} ({kind}): config rng must be a seed, an integer in [0, 2**63), "
                                f"got {seed!r}"[:300])
    return BUILDABLE[kind]


class Residual(Layer):
    """y = body(x) + shortcut(x); the shortcut is the identity when None.

    `body` and `shortcut` are lists of layers (or Sequentials), each run as a Sequential
    (its fused blocks and hooks too), so a block's layers are named as torch names the
    modules of an nn.Module holding `body` and `shortcut` nn.Sequentials: "3.body.0.weight".
    The block holds no arrays of its own. Backward gives each branch dy and returns the
    sum of their input gradients (the identity's is dy itself)."""

    def __init__(self, body: Any, shortcut: Any = None) -> None:
        super().__init__()
        self.body = _branch(body, "body")
        self.shortcut = None if shortcut is None else _branch(shortcut, "shortcut")
        inside = [layer for branch in self.branches().values() for _, layer in branch._walk()]
        if len({id(layer) for layer in inside}) < len(inside):  # its saved activations would be overwritten
            raise ValueError("Residual: a layer object is in both the body and the shortcut; use one object per "
                             "position")
        self.depth = 1 + max((getattr(layer, "depth", 0) for layer in inside), default=0)  # blocks in blocks
        if self.depth > MAX_DEPTH:
            raise ValueError(f"Residual: blocks nested {self.depth} deep, more than the {MAX_DEPTH} a checkpoint "
                             "takes")

    def branches(self) -> dict[str, Any]:
        return {"body": self.body} if self.shortcut is None else {"body": self.body, "shortcut": self.shortcut}

    def __repr__(self) -> str:  # the layers' types: summary() lists them in full, one a row
        def names(chain: Any) -> str:
            return f"[{', '.join(type(layer).__name__ for layer in chain)}]"

        shortcut = "identity" if self.shortcut is None else names(self.shortcut)
        return f"Residual(body={names(self.body)}, shortcut={shortcut})"

    def output_shape(self, input_shape: Shape) -> Shape:
        ends = {}
        for name, branch in self.branches().items():
            try:
                ends[name] = branch.output_shapes(input_shape)[-1]
            except Misfit as exc:
                raise exc.within(name) from None
        out, other = ends["body"], ends.get("shortcut", tuple(input_shape))
        if out != other:
            raise ValueError(f"for input {tuple(input_shape)} the body gives {out} and the "
                             f"{'shortcut' if self.shortcut is not None else 'identity shortcut'} {other}; they "
                             "must match to be added")
        return out

    def forward(self, x: Any, training: bool = True) -> Any:
        self._namespace(x)
        try:  # a misfit named here, before either branch runs
            self.output_shape(tuple(x.shape))
        except ValueError as exc:
            raise ValueError(f"{self!r}: {exc}") from None
        y = self.body.forward(x, training)  # (N, C', H', W')
        skip = x if self.shortcut is None else self.shortcut.forward(x, training)  # (N, C', H', W')
        return self._save_for_backward(training, None, y + skip)

    def backward(self, dy: Any) -> Any:
        self._saved_for_backward(dy)
        dx = self.body.backward(dy)
        return dx + (dy if self.shortcut is None else self.shortcut.backward(dy))

    # -- what a block holds lives in its branches ---------------------------------------

    def config(self) -> dict[str, Any]:
        return {name: branch.config() for name, branch in self.branches().items()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Residual:
        _check_branches(config)
        return cls(*(Sequential.from_config(config[name]) for name in ("body", "shortcut") if name in config))

    @classmethod
    def planned_arrays(cls, config: dict[str, Any], depth: int = 0, prefix: str = "") -> dict[str, tuple[str, Shape]]:
        if depth >= MAX_DEPTH:
            raise ArchitectureError(f"layer {prefix[:-1] or 0} (Residual): blocks nested more than {MAX_DEPTH} deep")
        _check_branches(config)
        return {f"{name}.{key}": planned for name in ("body", "shortcut") if name in config
                for key, planned in Sequential.planned_arrays(config[name], depth=depth + 1,
                                                              prefix=f"{prefix}{name}.").items()}

    @classmethod
    def planned_shapes(cls, config: dict[str, Any]) -> dict[str, Shape]:
        return {name: shape for name, (_, shape) in cls.planned_arrays(config).items()}

    def extra_state(self) -> dict[str, int]:
        return {f"{name}.{position}.{key}": value for name, branch in self.branches().items()
                for position, layer in branch.named_layers() for key, value in layer.extra_state().items()}

    def load_extra_state(self, state: dict[str, int]) -> None:
        layers = {f"{name}.{position}": layer for name, branch in self.branches().items()
                  for position, layer in branch.named_layers()}
        grouped: dict[str, dict[str, int]] = {}
        for full, value in state.items():
            where, _, key = full.rpartition(".")
            if where not in layers:
                raise ValueError(f"Residual: no layer at {where!r} for extra state {full!r}")
            grouped.setdefault(where, {})[key] = value
        for where, layer in layers.items():
            if where in grouped or layer.extra_state():  # a counter it keeps must be given
                layer.load_extra_state(grouped.get(where, {}))

    def to(self, backend_name: str, device: Any = None, dtype: Any = None) -> Residual:
        super().to(backend_name, device, dtype)
        for branch in self.branches().values():
            branch.to(backend_name, device, dtype)
        return self

    def release_work_memory(self) -> None:
        super().release_work_memory()
        for branch in self.branches().values():
            branch.release_work_memory()


def _check_branches(config: Any) -> None:
    if not isinstance(config, dict) or "body" not in config or not set(config) <= {"body", "shortcut"}:
        raise TypeError(f"a Residual config holds 'body' and optionally 'shortcut', got {config!r}"[:200])


def _branch(layers: Any, what: str) -> Any:
    """`layers` as a Sequential of its own; a Sequential given is kept, not copied."""
    if isinstance(layers, Sequential):
        return layers
    if isinstance(layers, Layer):
        raise TypeError(f"Residual {what} must be a list of layers, got one {layers!r}: Residual([{layers!r}])")
    try:
        return Sequential(layers)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"Residual {what}: {exc}") from None


BUILDABLE: dict[str, type[Layer]] = {**LAYER_TYPES, "Residual": Residual}  # what a config may name


def register_layer(cls: type[Layer]) -> type[Layer]:
    """Let checkpoints, resumed runs and parity rebuild networks holding layers of `cls`, a
    Layer of your own, by its class name: its `config()` must be JSON data that its
    constructor takes back, and its `array_shapes` must give the shapes of its params and
    buffers (Sequential.check_rebuildable checks both on a network). Returns `cls`, so it
    serves as a decorator. ValueError where another class has the name."""
    if not (isinstance(cls, type) and issubclass(cls, Layer)) or cls is Layer:
        raise TypeError(f"register_layer takes a subclass of xpcnn.Layer, got {cls!r}")
    taken = BUILDABLE.get(cls.__name__)
    again = taken is not None and (taken.__module__, taken.__qualname__) == (cls.__module__, cls.__qualname__)
    if taken is not None and taken is not cls and not again:  # a class defined again (a notebook's cell) replaces
        raise ValueError(f"a layer named {cls.__name__} is registered already ({taken.__module__}."
                         f"{taken.__qualname__}): give {cls.__qualname__} another name")
    BUILDABLE[cls.__name__] = cls
    return cls
