"""Backend parity: run the same weights and batch on several backends and say, layer by
layer, how far the results drift apart.

Two views, both against the first backend (the reference):

- local (judged): every layer of every backend gets the reference's input in forward and
  the reference's upstream gradient in backward, so each row measures that layer's own
  implementation, and the first failing row names the layer that differs. Identical
  inputs also keep exact ties (flat image backgrounds through max pooling) identical.
- end-to-end (shown, only the loss judged): each backend runs the whole network on its
  own; rounding differences propagate, and a max-pool tie that one backend breaks the
  other way sends a gradient to another pixel. Useful to see, not a bug.

A row's difference is max_abs = max|a - ref|, and
    max_rel = max_abs / max(max|ref|, max|what it was computed from|)
where "what it was computed from" is the layer input for outputs and the upstream
gradient for gradients. The second term keeps a quantity that cancels to ~0 (the bias
gradient of a convolution followed by batch norm is exactly 0 in exact arithmetic) from
being judged by its rounding noise. A row passes when max_rel <= TOLERANCES[dtype].

Why the tolerances are not zero: backends sum in different orders (BLAS blocking,
pairwise vs sequential reductions, fused multiply-add), so a K-term sum differs by about
eps * sqrt(K) relative, eps = 6e-8 (float32) or 1.1e-16 (float64). The measured worst
local differences of the presets are up to 3e-5 (float32: a 25,000-term weight gradient
of lenet's first convolution) and 1e-13 (float64), see docs/python.md; the tolerances leave
one and a half to three orders of magnitude of headroom, and a real bug (a wrong index,
term or dtype) gives 1e-3 to 1, which float64 parity sees with room to spare.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import backend, optim
from ..checks import integer, number
from ..hooks import TraceHook
from ..losses import SoftmaxCrossEntropy
from ..model import Sequential

TOLERANCES = {"float64": 1e-10, "float32": 1e-3}
# Allowed weight drift per training step, by optimizer family and dtype. SGD drifts by
# rounding alone. Adam divides each gradient by its own running size, so a gradient that
# is 0 up to rounding (a bias before batch norm) becomes a full step of +-lr whose sign is
# the rounding noise's: measured 4e-3 after one float32 step of `lenet` at lr 1e-3.
TRAJECTORY_TOLERANCES = {
    ("sgd", "float32"): 1e-5, ("sgd", "float64"): 1e-12,
    ("adam", "float32"): 2e-2, ("adam", "float64"): 1e-8,
}


def parse_target(spec: str) -> tuple[str, str | None]:
    """"torch:cuda:0" -> ("torch", "cuda:0"); "numpy" -> ("numpy", None)."""
    name, _, device = spec.partition(":")
    return name, device or None


def model_from(spec: str, seed: int = 0, width: float | None = None) -> Sequential:
    """A preset by name, from `seed` (at `width`, for the presets that scale), or the
    model of a checkpoint (a file or a run folder); LookupError when `spec` is neither,
    SettingsError for a width it does not take."""
    from .. import presets
    from ..io.checkpoint import load_checkpoint

    if spec in presets.PRESETS or spec in presets.ALIASES:
        return presets.build(spec, seed, width=1.0 if width is None else width)
    if Path(spec).is_file() or (Path(spec) / "checkpoint.npz").is_file():
        if width is not None:
            raise presets.SettingsError("width", "a checkpoint's network has its width already")
        return load_checkpoint(spec).model
    names = ", ".join([*presets.PRESETS, *presets.ALIASES])
    raise LookupError(f"{spec!r} is neither a preset ({names}) nor a checkpoint file or run folder")


def usable_targets(spec: str) -> list[tuple[str, str | None]]:
    """"numpy,torch:cuda" -> [("numpy", None), ("torch", "cuda")], after checking there are
    at least two and each runs here; ValueError naming the first that does not."""
    targets = [parse_target(part.strip()) for part in spec.split(",") if part.strip()]
    if len(targets) < 2:
        raise ValueError("needs at least two backends, e.g. numpy,torch")
    for name, device in targets:
        reason = backend.device_unusable_reason(name, device)
        if reason is not None:
            raise ValueError(f"backend {name}{':' + device if device else ''} is not usable here: {reason}")
    return targets


def target_label(target: tuple[str, Any]) -> str:
    name, device = target
    return name if device in (None, "cpu") else f"{name}:{device}"


def clone(model: Sequential, backend_name: str, device: Any = None, dtype: str | None = None) -> Sequential:
    """An independent copy of `model` (weights, buffers, dropout counters) on a backend;
    ArchitectureError where it holds a layer that cannot be rebuilt (register_layer)."""
    model.check_rebuildable()  # else a layer of one's own named like a built-in is compared as the built-in
    copy = Sequential.from_config(model.config())
    copy.set_arrays({name: backend.to_numpy(value) for name, value in {**model.params, **model.buffers}.items()})
    for mine, theirs in zip(copy, model):
        mine.load_extra_state(theirs.extra_state())
    return copy.to(backend_name, device, dtype or model.dtype)


def _max_abs(array: Any) -> float:
    return float(np.max(np.abs(np.asarray(array, np.float64)), initial=0.0))


def difference(value: Any, reference: Any, source: Any = None) -> tuple[float, float]:
    """(max_abs, max_rel) of `value` against `reference`, host arrays compared in float64;
    the relative scale is max(max|reference|, max|source|), `source` being what the
    reference was computed from (see the module docstring)."""
    a, b = np.asarray(value, np.float64), np.asarray(reference, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    max_abs = float(np.max(np.abs(a - b), initial=0.0))
    scale = max(_max_abs(b), _max_abs(source) if source is not None else 0.0)
    return max_abs, (max_abs / scale if scale > 0 else max_abs)


def finite_or_none(value: Any) -> Any:
    """`value` (numbers, lists and dicts of them) with every NaN and infinity replaced by
    None: json.dumps would write them as NaN and Infinity, which JSON readers refuse."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite_or_none(item) for item in value]
    return value


