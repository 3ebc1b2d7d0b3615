"""Work on the GPU recorded once as a CUDA graph and replayed with one launch.

A training step launches the same few hundred small kernels every time, and on small
batches launching them from Python (~20 us each) takes longer than running them.
`Captured` records a function of fixed-shape arrays once (backend.record_graph) and
replays it after copying new inputs into the recorded ones.

What the step does on the host cannot be in a recording: it must run before every
replay. Layers and the optimizer hand it over with `from_host` (a host array the step
uses, drawn afresh for every step: dropout masks, the optimizer's coefficients) and
`each_step` (host bookkeeping, such as counters). Outside a recording both simply run,
so the step's code is the same either way, and a recorded step draws and counts exactly
what an unrecorded one would.

The device arrays that receive those host arrays must be made before the recording: one
made inside it may share memory with a temporary the graph writes earlier in the step,
which would overwrite what was copied in before the replay. A direct run of the step
under `planning()` makes them.

A library may do some of a step's work with calls a graph cannot hold (CuPy: cuBLAS).
Inside `recordable()`, fast paths take kernels that a graph can hold instead, also when
the step runs directly, so that a step does the same arithmetic recorded or not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import array_api_compat
import numpy as np
from array_api_compat import array_namespace, device

from . import backend


@dataclass
class _Recording:
    inputs: list[Any]  # device arrays for the from_host calls, in order, made before recording
    first: list[Callable[[], None]] = field(default_factory=list)  # copies of what the recording drew
    later: list[Callable[[], None]] = field(default_factory=list)  # host work before each later replay


_recording: ContextVar[_Recording | None] = ContextVar("xpcnn_recording", default=None)
_plan: ContextVar[list[Any] | None] = ContextVar("xpcnn_plan", default=None)
_recordable: ContextVar[bool] = ContextVar("xpcnn_recordable", default=False)


@contextmanager
def recordable() -> Iterator[None]:
    """Work in this block takes only kernels a CUDA graph can hold (see must_be_recordable)."""
    token = _recordable.set(True)
    try:
        yield
    finally:
        _recordable.reset(token)


def must_be_recordable() -> bool:
    """Whether the work now running is a step that is, or will be, recorded as a CUDA
    graph: a fast path then takes no call a graph cannot hold."""
    return _recordable.get()


def recording() -> bool:
    """Whether a step is being recorded now: its device work is captured, not run."""
    return _recording.get() is not None


@contextmanager
def planning() -> Iterator[list[Any]]:
    """Run a step directly and collect, in order, an empty device array for each host
    array it takes with from_host: what a recording of the step copies them into."""
    plan: list[Any] = []
    token = _plan.set(plan)
    try:
        yield plan
    finally:
        _plan.reset(token)


def from_host(draw: Callable[[], Any], like: Any) -> Any:
    """`draw()`, host data (a NumPy array, a list of numbers), placed like `like` in its
    dtype. While a step is being recorded: a device array that receives a fresh `draw()`
    before every replay."""
    value = np.asarray(draw())
    recording, plan = _recording.get(), _plan.get()
    if plan is not None:
        plan.append(array_namespace(like).empty(value.shape, dtype=like.dtype, device=device(like)))
    if recording is None:
        return backend.to_backend(value, backend.backend_of(like), device(like), like.dtype)
    if not recording.inputs or tuple(recording.inputs[0].shape) != value.shape:
        raise ValueError("the step takes other host arrays than in its planning run")
    buffer = recording.inputs.pop(0)
    recording.first.append(lambda: backend.copy_into(buffer, value))
    recording.later.append(lambda: backend.copy_into(buffer, draw()))
    return buffer


def each_step(work: Callable[[], Any]) -> None:
    """Run `work` (host bookkeeping of a step) now and, while a step is being recorded,
    before every later replay of it."""
    work()
    recording = _recording.get()
    if recording is not None:
        recording.later.append(work)


class Captured:
    """`fn(*args)` recorded once on the GPU of `like`, for arguments shaped like `example`,
    its host arrays going into `inputs` (made by `planning()`), and replayed by calling:
    `captured(*args)` copies `args` into the recorded arguments, does the host work of
    the step, replays, and returns the recorded result (arrays the replay wrote).

    Recording runs nothing: the first call is the recorded step's execution. `keep` are
    objects (layers, optimizers) whose arrays the recording may use although they were
    made before it: they are held for as long as this lives, so that no later allocation
    reuses their memory while the graph writes it.
    """

    def __init__(self, fn: Callable[..., Any], example: tuple[Any, ...], like: Any, inputs: list[Any],
                 keep: Iterable[Any] = ()) -> None:
        with backend.on_device(like):  # CuPy makes arrays on the current GPU, not the example's
            self._args = tuple(array_namespace(a).empty_like(a) for a in example)
        recording = _Recording(list(inputs))
        token = _recording.set(recording)
        try:
            self._result, self._replay = backend.record_graph(like, lambda: fn(*self._args))
        finally:
            _recording.reset(token)
        if recording.inputs:
            raise ValueError("the step takes fewer host arrays than in its planning run")
        self._recording, self._like = recording, like
        self._kept = _arrays([vars(owner) for owner in keep])
        self._replays = 0

    def __call__(self, *args: Any) -> Any:
        with backend.on_device(self._like):  # the copies on the graph's GPU and stream, before it
            for recorded, given in zip(self._args, args, strict=True):
                recorded[...] = given
            for work in self._recording.later if self._replays else self._recording.first:
                work()
            self._replay()
        self._replays += 1
        return self._result


def _arrays(value: Any) -> list[Any]:
    """The arrays in `value`, searching dicts, lists and tuples."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [array for item in value for array in _arrays(item)]
    return [value] if array_api_compat.is_array_api_obj(value) else []
