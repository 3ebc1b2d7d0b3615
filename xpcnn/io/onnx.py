"""Export to ONNX: an xpcnn network as a standard ONNX graph (opset 17 or later) that
onnxruntime and other deployment tools run.

    xpcnn.io.onnx.export(model, "digits.onnx", mean=0.1307, std=0.3081, classes=[...])

The graph takes raw pixels in [0, 1], (batch, 1, 28, 28) float32, any batch size: the
input normalisation is part of the graph (Sub, Div), so a deployed model needs no
knowledge of the training data. It outputs "logits" (batch, classes), or "probabilities"
with `softmax=True`. Each layer maps to one standard operator: Conv2D -> Conv, MaxPool2D
-> MaxPool, AvgPool2D -> AveragePool, BatchNorm2D -> BatchNormalization (inference: the
running statistics), Dense -> Gemm, ReLU/Tanh/Sigmoid -> Relu/Tanh/Sigmoid, Flatten ->
Flatten, Dropout -> Identity. Class names, the normalisation and the architecture are in
the model's metadata. Weights are exported in float32. Needs the `onnx` package
(`pip install 'xpcnn[onnx]'`); the graph is checked with `onnx.checker` before it is saved.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import backend
from .._version import __version__
from ..layers import AvgPool2D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, Layer, MaxPool2D, ReLU, Sigmoid, Tanh
from ..layers.base import integer, number
from ..model import Sequential
from .atomic import atomic_write_bytes

MIN_OPSET = 17


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ImportError("exporting to ONNX needs the onnx package: pip install 'xpcnn[onnx]'") from None
    return onnx


class _Graph:
    """Nodes and initializers collected layer by layer; `last` names the current tensor."""

    def __init__(self, onnx: Any, first: str) -> None:
        self.onnx, self.nodes, self.initializers, self.last = onnx, [], [], first

    def constant(self, name: str, value: Any) -> str:
        array = np.asarray(backend.to_numpy(value) if not isinstance(value, (float, int)) else value, np.float32)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def add(self, op: str, name: str, inputs: Sequence[str] = (), **attributes: Any) -> None:
        self.nodes.append(self.onnx.helper.make_node(op, [self.last, *inputs], [name], name=name, **attributes))
        self.last = name


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


def _batch_norm(graph: _Graph, name: str, layer: BatchNorm2D) -> None:
    inputs = [graph.constant(f"{name}.{key}", layer.params[key]) for key in ("weight", "bias")]
    inputs += [graph.constant(f"{name}.{key}", layer.buffers[key]) for key in ("running_mean", "running_var")]
    graph.add("BatchNormalization", name, inputs, epsilon=layer.eps)


def _dense(graph: _Graph, name: str, layer: Dense) -> None:
    inputs = [graph.constant(f"{name}.{key}", layer.params[key]) for key in ("weight", "bias")]
    graph.add("Gemm", name, inputs, transB=1)  # x (N, in) @ weight.T (in, out) + bias


EXPORTERS: dict[type[Layer], Callable[[_Graph, str, Any], None]] = {
    Conv2D: _conv, MaxPool2D: _pool, AvgPool2D: _pool, BatchNorm2D: _batch_norm, Dense: _dense,
    ReLU: lambda graph, name, layer: graph.add("Relu", name),
    Tanh: lambda graph, name, layer: graph.add("Tanh", name),
    Sigmoid: lambda graph, name, layer: graph.add("Sigmoid", name),
    Flatten: lambda graph, name, layer: graph.add("Flatten", name, axis=1),
    Dropout: lambda graph, name, layer: graph.add("Identity", name),  # evaluation mode
}


def to_onnx(model: Sequential, *, mean: float | None = None, std: float | None = None,
            classes: Sequence[str] | None = None, softmax: bool = False,
            input_shape: tuple[int, int, int] | None = None, opset: int = MIN_OPSET) -> Any:
    """The network as a checked onnx.ModelProto (see the module docstring). The
    normalisation, class names and input shape default to what the network was trained on
    (`model.data`), else to none (mean 0, std 1), class numbers and 28x28 grey images."""
    onnx = _onnx()
    opset = _checked_opset(onnx, opset)
    known = model.data or {}
    mean = number(known.get("mean", 0.0) if mean is None else mean, "mean", -1e6, 1e6)
    std = number(known.get("std", 1.0) if std is None else std, "std", 1e-12, 1e6)
    classes = known.get("classes") if classes is None else classes
    input_shape = tuple(known.get("input_shape", (1, 28, 28)) if input_shape is None else input_shape)
    outputs = model.output_shapes((1, *input_shape))[-1]  # raises, naming the layer, if the shape does not fit
    classes = list(classes) if classes is not None else [str(k) for k in range(outputs[-1])]
    if len(outputs) != 2 or outputs[1] != len(classes):
        raise ValueError(f"the network ends in shape {outputs}, expected (N, {len(classes)}) for "
                         f"{len(classes)} classes")
    graph = _Graph(onnx, "pixels")
    graph.add("Sub", "centred", [graph.constant("mean", mean)])
    graph.add("Div", "normalised", [graph.constant("std", std)])
    for index, layer in enumerate(model):
        if type(layer) not in EXPORTERS:
            raise ValueError(f"layer {index} ({type(layer).__name__}) has no ONNX export")
        EXPORTERS[type(layer)](graph, str(index), layer)
    output = "probabilities" if softmax else "logits"
    graph.add("Softmax" if softmax else "Identity", output, **({"axis": 1} if softmax else {}))
    return _model(onnx, graph, model, input_shape, output, len(classes), opset, {
        "classes": json.dumps(classes),
        "input": f"raw pixels in [0, 1], float32, (batch, {', '.join(map(str, input_shape))})",
        "normalization": json.dumps({"mean": mean, "std": std, "applied": "inside the graph"}),
        "architecture": json.dumps(model.config()), "producer": f"xpcnn {__version__}"})


def _checked_opset(onnx: Any, opset: Any) -> int:
    """`opset` when the installed onnx knows it (and onnxruntime, where installed, runs
    it: see _runnable); ValueError naming the range otherwise."""
    newest, opset = onnx.defs.onnx_opset_version(), integer(opset, "opset")
    if not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset must be in [{MIN_OPSET}, {newest}] (what the installed onnx {onnx.__version__} "
                         f"writes), got {opset}")
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
        raise ValueError(f"opset {opset}: the installed onnxruntime {onnxruntime.__version__} cannot run the "
                         f"exported model ({first}); choose an older opset") from None


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


def export(model: Sequential, path: str | Path, **options: Any) -> Path:
    """Write `to_onnx(model, **options)` to `path` (atomically); returns the path."""
    proto = to_onnx(model, **options)
    atomic_write_bytes(path, proto.SerializeToString())
    return Path(path)


def export_checkpoint(checkpoint: str | Path, path: str | Path, **options: Any) -> Path:
    """What `xpcnn export` does: the checkpoint's model with the normalisation and class
    names of its training data, written to `path`."""
    from .checkpoint import load_checkpoint

    saved = load_checkpoint(checkpoint)
    saved.data_statistics()  # a CheckpointError where the file lacks them
    return export(saved.model, path, **options)  # with them: the model knows its data