@dataclass
class Row:
    """One compared quantity: e.g. layer 4 (Conv2D) 'grad weight' on torch vs numpy."""

    view: str  # "local" or "end-to-end"
    layer: int | str | None  # position ("3.body.0" inside a block); None for the loss
    name: str
    quantity: str  # "output", "grad input", "grad <param>", "loss"
    backend: str
    max_abs: float
    max_rel: float
    tolerance: float
    judged: bool = True

    @property
    def passed(self) -> bool:
        return bool(self.max_rel <= self.tolerance) or not self.judged


@dataclass
class ParityReport:
    reference: str
    dtype: str
    rows: list[Row] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(row.passed for row in self.rows)

    @property
    def first_failure(self) -> Row | None:
        """The first judged quantity beyond tolerance, in the order computed."""
        return next((row for row in self.rows if not row.passed), None)

    def worst(self, view: str = "local") -> Row | None:
        """The row of `view` with the largest relative difference, a NaN one first (by the
        number alone, max() would pass over a NaN and name a row that agrees)."""
        rows = [row for row in self.rows if row.view == view]
        return max(rows, key=lambda row: (math.isnan(row.max_rel), row.max_rel), default=None)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON's types: a NaN or infinite difference (a network whose values
        overflow) is None, JSON's null, since JSON has no such numbers."""
        first = self.first_failure
        return finite_or_none({
            "reference": self.reference, "dtype": self.dtype, "passed": self.passed,
            "tolerance": TOLERANCES.get(self.dtype), "first_failure": asdict(first) if first else None,
            "rows": [{**asdict(row), "passed": row.passed} for row in self.rows],
        })

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_table(self) -> str:
        header = ("view", "layer", "quantity", "backend", "max abs diff", "max rel diff", "tolerance", "verdict")
        lines = [header]
        for row in self.rows:
            where = "loss" if row.layer is None else f"{row.layer} {row.name}"
            verdict = ("ok" if row.passed else "FAIL") if row.judged else "(shown)"
            tolerance = f"{row.tolerance:.0e}" if row.judged else "-"
            lines.append(
                (
                    row.view,
                    where,
                    row.quantity,
                    row.backend,
                    f"{row.max_abs:.3e}",
                    f"{row.max_rel:.3e}",
                    tolerance,
                    verdict,
                )
            )
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
        text.insert(1, "  ".join("-" * w for w in widths))
        verdict = "PASS" if self.passed else f"FAIL: first difference at {_describe(self.first_failure)}"
        text.append(f"reference {self.reference}, {self.dtype}: {verdict}")
        return "\n".join(text)


