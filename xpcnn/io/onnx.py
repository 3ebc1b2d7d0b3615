"""Export to ONNX: an xpcnn network as a standard ONNX graph (opset 17 or later) that
onnxruntime and other deployment tools run.

    xpcnn.io.onnx.export(model, "digits.onnx")  # normalisation and classes from model.data

The graph takes raw pixels in [0, 1], (batch, C, H, W) float32 as the network was
trained on (e.g. (batch, 1, 28, 28) for MNIST, (batch, 3, 32, 32) for CIFAR-10), any batch
size: the input normalisation, per channel, is part of the graph (Sub, Div), so a deployed
model needs no knowledge of the training data. It outputs "logits" (batch, classes), or
"probabilities" with `softmax=True`. Each layer maps to standard operators: Conv2D ->
Conv, MaxPool2D -> MaxPool, AvgPool2D -> AveragePool, GlobalAvgPool2D -> GlobalAveragePool
and Flatten, BatchNorm2D -> BatchNormalization (inference: the running statistics),
Dense -> Gemm, ReLU/Tanh/Sigmoid -> Relu/Tanh/Sigmoid, GELU -> its tanh formula in Mul,
Add and Tanh, Flatten -> Flatten, Dropout -> Identity, Residual -> its branches from the
block's input, then Add. Class names, the input shape, the normalisation and the
architecture are in the model's metadata. Weights are exported in float32. Needs the `onnx` package
(the `onnx` extra); the graph is checked with `onnx.checker` before it is saved.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import backend
from .._version import __version__
from ..checks import flag, integer
from ..datasets.dataset import MAX_STATISTIC, per_channel
from ..extras import install_hint
from ..layers import AvgPool2D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, Layer, MaxPool2D
from ..layers.activation import GELU, GELU_CUBIC, GELU_SCALE, ReLU, Sigmoid, Tanh
from ..layers.pool import GlobalAvgPool2D
from ..model import Residual, Sequential
from ..presets import SettingsError
from .atomic import atomic_write_bytes

MIN_OPSET = 17


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ImportError(f"exporting to ONNX needs the onnx package: {install_hint('onnx')}") from None
    return onnx


class _Graph:
    """Nodes and initializers collected layer by layer; `last` names the current tensor."""

    def __init__(self, onnx: Any, first: str) -> None:
        self.onnx, self.nodes, self.initializers, self.last = onnx, [], [], first

    def constant(self, name: str, value: Any) -> str:
        host = value if isinstance(value, (float, int, np.ndarray)) else backend.to_numpy(value)
        array = np.asarray(host, np.float32)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def add(self, op: str, name: str, inputs: Sequence[str] = (), **attributes: Any) -> None:
        self.nodes.append(self.onnx.helper.make_node(op, [self.last, *inputs], [name], name=name, **attributes))
        self.last = name

    def chain(self, layers: Any, prefix: str) -> None:
        """Every layer of `layers` (a Sequential) after the current tensor, named
        "<prefix><index>" as their arrays are."""
        for index, layer in enumerate(layers):
            name = f"{prefix}{index}"
            if type(layer) not in EXPORTERS:
                raise ValueError(f"layer {name} ({type(layer).__name__}) has no ONNX export")
            EXPORTERS[type(layer)](self, name, layer)


def _conv(graph: _Graph, name: str, layer: Conv2D) -> None:
    inputs = [graph.constant(f"{name}.weight", layer.params["weight"])]
    if layer.bias:
        inputs.append(graph.constant(f"{name}.bias", layer.params["bias"]))
    top, bottom, left, right = layer.padding
    graph.add("Conv", name, inputs, kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
              pads=[top, left, bottom, right])


def _pool(graph: _Graph, name: str, layer: MaxPool2D | AvgPool2D) -> None:
    op = "MaxPool" if isinstance(layer, MaxPool2D) else "AveragePool"
    graph.add(op, name, kernel_shape=list(layer.kernel_size), strides=list(layer.stride))


def _global_pool(graph: _Graph, name: str, layer: GlobalAvgPool2D) -> None:
    graph.add("GlobalAveragePool", f"{name}.pooled")  # (N, C, 1, 1)
    graph.add("Flatten", name, axis=1)


def _batch_norm(graph: _Graph, name: str, layer: BatchNorm2D) -> None:
    inputs = [graph.constant(f"{name}.{key}", layer.params[key]) for key in ("weight", "bias")]
    inputs += [graph.constant(f"{name}.{key}", layer.buffers[key]) for key in ("running_mean", "running_var")]
    graph.add("BatchNormalization", name, inputs, epsilon=layer.eps)


def _gelu(graph: _Graph, name: str, layer: GELU) -> None:
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) in operators of every opset (Gelu
    with approximate="tanh" needs opset 20)."""
    x = graph.last
    graph.add("Mul", f"{name}.square", [x])
    graph.add("Mul", f"{name}.cube", [x])
    graph.add("Mul", f"{name}.cubic", [graph.constant(f"{name}.k", np.float32(GELU_CUBIC))])
    graph.add("Add", f"{name}.inner", [x])
    graph.add("Mul", f"{name}.scaled", [graph.constant(f"{name}.c", np.float32(GELU_SCALE))])
    graph.add("Tanh", f"{name}.t")
    graph.add("Add", f"{name}.one_plus_t", [graph.constant(f"{name}.one", np.float32(1.0))])
    graph.add("Mul", f"{name}.gate", [graph.constant(f"{name}.half", np.float32(0.5))])  # before x: 2x may overflow
    graph.add("Mul", name, [x])


