"""Layer hooks: code that runs around every layer's forward and backward in a Sequential.

The one per-layer loop is `Sequential.forward/backward`; tools that need to look at each
layer (anomaly detection, parity tracing, per-layer timing) attach a hook instead of
walking the layers themselves, the way Chainer's function hooks do:

    timer = TimerHook()
    with model.hooked(timer):
        ...  # training steps, exactly as usual
    for position, layer, forward_ms, backward_ms in timer.medians():
        print(position, layer, forward_ms, backward_ms)

A layer's position is its index in the network, or a string for a layer inside a block
("3.body.0"); `position_key` sorts them in network order.
"""

from __future__ import annotations

import difflib
import inspect
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from . import backend

Position = int | str  # a layer's index, or "3.body.0" for a layer inside a block


def check_points(obj: Any, base: type, prefixes: tuple[str, ...], named: str, caller: str) -> None:
    """TypeError, naming `obj` as `named`, where it has a method named nearly as a point of
    `base` that no `caller` calls (misnamed_points), or one that cannot take a point's
    arguments (unfit_points): what `base`'s subclasses (hooks, callbacks) are checked for
    where they are given, not deep in a run."""
    misnamed = misnamed_points(obj, base, prefixes)
    if misnamed:
        points = ", ".join(name for name in vars(base) if name.startswith(prefixes))
        raise TypeError(f"{named} has {', '.join(misnamed)}, which no {caller} calls ({points})")
    unfit = unfit_points(obj, base, prefixes)
    if unfit:
        raise TypeError(f"{named} has {'; '.join(unfit)}")


def misnamed_points(obj: Any, base: type, prefixes: tuple[str, ...]) -> list[str]:
    """Methods of `obj` named nearly as a point `base` is called at (starting with one of
    `prefixes`) that `base` has not: typos ("on_epoch_ends") that nothing would ever call.
    A name of its own ("on_best") is no typo."""
    points = [name for name in dir(base) if name.startswith(prefixes)]
    return [name for name in dir(type(obj)) if name.startswith(prefixes) and not hasattr(base, name)
            and callable(getattr(type(obj), name)) and difflib.get_close_matches(name, points, 1, cutoff=0.85)]


def unfit_points(obj: Any, base: type, prefixes: tuple[str, ...]) -> list[str]:
    """The points of `base` (its methods starting with one of `prefixes`) that `obj`
    overrides with what cannot take the point's arguments, each as "name(its parameters),
    called with (the point's)": found where `obj` is given, not deep in a run."""
    unfit = []
    for name in dir(base):
        point = getattr(base, name)
        own = name in getattr(obj, "__dict__", {})  # set on the object itself (cb.on_fit_end = ...)
        if not name.startswith(prefixes) or (getattr(type(obj), name, point) is point and not own):
            continue
        arguments = list(inspect.signature(point).parameters)[1:]  # self is bound in obj's
        mine = getattr(obj, name)
        try:
            inspect.signature(mine).bind(*arguments)
        except TypeError:
            shown = str(inspect.signature(mine)) if callable(mine) else f" = {mine!r}"[:60]
            unfit.append(f"{name}{shown}, called with ({', '.join(arguments)})")
        except ValueError:  # no signature to read (a builtin): it is called and says so then
            continue
    return unfit


class LayerHook:
    """Called by Sequential around each layer; override what you need (all do nothing).

    `index` is the layer's position: its index in the network, or inside a block
    (xpcnn.Residual) a path such as "3.body.0", the prefix of its arrays' names;
    a block is called around the calls of its layers. `dx` is None where the first layer
    skipped its input gradient (`backward(..., input_grad=False)`).
    """

    def before_forward(self, index: Position, layer: Any, x: Any) -> None:
        pass

    def after_forward(self, index: Position, layer: Any, y: Any) -> None:
        pass

    def before_backward(self, index: Position, layer: Any, dy: Any) -> None:
        pass

    def after_backward(self, index: Position, layer: Any, dx: Any) -> None:
        pass