def _describe(row: Row | None) -> str:
    if row is None:
        return "-"
    where = "the loss" if row.layer is None else f"layer {row.layer} ({row.name}) {row.quantity}"
    if math.isnan(row.max_rel):  # no difference to compare: the values overflowed, on one side or both
        return f"{where} on {row.backend}: values that are not finite (NaN or Inf), here or in the reference"
    return f"{where} on {row.backend}: relative difference {row.max_rel:.2e} > {row.tolerance:.0e}"


@dataclass
class _Trace:
    """Everything one backend computed in one step, on the host, by layer position (every
    layer, a block's walked into, and the block itself), and the network's output."""

    inputs: dict[Any, np.ndarray]  # the layer's input
    outputs: dict[Any, np.ndarray]  # its output
    upstream: dict[Any, np.ndarray]  # d loss / d its output
    input_grads: dict[Any, np.ndarray]  # d loss / d its input
    param_grads: dict[Any, dict[str, np.ndarray]]
    loss: float
    logits: np.ndarray  # the network's output: a last block's is not its last layer's


def _trace(model: Sequential, x_host: np.ndarray, y_host: np.ndarray, target: tuple[str, Any], dtype: str) -> _Trace:
    """Forward, loss and backward on one backend, every intermediate copied to the host."""
    name, device = target
    x = backend.to_backend(x_host, name, device, dtype)
    y = backend.to_backend(y_host, name, device)
    loss_fn, trace = SoftmaxCrossEntropy(), TraceHook()
    with model.hooked(trace):
        loss = float(loss_fn.forward(model.forward(x, training=True), y))
        model.backward(loss_fn.backward())
    return _Trace(trace.inputs, trace.outputs, trace.upstream, trace.input_grads, trace.param_grads, loss,
                  trace.outputs[len(model) - 1])


def _local(model: Sequential, ref: _Trace, y_host: np.ndarray, target: tuple[str, Any], dtype: str) -> _Trace:
    """Each layer of `model` on the reference's inputs and upstream gradients."""
    name, device = target
    layers = model.named_layers()
    outputs = {i: backend.to_numpy(layer.forward(backend.to_backend(ref.inputs[i], name, device, dtype), True))
               for i, layer in layers}
    loss = float(SoftmaxCrossEntropy().forward(backend.to_backend(ref.logits, name, device, dtype),
                                               backend.to_backend(y_host, name, device)))
    input_grads, param_grads = {}, {}
    for i, layer in layers:
        input_grads[i] = backend.to_numpy(layer.backward(backend.to_backend(ref.upstream[i], name, device, dtype)))
        param_grads[i] = {k: backend.to_numpy(v) for k, v in layer.grads.items()}
    return _Trace(ref.inputs, outputs, ref.upstream, input_grads, param_grads, loss, ref.logits)


def _rows(view: str, label: str, layers: list[tuple[Any, Any]], run: _Trace, ref: _Trace, tol: float) -> list[Row]:
    """Rows in the order computed: outputs, loss, then gradients from the last layer back."""
    judged = view == "local"
    rows = [Row(view, i, type(layer).__name__, "output", label,
                *difference(run.outputs[i], ref.outputs[i], ref.inputs[i]), tol, judged)
            for i, layer in layers]
    loss_abs = abs(run.loss - ref.loss)
    rows.append(
        Row(view, None, "SoftmaxCrossEntropy", "loss", label, loss_abs, loss_abs / max(abs(ref.loss), 1e-30), tol)
    )
    for i, layer in reversed(layers):
        name = type(layer).__name__
        for key, grad in run.param_grads[i].items():
            rows.append(
                Row(
                    view,
                    i,
                    name,
                    f"grad {key}",
                    label,
                    *difference(grad, ref.param_grads[i][key], ref.upstream[i]),
                    tol,
                    judged,
                )
            )
        rows.append(
            Row(
                view,
                i,
                name,
                "grad input",
                label,
                *difference(run.input_grads[i], ref.input_grads[i], ref.upstream[i]),
                tol,
                judged,
            )
        )
    return rows