def _residual(graph: _Graph, name: str, layer: Residual) -> None:
    """body(x) + shortcut(x): both branches from the block's input, then an Add."""
    entry = graph.last
    graph.chain(layer.body, f"{name}.body.")
    body = graph.last
    graph.last = entry
    if layer.shortcut is not None:
        graph.chain(layer.shortcut, f"{name}.shortcut.")
    skip, graph.last = graph.last, body
    graph.add("Add", name, [skip])


def _dense(graph: _Graph, name: str, layer: Dense) -> None:
    inputs = [graph.constant(f"{name}.{key}", layer.params[key]) for key in ("weight", "bias")]
    graph.add("Gemm", name, inputs, transB=1)  # x (N, in) @ weight.T (in, out) + bias


EXPORTERS: dict[type[Layer], Callable[[_Graph, str, Any], None]] = {
    Conv2D: _conv, MaxPool2D: _pool, AvgPool2D: _pool, GlobalAvgPool2D: _global_pool, BatchNorm2D: _batch_norm,
    Dense: _dense, Residual: _residual,
    ReLU: lambda graph, name, layer: graph.add("Relu", name), GELU: _gelu,
    Tanh: lambda graph, name, layer: graph.add("Tanh", name),
    Sigmoid: lambda graph, name, layer: graph.add("Sigmoid", name),
    Flatten: lambda graph, name, layer: graph.add("Flatten", name, axis=1),
    Dropout: lambda graph, name, layer: graph.add("Identity", name),  # evaluation mode
}


def to_onnx(model: Sequential, *, mean: float | Sequence[float] | None = None,
            std: float | Sequence[float] | None = None, classes: Sequence[str] | None = None, softmax: bool = False,
            input_shape: tuple[int, int, int] | None = None, opset: int = MIN_OPSET) -> Any:
    """The network as a checked onnx.ModelProto (see the module docstring). The
    normalisation (a number, or one per channel), class names and input shape (C, H, W)
    default to what the network was trained on (`model.data`); a network that does not
    know it needs `mean` and `std` given (class names default to numbers, the input shape
    to 28x28 images of the channels its first layer takes). TypeError or ValueError
    naming an option it cannot take."""
    onnx = _onnx()
    opset = _checked_opset(onnx, opset)
    _check_options(model, softmax, input_shape, classes)
    known = model.data or {}
    if not known and (mean is None or std is None):
        raise ValueError("the network does not know the data it was trained on (model.data): pass the mean= and "
                         "std= its inputs were normalised with (and classes=, input_shape=), or export a network "
                         "that Trainer.fit or load_checkpoint has told (a graph without them would score wrongly)")
    guess = (model.input_channels() or 1, 28, 28)  # what a network that does not know its data likely takes
    input_shape = tuple(known.get("input_shape", guess) if input_shape is None else input_shape)
    mean = per_channel(known.get("mean", 0.0) if mean is None else mean, "mean", -MAX_STATISTIC, input_shape[0])
    std = per_channel(known.get("std", 1.0) if std is None else std, "std", 1e-12, input_shape[0])
    classes = known.get("classes") if classes is None else classes
    outputs = model.output_shapes((1, *input_shape))[-1]  # raises, naming the layer, if the shape does not fit
    classes = list(classes) if classes is not None else [str(k) for k in range(outputs[-1])]
    if len(outputs) != 2 or outputs[1] != len(classes):
        raise ValueError(f"the network ends in shape {outputs}, expected (N, {len(classes)}) for "
                         f"{len(classes)} classes")
    graph = _Graph(onnx, "pixels")
    graph.add("Sub", "centred", [graph.constant("mean", np.reshape(mean, (1, -1, 1, 1)))])
    graph.add("Div", "normalised", [graph.constant("std", np.reshape(std, (1, -1, 1, 1)))])
    graph.chain(model, "")
    output = "probabilities" if softmax else "logits"
    graph.add("Softmax" if softmax else "Identity", output, **({"axis": 1} if softmax else {}))
    return _model(onnx, graph, model, input_shape, output, len(classes), opset, {
        "classes": json.dumps(classes),
        "input": f"raw pixels in [0, 1], float32, (batch, {', '.join(map(str, input_shape))})",
        "normalization": json.dumps({"mean": mean, "std": std, "applied": "inside the graph"}),
        "input_shape": json.dumps(list(input_shape)),
        "architecture": json.dumps(model.config()), "producer": f"xpcnn {__version__}"})


