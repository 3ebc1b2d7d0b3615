"""Data-parallel training: the processes of an MPI job, or worker threads of one process,
train one model together.

Every member (process or thread) holds the whole model and takes its slice of every
global batch (rows `shard_bounds(n, rank, size)`). After backward, the gradients of all
members are summed (one packed allreduce over MPI), so each applies the same update and
the weights stay equal. Worker threads share one set of parameters instead, and each
sums and updates its part of it (`Threads.update_together`).
What depends on the whole batch is computed for the whole batch:

- the loss gradient is scaled by local rows / global rows (the mean over the global batch);
- batch norm sums its statistics over all processes (`batch_sum`), forward and backward;
- dropout masks and augmentation shifts are drawn for the global batch and sliced
  (`batch_rows`), so N processes see the masks one process would.

While a Trainer computes a step it sets the `Shard` (`sharded(...)`): where this member's
rows lie in the global batch and who holds the others. Outside a step, and for a single
member, `batch_sum` and `batch_rows` change nothing.

Communicators: `Single` (one process alone), `MPI` (over mpi4py: only this module imports
it, and only when an MPI job has more than one process, so a single process needs no MPI
at all), and `Threads` (worker threads in one process, see Trainer's `workers`).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import operator
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from array_api_compat import array_namespace, device

from . import backend
from .extras import install_hint

T = TypeVar("T")

# Set by the launchers: Open MPI, MPICH/Hydra and Intel MPI, PMIx.
SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE")
RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")


class Communicator:
    """The members (processes or threads) training one model; this base class is one
    process alone."""

    rank = 0
    size = 1
    kind = "single process"
    shares_parameters = False  # True: the members update one set of parameters together

    @property
    def is_root(self) -> bool:
        """Whether this process writes files and prints progress (rank 0)."""
        return self.rank == 0

    def sum_arrays(self, arrays: Sequence[Any]) -> list[Any]:
        """The element-wise sums over all processes of same-shaped arrays, in one call."""
        return list(arrays)

    def sum_numbers(self, *values: float) -> list[float]:
        """Host numbers summed over all processes, in one call."""
        return list(values)

    def any(self, flag: bool) -> bool:
        """Whether `flag` is true in any process (how all processes agree to stop)."""
        return flag

    def gather(self, value: Any) -> list[Any]:
        """Every process's `value` (a picklable host object), in rank order."""
        return [value]

    def broadcast(self, value: Any) -> Any:
        """The first process's `value` (a picklable host object), on every process."""
        return value

    def fail(self, error: Exception) -> None:
        """This member failed alone with `error` (about to be raised): make sure the
        others do not wait for it forever."""


class Single(Communicator):
    """One process: every reduction is the identity."""


class MPI(Communicator):
    """The processes of an MPI communicator (default: MPI_COMM_WORLD), over mpi4py."""

    kind = "MPI"

    def __init__(self, comm: Any = None) -> None:
        from mpi4py import MPI as mpi

        self._mpi = mpi
        self.comm = comm if comm is not None else mpi.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()

    def sum_arrays(self, arrays: Sequence[Any]) -> list[Any]:
        if not arrays:
            return []
        first = arrays[0]
        xp = array_namespace(first)
        # One buffer for all: one allreduce per call, not one per array.
        packed = np.ascontiguousarray(backend.to_numpy(xp.concat([xp.reshape(a, (-1,)) for a in arrays])))
        self.comm.Allreduce(self._mpi.IN_PLACE, packed, op=self._mpi.SUM)
        summed = backend.to_backend(packed, backend.backend_of(first), device(first))
        out, offset = [], 0
        for a in arrays:
            size = int(np.prod(a.shape))
            out.append(xp.reshape(summed[offset : offset + size], tuple(a.shape)))
            offset += size
        return out

    def sum_numbers(self, *values: float) -> list[float]:
        packed = np.array(values, dtype=np.float64)
        self.comm.Allreduce(self._mpi.IN_PLACE, packed, op=self._mpi.SUM)
        return [float(v) for v in packed]

    def any(self, flag: bool) -> bool:
        return bool(self.comm.allreduce(bool(flag), op=self._mpi.LOR))

    def gather(self, value: Any) -> list[Any]:
        return self.comm.allgather(value)

    def broadcast(self, value: Any) -> Any:
        return self.comm.bcast(value, root=0)

    def fail(self, error: Exception) -> None:
        print(f"xpcnn: process {self.rank} of {self.size} failed ({error}); ending the job", file=sys.stderr)
        sys.stderr.flush()
        self.comm.Abort(1)