def _targets(model: Any, backends: Any, function: str) -> list[tuple[str, Any]]:
    """(name, device) of each backend ("name", "name:device" or a pair), at least two;
    TypeError naming `function` for a model that is not a Sequential or backends given as
    one string."""
    if not isinstance(model, Sequential):
        raise TypeError(f"{function} takes a Sequential (a layer alone: Sequential([layer])), got "
                        f"{type(model).__name__}")
    if isinstance(backends, str):
        raise TypeError(f"{function} backends must be a list of names, such as {backends.split(',')}, got the string "
                        f"{backends!r}")
    targets = [parse_target(b) if isinstance(b, str) else tuple(b) for b in backends]
    if len(targets) < 2:
        raise ValueError(f"{function} needs at least two backends")
    return targets


def _host_batches(batches: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """`batches` as (images, labels) pairs; TypeError naming the first that is not one."""
    pairs = list(batches)
    for index, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(f"trajectory batches must be (images, labels) pairs; batch {index} is a "
                            f"{type(pair).__name__}{f' of {len(pair)}' if hasattr(pair, '__len__') else ''}")
    return pairs


def compare(
    model: Sequential,
    x: Any,
    y: Any,
    backends: Sequence[str | tuple[str, Any]] = ("numpy", "torch"),
    dtype: str = "float64",
    tolerance: float | None = None,
) -> ParityReport:
    """Copy `model` and the batch (x: (N, C, H, W), y: (N,) integer) to each backend
    ("name" or "name:device"), run forward, loss and backward in training mode, and
    compare every layer's output, input gradient and parameter gradients, and the loss,
    with the first backend's: layer by layer from identical inputs (judged), and end to
    end (shown; its loss judged)."""
    targets = _targets(model, backends, "compare")
    dtype = backend.float_name(dtype)
    tol = TOLERANCES[dtype] if tolerance is None else number(tolerance, "compare tolerance", 0.0, math.inf)
    x_host, y_host = backend.to_numpy(x), backend.to_numpy(y)
    layers = model.named_layers()
    ref = _trace(clone(model, *targets[0], dtype), x_host, y_host, targets[0], dtype)
    report = ParityReport(target_label(targets[0]), dtype)
    for target in targets[1:]:
        label = target_label(target)
        local = _local(clone(model, *target, dtype), ref, y_host, target, dtype)
        report.rows += _rows("local", label, layers, local, ref, tol)
        whole = _trace(clone(model, *target, dtype), x_host, y_host, target, dtype)
        report.rows += _rows("end-to-end", label, layers, whole, ref, tol)
    return report


def _layer_drift(model: Sequential, reference: Sequential) -> float:
    """Largest per-layer weight drift: max|w - w_ref| over a layer's parameters, relative
    to that layer's largest reference weight (a bias that stays ~0, such as one before
    batch norm, is judged against its layer's weights, not its own rounding noise)."""
    worst = 0.0
    for (_, mine), (_, theirs) in zip(model.named_layers(), reference.named_layers()):
        if mine.params:
            diff = max(
                _max_abs(backend.to_numpy(mine.params[k]) - backend.to_numpy(theirs.params[k])) for k in mine.params
            )
            scale = max(_max_abs(backend.to_numpy(v)) for v in theirs.params.values())
            worst = max(worst, diff / scale if scale > 0 else diff)
    return worst


@dataclass
class TrajectoryReport:
    """Per step: each backend's loss and the largest relative weight drift from the reference."""

    reference: str
    dtype: str
    backends: list[str]
    losses: list[list[float]] = field(default_factory=list)  # [step][backend]
    drift: list[float] = field(default_factory=list)  # [step]: max over backends and parameters
    tolerance_per_step: float = 0.0

    @property
    def passed(self) -> bool:
        return all(d <= self.tolerance_per_step * (step + 1) for step, d in enumerate(self.drift))

    def to_dict(self) -> dict[str, Any]:
        """As ParityReport.to_dict: a NaN or infinite loss or drift is None."""
        return finite_or_none({**asdict(self), "passed": self.passed})

    def to_table(self) -> str:
        lines = ["step  " + "  ".join(f"loss {b:>16s}" for b in self.backends) + "  max weight drift  allowed"]
        for step, (losses, drift) in enumerate(zip(self.losses, self.drift)):
            allowed = self.tolerance_per_step * (step + 1)
            lines.append(
                f"{step + 1:4d}  "
                + "  ".join(f"{v:21.10f}" for v in losses)
                + f"  {drift:16.3e}  {allowed:7.0e}{'' if drift <= allowed else '  FAIL'}"
            )
        lines.append(f"reference {self.reference}, {self.dtype}: {'PASS' if self.passed else 'FAIL'}")
        return "\n".join(lines)


def trajectory(
    model: Sequential,
    batches: Sequence[tuple[np.ndarray, np.ndarray]],
    backends: Sequence[str | tuple[str, Any]] = ("numpy", "torch"),
    dtype: str = "float64",
    optimizer: str = "sgd",
    lr: float = 0.01,
    tolerance_per_step: float | None = None,
) -> TrajectoryReport:
    """Train a copy of `model` on each backend over the same host `batches`, one optimizer
    step each, and follow how far losses and weights drift apart."""
    targets = _targets(model, backends, "trajectory")
    dtype = backend.float_name(dtype)  # which also keys the tolerances
    batches = _host_batches(batches)
    copies = [clone(model, name, device, dtype) for name, device in targets]
    momentum = 0.9 if optimizer == "sgd" else 0.0
    optimizers = [optim.build(optimizer, m, lr, momentum=momentum) for m in copies]
    family = "sgd" if optimizer == "sgd" else "adam"
    allowed = TRAJECTORY_TOLERANCES[(family, dtype)] if tolerance_per_step is None else tolerance_per_step
    report = TrajectoryReport(
        target_label(targets[0]), dtype, [target_label(t) for t in targets], tolerance_per_step=allowed
    )
    loss_fn = SoftmaxCrossEntropy()
    for x_host, y_host in batches:
        losses = []
        for (name, device), net, opt in zip(targets, copies, optimizers):
            x = backend.to_backend(x_host, name, device, dtype)
            y = backend.to_backend(y_host, name, device)
            losses.append(float(loss_fn.forward(net.forward(x), y)))
            net.backward(loss_fn.backward())
            opt.step()
        drift = max(_layer_drift(net, copies[0]) for net in copies[1:])
        report.losses.append(losses)
        report.drift.append(drift)
    return report


@dataclass
class ParityCheck:
    """What `xpcnn parity` reports: one batch compared layer by layer and, with steps, a
    short training trajectory."""

    model: str
    parameters: int
    batch_size: int
    compare: ParityReport
    trajectory: TrajectoryReport | None = None
    optimizer: str = "sgd"
    images: str = "bundled MNIST images"  # what the batch was

    @property
    def passed(self) -> bool:
        return self.compare.passed and (self.trajectory is None or self.trajectory.passed)

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {"model": self.model, "batch_size": self.batch_size, "images": self.images,
                                  "compare": self.compare.to_dict()}
        if self.trajectory is not None:
            result["trajectory"] = self.trajectory.to_dict()
        result["passed"] = self.passed
        return result

    def to_text(self) -> str:
        lines = [f"parity of {self.model} ({self.parameters:,} parameters), batch of {self.batch_size} "
                 f"{self.images}, {self.compare.dtype}", self.compare.to_table()]
        if self.trajectory is not None:  # without one, the comparison table's last line gives the verdict
            lines += [
                f"\ntraining {len(self.trajectory.drift)} steps with {self.optimizer}:",
                self.trajectory.to_table(),
                f"both: {'PASS' if self.passed else 'FAIL'}",
            ]
        return "\n".join(lines)


def check(
    model: Sequential | str | Path,
    backends: Sequence[str | tuple[str, Any]],
    dtype: str = "float64",
    *,
    batch_size: int = 32,
    steps: int = 0,
    optimizer: str | None = None,
    seed: int = 0,
    name: str = "model",
) -> ParityCheck:
    """`compare` on the first `batch_size` images of the model's own input (see
    parity_data; all of them where there are fewer, and the report says how many) and,
    with `steps`, `trajectory` over that many training batches drawn from `seed`, with
    `optimizer` (default: sgd; SettingsError without steps). `model` may be what `xpcnn
    parity --model` takes: a preset's name (built from `seed`), a checkpoint file or a run
    folder (see model_from)."""
    from ..datasets import batches
    from ..presets import SettingsError

    steps, batch_size, seed = integer(steps, "steps", 0), integer(batch_size, "batch_size", 1), integer(seed, "seed", 0)
    if isinstance(model, (str, Path)):
        name = str(model) if name == "model" else name
        model = model_from(str(model), seed)
    if optimizer is not None and not steps:
        raise SettingsError("optimizer", "it is the optimizer of the training steps: give steps as well (--steps K)")
    optimizer = optimizer or "sgd"
    train, test, images = parity_data(model, batch_size * max(steps, 1), seed)
    x, y = next(batches(test, batch_size, shuffle=False, dtype=dtype))  # fewer where the data has fewer
    result = ParityCheck(
        name, model.num_params(), int(x.shape[0]), compare(model, x, y, backends, dtype), optimizer=optimizer,
        images=images,
    )
    if steps:  # epoch after epoch: 8 steps of 2,000 bundled images are more than one epoch holds
        epochs = (batches(train, batch_size, seed=seed, epoch=epoch, dtype=dtype) for epoch in itertools.count())
        train_batches = list(itertools.islice(itertools.chain.from_iterable(epochs), steps))
        result.trajectory = trajectory(model, train_batches, backends, dtype, optimizer)
    return result


def parity_data(model: Sequential, count: int, seed: int) -> tuple[Any, Any, str]:
    """(train, test, what they are): the bundled MNIST subset for a network of 28x28 grey
    digits (or one that does not say what it takes but takes them); for any other, `count` images of
    random pixels drawn from `seed`, of the shape, classes and normalisation it was
    trained on (model.data): the arithmetic compared is the same whatever the pixels show."""
    from ..datasets import Dataset, DatasetSpec, load_bundled

    known = model.data or _assumed_data(model)
    shape = tuple(known.get("input_shape", (1, 28, 28)))
    if shape == (1, 28, 28) and len(known.get("classes", range(10))) == 10:
        data = load_bundled()
        return data.train, data.test, "bundled MNIST images"
    rng = np.random.default_rng([seed, 7])
    spec = DatasetSpec.from_statistics(known)
    made = [Dataset(rng.integers(0, 256, (count, *shape), dtype=np.uint8),
                    rng.integers(0, len(spec.classes), count), spec) for _ in range(2)]
    return made[0], made[1], f"random {'x'.join(map(str, shape))} images"


def _assumed_data(model: Sequential) -> dict[str, Any]:
    """What a network that does not know its data is compared on: 28x28 grey digits where
    it takes them, else 32x32 colour images (CIFAR's shape), normalised as [0, 1] pixels
    around 0.5."""
    for shape in ((1, 28, 28), (3, 32, 32)):
        try:
            classes = model.output_shapes((1, *shape))[-1][-1]
        except ValueError:
            continue
        return {"name": "random", "input_shape": shape, "classes": [str(k) for k in range(classes)],
                "mean": [0.5] * shape[0], "std": [0.25] * shape[0]}
    return {}