def _check_options(model: Any, softmax: Any, input_shape: Any, classes: Any) -> None:
    """TypeError or ValueError naming what to_onnx cannot take: a model that is no
    Sequential, a softmax that is no bool (a truthy "no" would switch it on), an input
    shape that is not (C, H, W) integers >= 1, class names that are not a list of strings
    (one string would be a class per character)."""
    if not isinstance(model, Sequential):
        raise TypeError(f"to_onnx takes a Sequential, got {type(model).__name__}")
    flag(softmax, "to_onnx softmax")
    if input_shape is not None:
        if isinstance(input_shape, str) or not isinstance(input_shape, Sequence) or len(input_shape) != 3:
            raise TypeError(f"to_onnx input_shape must be (C, H, W), got {input_shape!r}")
        for value in input_shape:
            integer(value, "to_onnx input_shape (C, H, W)", 1)
    if classes is not None and (isinstance(classes, str) or not isinstance(classes, Sequence)
                                or not all(isinstance(name, str) for name in classes)):
        raise TypeError(f"to_onnx classes must be a list of class names (strings), got {classes!r}"[:200])


def _checked_opset(onnx: Any, opset: Any) -> int:
    """`opset` when the installed onnx knows it (and onnxruntime, where installed, runs
    it: see _runnable); SettingsError naming the range otherwise."""
    newest, opset = onnx.defs.onnx_opset_version(), integer(opset, "opset")
    if not MIN_OPSET <= opset <= newest:
        raise SettingsError("opset", f"must be in [{MIN_OPSET}, {newest}] (what the installed onnx "
                            f"{onnx.__version__} writes), got {opset}")
    return opset


def _runnable(proto: Any, opset: int) -> None:
    """Refuse a model the installed onnxruntime cannot load (a newer opset than it knows)."""
    try:
        import onnxruntime
    except ImportError:
        return
    try:
        onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001  (onnxruntime's own error types)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise SettingsError("opset", f"the installed onnxruntime {onnxruntime.__version__} cannot run the model "
                            f"exported at opset {opset} ({first}); choose an older opset") from None


def _model(onnx: Any, graph: _Graph, model: Sequential, input_shape: tuple[int, ...], output: str, classes: int,
           opset: int, metadata: dict[str, str]) -> Any:
    helper = onnx.helper
    pixels = helper.make_tensor_value_info("pixels", onnx.TensorProto.FLOAT, ["batch", *input_shape])
    result = helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, ["batch", classes])
    proto = helper.make_model(helper.make_graph(graph.nodes, "xpcnn", [pixels], [result], graph.initializers),
                              opset_imports=[helper.make_opsetid("", opset)], producer_name="xpcnn",
                              producer_version=__version__)
    helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto, full_check=True)
    _runnable(proto, opset)
    return proto


def export(model: Sequential | str | Path, path: str | Path, **options: Any) -> Path:
    """Write `to_onnx(model, **options)` to `path` (atomically); returns the path.
    `model` is a network or a checkpoint (a file or a run folder), as for predict."""
    if not isinstance(path, (str, Path)):
        raise TypeError(f"export path must be a file name, got {type(path).__name__}")
    if isinstance(model, (str, Path)):
        from .checkpoint import load_checkpoint

        saved = load_checkpoint(model)
        _not_the_checkpoint(saved.path, path)
        model = saved.model  # which knows its data
    if not isinstance(model, Sequential):
        raise TypeError(f"export takes a Sequential or a checkpoint's path, got {type(model).__name__}")
    proto = to_onnx(model, **options)
    atomic_write_bytes(path, proto.SerializeToString())
    return Path(path)


def _not_the_checkpoint(checkpoint: Path | None, path: str | Path) -> None:
    """FileExistsError where `path` is the checkpoint file being exported: the graph would
    replace the run's only copy of its weights."""
    if checkpoint is not None and os.path.exists(path) and os.path.samefile(checkpoint, path):
        raise FileExistsError(f"{path} is the checkpoint being exported; name another file for the ONNX graph")


def export_checkpoint(checkpoint: str | Path, path: str | Path, **options: Any) -> tuple[Path, list[int]]:
    """What `xpcnn export` does: the checkpoint's model (a file, or a run folder's) with
    the normalisation, class names and input shape of its training data, written to
    `path`; returns the path and the input shape (C, H, W)."""
    from .checkpoint import load_checkpoint

    saved = load_checkpoint(checkpoint)
    _not_the_checkpoint(saved.path, path)
    data = saved.data_statistics()  # a CheckpointError where the file lacks them
    return export(saved.model, path, **options), data["input_shape"]  # with them: the model knows its data

