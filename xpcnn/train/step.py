"""One optimizer step in two halves, run directly or replayed as CUDA graphs."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from array_api_compat import array_namespace, device

from .. import backend, capture
from ..capture import Captured
from ..layers.base import Shape
from ..losses import SoftmaxCrossEntropy
from ..metrics import count_correct
from ..model import Sequential
from ..optim import Optimizer
from ..presets import SettingsError


@dataclass
class _Halves:
    """The recordings of one batch shape's step, and the arrays made for their host inputs."""

    compute_inputs: list[Any]
    update_inputs: list[Any] | None = None
    compute: Captured | None = None
    update: Captured | None = None
    grads: list[dict[str, Any]] | None = None  # each layer's gradients, as the compute recording left them


class TrainingStep:
    """The two halves of an optimizer step: `compute(x, y)` (forward, loss and backward:
    the gradients, and the batch's loss and count of right answers as one device array)
    and `update()` (the optimizer), which the trainer calls once it has seen the loss.

    With `graphs`, the halves are recorded as CUDA graphs the second time a batch shape
    comes (the first runs directly: kernels compiled, optimizer state made, host inputs
    planned) and replayed from then on (xpcnn.capture): one launch each instead of
    hundreds, the same arithmetic. If recording fails, the step runs directly from then
    on and `log` says why.
    """

    def __init__(self, model: Sequential, optimizer: Optimizer, loss_fn: SoftmaxCrossEntropy, *, graphs: bool,
                 log: Callable[[str], None]) -> None:
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.graphs, self.log = graphs, log
        self._recordable_kernels = graphs  # kept when a recording fails: the arithmetic stays the run's
        self._halves: dict[Shape, _Halves] = {}
        self._current: _Halves | None = None  # this step's shape, when it is recorded or planned
        self._replayed = False  # whether this step's compute was replayed

    @property
    def recorded_shapes(self) -> int:
        """How many batch shapes have a recorded step."""
        return sum(1 for halves in self._halves.values() if halves.compute is not None)

    def compute(self, x: Any, y: Any, share: float = 1.0) -> Any:
        """Forward, loss and backward on a batch (or `share` of one: the gradient is
        scaled by it); returns [mean loss, right answers] on the device."""
        with self._recordable():
            return self._compute_or_replay(x, y, share)

    def update(self) -> None:
        """The optimizer's step, on the gradients `compute` left."""
        with self._recordable():
            self._update()

    def _recordable(self) -> contextlib.AbstractContextManager[Any]:
        """With graphs, every step takes kernels a graph can hold, the ones run directly
        (a batch shape's first, and all of them once a recording failed) too, so that all
        steps do the same arithmetic, as a resumed run's do."""
        return capture.recordable() if self._recordable_kernels else contextlib.nullcontext()

    def _compute_or_replay(self, x: Any, y: Any, share: float) -> Any:
        self._current, self._replayed = None, False
        if not self.graphs or share != 1.0:
            return self._compute(x, y, share)
        halves = self._halves.get(tuple(x.shape))
        if halves is None:
            with capture.planning() as inputs:
                both = self._compute(x, y)
            self._current = self._halves[tuple(x.shape)] = _Halves(inputs)
            return both
        if halves.compute is None:
            halves.compute = self._record(self._compute, (x, y), halves.compute_inputs)
            if halves.compute is None:
                return self._compute(x, y)
            halves.grads = [layer.grads for _, layer in self.model.named_layers()]
        self._current, self._replayed = halves, True
        both = halves.compute(x, y)
        for (_, layer), grads in zip(self.model.named_layers(), halves.grads or []):
            layer.grads = grads  # what the replay wrote, also after another shape's step
        return both

    def _update(self) -> None:
        halves = self._current
        if halves is None:
            self.optimizer.step()
        elif not self._replayed or halves.update_inputs is None:
            with capture.planning() as inputs:
                self.optimizer.step()
            halves.update_inputs = inputs
        else:
            if halves.update is None:
                halves.update = self._record(self.optimizer.step, (), halves.update_inputs)
            if halves.update is None:
                self.optimizer.step()
            else:
                halves.update()

    def _compute(self, x: Any, y: Any, share: float = 1.0) -> Any:
        xp = array_namespace(x)
        logits = self.model.forward(x, training=True)
        with backend.on_device(x):
            loss = self.loss_fn.forward(logits, y)
            both = xp.stack([loss, xp.astype(count_correct(logits, y), loss.dtype)])
            dy = self.loss_fn.backward()
            if share != 1.0:  # this share's part of the gradient of the whole batch's mean loss
                dy = dy * share
        self.model.backward(dy, input_grad=False)
        return both

    def _record(self, fn: Callable[..., Any], example: tuple[Any, ...], inputs: list[Any]) -> Captured | None:
        """`fn` recorded, or None (graphs off from now on, the host counters the attempt
        advanced put back) when this backend cannot record it."""
        counters = [layer.extra_state() for layer in self.model]
        steps = self.optimizer.steps
        try:
            return Captured(fn, example, like=next(iter(self.model.params.values())), inputs=inputs,
                            keep=[*(layer for _, layer in self.model.named_layers()), self.optimizer,
                                  self.loss_fn])
        except Exception as exc:  # noqa: BLE001  (whatever the library refuses: run without graphs)
            for layer, state in zip(self.model, counters):
                layer.load_extra_state(state)
            self.model.release_work_memory()  # made inside the failed recording: never written
            self.optimizer.steps = steps
            self.graphs = False
            self.log(f"note: training without CUDA graphs: recording a step failed ({type(exc).__name__}: {exc})")
            return None


def first_param(model: Sequential) -> Any | None:
    """One of `model`'s parameters (None without any): where its steps run."""
    return next(iter(model.params.values()), None)


def can_record(model: Sequential) -> bool:
    """Whether the training steps of `model` can be recorded as CUDA graphs."""
    return _can_record_on(first_param(model))


def _can_record_on(like: Any) -> bool:
    """Whether steps on arrays like `like` (None: a model without parameters) can be recorded."""
    return like is not None and backend.can_record_graphs(like)


def check_graphs(requested: bool | None, like: Any) -> None:
    """SettingsError when CUDA graphs are asked for (True) for steps on arrays like `like`
    (None: a model without parameters), where none can be recorded."""
    if requested and not _can_record_on(like):
        where = "a model without parameters" if like is None else f"{backend.backend_of(like)} ({device(like)})"
        raise SettingsError("cuda_graphs", "CUDA graphs need PyTorch on a CUDA device, or CuPy; this run is on "
                            + where)


def use_graphs(requested: bool | None, model: Sequential, alone: bool, log: Callable[[str], None]) -> bool:
    """Whether a fit records its steps as CUDA graphs: where `model`'s backend does so
    unasked (None: backend.records_graphs_unasked), always (True: SettingsError where it
    cannot) or never (False), and only `alone`: not in data-parallel training, nor while
    hooks or anomaly checks watch the layers."""
    if requested is False:
        return False
    like = first_param(model)
    check_graphs(requested, like)
    if requested and not alone:
        log("note: no CUDA graphs in data-parallel training or while hooks or anomaly checks watch the layers")
    return alone and _can_record_on(like) and (bool(requested) or backend.records_graphs_unasked(like))