class Threads(Communicator):
    """One of `size` worker threads of one process, each training a replica of the model
    on its share of every batch (see Trainer's `workers`). They meet at a barrier to
    exchange values; every member sums them in the same order, so all get the same sums.

    The replicas share their parameters and optimizer state, and each worker updates its
    part of them (`update_together`)."""

    kind = "threads"
    shares_parameters = True

    def __init__(self, rank: int, size: int, barrier: threading.Barrier, slots: list[list[Any]]) -> None:
        self.rank, self.size, self._barrier, self._slots = rank, size, barrier, slots
        self._calls = 0

    @classmethod
    def group(cls, size: int) -> list[Threads]:
        """The members of a new group of `size` threads, in rank order."""
        barrier, slots = threading.Barrier(size), [[None] * size, [None] * size]
        return [cls(rank, size, barrier, slots) for rank in range(size)]

    def _exchange(self, value: Any) -> list[Any]:
        # A member must not change `value` in place until its next exchange: the others
        # may still be reading it. Two sets of slots, used in turn: a member can write its
        # next value while a slower one still reads this exchange, and no member can be two
        # exchanges ahead (the next barrier waits for all), so one barrier per exchange is
        # enough.
        slots = self._slots[self._calls % 2]
        self._calls += 1
        slots[self.rank] = value
        self._barrier.wait()
        return list(slots)

    def sum_arrays(self, arrays: Sequence[Any]) -> list[Any]:
        everyone = self._exchange(list(arrays))
        return [functools.reduce(operator.add, column) for column in zip(*everyone)]

    def sum_numbers(self, *values: float) -> list[float]:
        return [sum(column) for column in zip(*self._exchange(values))]

    def any(self, flag: bool) -> bool:
        return any(self._exchange(bool(flag)))

    def gather(self, value: Any) -> list[Any]:
        return self._exchange(value)

    def broadcast(self, value: Any) -> Any:
        return self._exchange(value)[0]

    def fail(self, error: Exception) -> None:
        self._barrier.abort()  # the others get BrokenBarrierError at their next exchange

    def update_together(self, model: Any, optimizer: Any) -> None:
        """This worker's part of the optimizer step of replicas that share the parameters
        and optimizer state: its rows of the parameters (`row_spans`), their gradients
        summed over the workers, updated; returns once every part is. Each element is
        summed and updated as `sum_gradients` then a whole step would, by one worker
        instead of all. The shared optimizer state must be ready before the workers start
        (`Optimizer.make_state`): none of them changes which arrays it holds."""
        everyone = self._exchange(model.grads)
        spans = row_spans(model.params, self.rank, self.size)
        grads = {name: functools.reduce(operator.add, [part_of(g[name], span) for g in everyone])
                 for name, span in spans.items() if all(name in g for g in everyone)}  # else step says which is missing
        optimizer.step(Part(spans, grads))
        self._exchange(None)  # nobody reads the parameters before all parts are updated


def _launched(names: tuple[str, ...], default: int) -> int:
    for name in names:
        value = os.environ.get(name, "")
        if value.isdecimal():  # what int() reads: "²" is a digit, not a decimal
            return int(value)
    return default


def launched_size() -> int:
    """The number of processes the MPI launcher started (1 when not under one)."""
    return _launched(SIZE_VARIABLES, 1)


def launched_rank() -> int:
    """This process's rank in what the MPI launcher started (0 when not under one)."""
    return _launched(RANK_VARIABLES, 0)


def end_job(code: int) -> None:
    """In an MPI job of several processes, end all of them now (exit status `code`): what a
    process leaving on its own must do, or the others wait for it forever. Nothing otherwise."""
    if launched_size() <= 1:
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader gone (| head) must not stop the ending
            stream.flush()
    if "mpi4py.MPI" in sys.modules:
        sys.modules["mpi4py.MPI"].COMM_WORLD.Abort(code)
    # Without the module, MPI may still be initialised: Ctrl-C during `import mpi4py.MPI`
    # leaves MPI_Init done and MPI_Finalize registered for exit, where it would wait for the
    # others forever. Leaving now, without it, makes the launcher end the job.
    os._exit(code)


def world() -> Communicator:
    """The processes of this job: MPI's world when a launcher (mpirun, mpiexec, srun)
    started more than one, else `Single()`. RuntimeError if launched as several processes
    without mpi4py, which would otherwise train N separate copies."""
    size = launched_size()
    if size <= 1:
        return Single()
    try:
        return MPI()
    except ImportError:
        raise RuntimeError(f"started as {size} MPI processes, but mpi4py is not installed: "
                           f"{install_hint('mpi')}") from None


def sum_gradients(model: Any, comm: Communicator) -> None:
    """Replace every layer's gradients (this process's share) by their sum over all
    processes, in one packed allreduce."""
    if comm.size == 1:
        return
    named = [(layer, name) for _, layer in model.named_layers() for name in layer.grads]
    summed = comm.sum_arrays([layer.grads[name] for layer, name in named])
    for (layer, name), total in zip(named, summed):
        layer.grads[name] = total