class AtPositions(LayerHook):
    """`hook`, called only around the layers at `positions` (as str: "3", "3.body.0"):
    what Sequential.hooked(..., at=) attaches."""

    def __init__(self, hook: LayerHook, positions: frozenset[str]) -> None:
        self.hook, self.positions = hook, positions

    def before_forward(self, index: Position, layer: Any, x: Any) -> None:
        if str(index) in self.positions:
            self.hook.before_forward(index, layer, x)

    def after_forward(self, index: Position, layer: Any, y: Any) -> None:
        if str(index) in self.positions:
            self.hook.after_forward(index, layer, y)

    def before_backward(self, index: Position, layer: Any, dy: Any) -> None:
        if str(index) in self.positions:
            self.hook.before_backward(index, layer, dy)

    def after_backward(self, index: Position, layer: Any, dx: Any) -> None:
        if str(index) in self.positions:
            self.hook.after_backward(index, layer, dx)


def position_key(index: Position) -> tuple[int | str, ...]:
    """Sorts positions in network order: 2 < 3 < "3.body.0" < "3.body.1" < "3.shortcut.0" < 4."""
    return tuple(int(part) if part.isdigit() else part for part in str(index).split("."))


class TimerHook(LayerHook):
    """Wall time of each layer's forward and backward, per call.

    `sync` runs before every clock reading; pass the device's synchronize on a GPU, where
    a call returns before its kernels finish.
    """

    def __init__(self, sync: Callable[[], None] = lambda: None) -> None:
        if not callable(sync):
            raise TypeError(f"TimerHook sync must be a function, got {sync!r}")
        self.sync = sync
        self.forward: dict[Position, list[float]] = {}
        self.backward: dict[Position, list[float]] = {}
        self.names: dict[Position, str] = {}
        self._started: list[float] = []  # a block's start below those of the layers inside it

    def _start(self) -> None:
        self.sync()
        self._started.append(time.perf_counter())

    def _stop(self, store: dict[Position, list[float]], index: Position, layer: Any) -> None:
        self.sync()
        store.setdefault(index, []).append(time.perf_counter() - self._started.pop())
        self.names[index] = repr(layer)

    def before_forward(self, index: Position, layer: Any, x: Any) -> None:
        self._start()

    def after_forward(self, index: Position, layer: Any, y: Any) -> None:
        self._stop(self.forward, index, layer)

    def before_backward(self, index: Position, layer: Any, dy: Any) -> None:
        self._start()

    def after_backward(self, index: Position, layer: Any, dx: Any) -> None:
        self._stop(self.backward, index, layer)

    def medians(self, skip: int = 0) -> list[tuple[Position, str, float, float]]:
        """(index, layer, forward ms, backward ms): medians over the calls after the
        first `skip` (warm-up; over all of them where `skip` leaves none), layers in order
        (a block's time includes its layers')."""
        def median_ms(times: list[float]) -> float:
            kept = times[skip:] or times
            return statistics.median(kept) * 1e3 if kept else 0.0

        return [(i, self.names[i], median_ms(self.forward.get(i, [])), median_ms(self.backward.get(i, [])))
                for i in sorted(self.names, key=position_key)]


class TraceHook(LayerHook):
    """Host copies of everything a step computed, by layer index: each layer's input and
    output, its upstream gradient, its input gradient and its parameter gradients."""

    def __init__(self) -> None:
        self.inputs: dict[Position, np.ndarray] = {}
        self.outputs: dict[Position, np.ndarray] = {}
        self.upstream: dict[Position, np.ndarray] = {}
        self.input_grads: dict[Position, np.ndarray | None] = {}
        self.param_grads: dict[Position, dict[str, np.ndarray]] = {}

    def before_forward(self, index: Position, layer: Any, x: Any) -> None:
        self.inputs[index] = backend.to_numpy(x)

    def after_forward(self, index: Position, layer: Any, y: Any) -> None:
        self.outputs[index] = backend.to_numpy(y)

    def before_backward(self, index: Position, layer: Any, dy: Any) -> None:
        self.upstream[index] = backend.to_numpy(dy)

    def after_backward(self, index: Position, layer: Any, dx: Any) -> None:
        self.input_grads[index] = None if dx is None else backend.to_numpy(dx)
        self.param_grads[index] = {key: backend.to_numpy(value) for key, value in layer.grads.items()}