def row_spans(params: dict[str, Any], rank: int, size: int) -> dict[str, tuple[int, int]]:
    """The part of `params` that member `rank` of `size` takes: their rows (slices along the
    first axis; a 0-d array is one row) laid end to end, each row to the member whose
    elements (`shard_bounds` of all of them) hold its first one, as rows [start, stop) of
    each array it meets. Parts differ by less than two rows' elements."""
    low, high = shard_bounds(sum(math.prod(param.shape) for param in params.values()), rank, size)
    spans, offset = {}, 0
    for name, param in params.items():
        rows = param.shape[0] if param.ndim else 1
        per_row = math.prod(param.shape[1:]) if param.ndim else 1
        if per_row:  # rows [start, stop) have their first element in [low, high)
            start, stop = (min(rows, max(0, -((offset - bound) // per_row))) for bound in (low, high))
            if start < stop:
                spans[name] = (start, stop)
        offset += rows * per_row
    return spans


def part_of(array: Any, span: tuple[int, int]) -> Any:
    """Rows [start, stop) of `array` (the whole of a 0-d one): a view on every backend, so
    updates land in `array`."""
    return array if array.ndim == 0 else array[span[0] : span[1], ...]  # the standard indexes every axis


@dataclass(frozen=True)
class Part:
    """Some rows of some parameters: what one of several optimizers that share the
    parameters and their state updates (`Threads.update_together`). `spans` gives the rows
    [start, stop) of each named parameter (`part_of`), `grads` their gradients, summed
    over the workers."""

    spans: dict[str, tuple[int, int]]
    grads: dict[str, Any]


def shard_bounds(total: int, rank: int, size: int) -> tuple[int, int]:
    """Rows [start, stop) of a batch of `total` rows that process `rank` of `size` takes:
    contiguous slices whose lengths differ by at most one."""
    return total * rank // size, total * (rank + 1) // size


# -- the step in progress ------------------------------------------------------------------


@dataclass(frozen=True)
class Shard:
    """This process's rows [start, start + rows) of a global batch of `total` rows."""

    start: int
    rows: int
    total: int
    comm: Communicator

    @classmethod
    def of(cls, total: int, comm: Communicator) -> Shard:
        """`comm`'s member's share of a global batch of `total` rows (shard_bounds)."""
        start, stop = shard_bounds(total, comm.rank, comm.size)
        return cls(start, stop - start, total, comm)


_current: contextvars.ContextVar[Shard | None] = contextvars.ContextVar("xpcnn_shard", default=None)


@contextlib.contextmanager
def sharded(shard: Shard) -> Iterator[Shard]:
    """Compute the step as `shard` of its global batch (see the module's docstring)."""
    token = _current.set(shard if shard.comm.size > 1 else None)
    try:
        yield shard
    finally:
        _current.reset(token)


def batch_rows(rows: int) -> tuple[int, int]:
    """(start, total): where a batch of `rows` rows lies in the global batch of the step in
    progress; (0, rows) outside a data-parallel step."""
    shard = _current.get()
    if shard is None:
        return 0, rows
    if shard.rows != rows:  # a layer that changed the batch size: its sums would be wrong
        raise ValueError(f"a layer saw {rows} rows in a data-parallel step whose share is {shard.rows}")
    return shard.start, shard.total


def batch_sum(*arrays: Any) -> tuple[Any, ...]:
    """Per-process sums (e.g. over a batch) summed over all processes of the step in
    progress, packed into one reduction; the arrays themselves outside one."""
    shard = _current.get()
    if shard is None:
        return arrays
    return tuple(shard.comm.sum_arrays(arrays))


@contextlib.contextmanager
def failing_alone_ends_all(comm: Communicator, shared: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """Around work that meets the other members in reductions: an error here in one
    would leave the others waiting for it forever, so it tells them (`Communicator.fail`:
    an MPI job ends, exit status 1, the error on stderr). Errors of the `shared` types are
    raised by every member together (a diverged loss, an agreed stop) and pass through."""
    try:
        yield
    except shared:
        raise
    except Exception as exc:
        comm.fail(exc)
        raise


def check_same(comm: Communicator, what: str, facts: dict[str, Any]) -> None:
    """ValueError on every process if any of `facts` differs from the first process's:
    processes that train on other data or settings would not train one model (and could
    wait for each other forever, when their batch counts differ)."""
    first, *others = comm.gather(facts)
    for rank, theirs in enumerate(others, start=1):
        for key, value in first.items():
            if theirs.get(key) != value:
                raise ValueError(f"process {rank} of {comm.size} has other {what} than process 0: {key} "
                                 f"{theirs.get(key)!r} against {value!r}")


class PeerFailed(RuntimeError):
    """Another process of the job failed (it, or the first process, says why)."""


def together(comm: Communicator, action: Callable[[], T]) -> T:
    """`action()` on every process, succeeding only if it succeeds on all: a process whose
    setup failed (its data folder missing on its machine) would leave the others waiting
    at their first reduction. A failed process raises its own error; the others raise
    PeerFailed, the first process's naming the failed one and its message."""
    if comm.size == 1:
        return action()
    try:
        result, error = action(), None
    except Exception as exc:  # noqa: BLE001 (re-raised below, on every process)
        result, error = None, exc
    messages = comm.gather(None if error is None else str(error))
    if error is not None:
        raise error
    failed = [(rank, message) for rank, message in enumerate(messages) if message is not None]
    if failed:
        rank, message = failed[0]
        raise PeerFailed(f"process {rank} of {comm.size}: {message}")
    return result  # type: ignore[return-value]
