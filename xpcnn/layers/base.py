"""The Layer protocol every layer follows, and the input checks they share."""

from __future__ import annotations

import inspect
from typing import Any

from array_api_compat import array_namespace, device

from .. import backend
from ..checks import integer

Shape = tuple[int, ...]


class ArchitectureError(ValueError):
    """A network's config (from a file, say) that cannot be built; the message names the
    layer by its position, inside blocks too ("layer 3.body.0 (Conv2D): ...")."""


class Layer:
    """A differentiable step of a network. The contract every layer keeps, so that one
    written from it alone trains on every backend, in data-parallel runs and in steps
    recorded as CUDA graphs:

    Math. `xp = self._namespace(x)` checks the input against the parameters and gives the
    Array API namespace; use only it (no NumPy, CuPy or torch imports: a test fails if a
    layer module has one), and make new arrays on the input's device.

    Forward and backward. `forward(x, training)` returns the output and, when training,
    keeps what backward needs (`_save_for_backward`); `backward(dy)` takes it back
    (`_saved_for_backward`, which checks dy's shape and frees it), returns the input
    gradient and sets `grads`, one array per entry of `params` (same keys), overwriting
    earlier values. Backward may read the forward's input and output as they were, so
    change neither in place; never write into an array you were given. A layer may reuse
    work memory it owns (`_scratch`). Layers whose input gradient costs real work
    (`skips_input_grad`) also take `backward(dy, input_grad=False)`: fill `grads`, return
    None (a first layer's input is the data).

    State. `params` are trained; `buffers` are saved but not trained (running
    statistics, and any constant array, which moves with the network); `array_shapes`
    declares both, from the constructor's arguments, once; `config()` returns those
    arguments as JSON data (Python numbers, strings, lists); integer state a checkpoint
    must keep (counters) goes through `extra_state`/`load_extra_state`. Initial values are
    drawn on the host from a seed (xpcnn.init), so a seed gives the same layer on every
    backend. A layer that changes its input's shape says how in `output_shape` (the
    default keeps it), which fit and summary() read. Checkpoints, resumed runs and parity
    rebuild a layer of your own once `xpcnn.register_layer(YourLayer)` has named it.

    The batch. In data-parallel training each worker or process holds only some rows of
    the batch. A sum over the batch (statistics, their gradients) goes through
    `distributed.batch_sum`, which adds the other members' sums to this one's, and the
    batch's size, or where these rows lie in it, comes from `distributed.batch_rows`.
    Parameter gradients stay this member's share: the trainer sums them.

    The host. A recorded step (xpcnn.capture) replays device work only. Host data that
    changes from step to step (a random mask, a coefficient) comes through
    `capture.from_host(draw, like)`, which calls `draw` afresh before every replay; host
    bookkeeping (a counter) goes through `capture.each_step(work)`. Nothing else may move
    data between host and device in forward or backward: no `float(...)`, no
    `to_numpy`, no branch on an array's value.
    """

    skips_input_grad = False
    buffer_names: tuple[str, ...] = ()  # arrays of array_shapes() that are buffers, not parameters

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.grads: dict[str, Any] = {}
        self.buffers: dict[str, Any] = {}
        self._cache: Any = None
        self._scratch_array: Any = None  # work memory reused across steps (see _scratch)

    def forward(self, x: Any, training: bool = True) -> Any:
        raise NotImplementedError

    def backward(self, dy: Any) -> Any:
        raise NotImplementedError

    def __call__(self, x: Any, training: bool = True) -> Any:
        return self.forward(x, training)

    def output_shape(self, input_shape: Shape) -> Shape:
        """The output shape for `input_shape`; raises ValueError if the layer cannot take it."""
        return tuple(input_shape)

    def config(self) -> dict[str, Any]:
        """Constructor arguments, JSON-ready: `type(self)(**config())` rebuilds the layer."""
        return {}

    @classmethod
    def array_shapes(cls, arguments: dict[str, Any]) -> dict[str, Shape]:
        """The shapes of the parameters and buffers of `cls(**arguments)`, by name: the one
        declaration that `__init__` allocates from and `planned_shapes` checks. `arguments`
        holds every constructor argument (defaults filled in)."""
        return {}

    @classmethod
    def planned_shapes(cls, config: dict[str, Any]) -> dict[str, Shape]:
        """The shapes of the parameters and buffers `cls(**config)` would hold, computed
        without building it, so an untrusted config is checked before any allocation.
        Unknown or missing arguments raise TypeError, as the constructor would."""
        bound = inspect.signature(cls).bind(**config)
        bound.apply_defaults()
        shapes = {name: tuple(int(size) for size in shape) for name, shape in cls.array_shapes(bound.arguments).items()}
        if any(size < 0 for shape in shapes.values() for size in shape):
            raise ValueError(f"negative sizes in {shapes}")
        return shapes

    @classmethod
    def planned_arrays(cls, config: dict[str, Any], depth: int = 0, prefix: str = "") -> dict[str, tuple[str, Shape]]:
        """{name: ("param" or "buffer", shape)} of `cls(**config)`, unbuilt (see planned_shapes);
        `depth` is how deep in blocks the layer sits and `prefix` its position ("3."), for
        a block's checks of its layers."""
        return {name: ("buffer" if name in cls.buffer_names else "param", shape)
                for name, shape in cls.planned_shapes(config).items()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Layer:
        """The layer `config()` describes, with fresh arrays."""
        return cls(**config)

    def branches(self) -> dict[str, Any]:
        """The Sequentials a block runs inside it, by name ({"body": ..., "shortcut": ...});
        a plain layer has none. What walks a network's layers walks into these."""
        return {}

    def extra_state(self) -> dict[str, int]:
        """Integer state besides arrays that a checkpoint must keep (e.g. a dropout counter)."""
        return {}

    def load_extra_state(self, state: dict[str, int]) -> None:
        if state:
            raise ValueError(f"{self!r} keeps no extra state, got {sorted(state)}")

    def to(self, backend_name: str, device: Any = None, dtype: Any = None) -> Layer:
        """Move parameters and buffers to a backend/device/dtype (default: keep the dtype);
        backend.BackendUnavailable where the backend cannot use that device, ValueError for
        a dtype other than float32 or float64, before anything moves, as Sequential.to."""
        # Also for a layer without arrays, and in one line: a layer moved alone met the
        # library's own error (torch's about its build), or held data on torch's "meta" device.
        backend.require(backend_name, device)
        if dtype is not None:
            backend.float_name(dtype)
        for store in (self.params, self.buffers):
            for key, value in store.items():
                target = dtype if dtype is not None else backend.dtype_name(value.dtype)
                store[key] = backend.to_backend(value, backend_name, device, target)
        self.grads = {}
        self.release_work_memory()
        return self

    def release_work_memory(self) -> None:
        """Drop what a forward saved for backward and the work array kept for next time."""
        self._cache = None
        self._scratch_array = None

    def __repr__(self) -> str:
        def short(value: Any) -> Any:  # [3, 3] -> 3, [1, 2] -> (1, 2)
            if isinstance(value, list):
                return value[0] if len(set(value)) == 1 else tuple(value)
            return value

        args = ", ".join(f"{k}={short(v)!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    # -- helpers for subclasses ------------------------------------------------------

    def _namespace(self, x: Any) -> Any:
        """The namespace of `x`, after checking it is floating and matches the parameters."""
        try:
            xp = array_namespace(x, *self.params.values())
        except TypeError:  # array_api_compat's message lists the namespaces' module paths: the types say it
            if not self.params:
                raise TypeError(f"{self!r}: expected an array, got {type(x).__name__}") from None
            where = sorted({backend.backend_of(p) for p in self.params.values()})
            raise TypeError(
                f"{self!r}: input is a {type(x).__module__}.{type(x).__name__} but the "
                f"parameters live on {where}; move the model with .to(...)"
            ) from None
        if not xp.isdtype(x.dtype, "real floating"):
            raise TypeError(f"{self!r}: expected a floating-point input, got dtype {x.dtype}")
        for value in self.params.values():
            if value.dtype != x.dtype:
                raise TypeError(
                    f"{self!r}: input dtype {x.dtype} does not match parameter dtype "
                    f"{value.dtype}; convert the input or call .to(..., dtype=...)"
                )
            if device(value) != device(x):
                raise ValueError(
                    f"{self!r}: input is on device {device(x)} but parameters are on "
                    f"{device(value)}"
                )
        return xp

    def _expect_ndim(self, shape: Shape, names: str) -> None:
        """Check `shape` has one axis per letter of `names` (e.g. "NCHW")."""
        if len(shape) != len(names):
            raise ValueError(
                f"{self!r}: expected a {len(names)}-D input ({', '.join(names)}), "
                f"got shape {tuple(shape)}"
            )

    def _scratch(self, shape: Shape, like: Any) -> Any:
        """A work array of `shape`, in `like`'s dtype and device, owned by this layer, its
        values undefined.

        Last step's array is handed back when it fits and no pending backward still holds
        it, saving a large allocation (and the OS zeroing fresh pages) per step. A training
        forward keeps the array for next time.
        """
        old = self._scratch_array
        if (old is not None and self._cache is None and tuple(old.shape) == tuple(shape)
                and old.dtype == like.dtype and device(old) == device(like)):
            return old
        return array_namespace(like).empty(tuple(shape), dtype=like.dtype, device=device(like))

    def _save_for_backward(self, training: bool, saved: Any, y: Any) -> Any:
        """Return the output `y`; when training, keep `saved` (what backward needs) with
        the output's shape, else forget what a training forward kept: a backward after an
        inference forward is refused, not answered with another batch's gradient."""
        self._cache = (saved, tuple(y.shape)) if training else None
        return y

    def _saved_for_backward(self, dy: Any) -> Any:
        """What forward saved, after checking `dy` has the output's shape.

        It is released, so a finished step holds no activations.
        """
        if self._cache is None:
            raise RuntimeError(
                f"{self!r}: backward() needs a preceding forward(x, training=True)"
            )
        (cache, out_shape), self._cache = self._cache, None
        if tuple(dy.shape) != out_shape:
            raise ValueError(
                f"{self!r}: backward expected dy of shape {out_shape}, got {tuple(dy.shape)}"
            )
        return cache


def pair(value: Any, what: str) -> tuple[int, int]:
    """(a, b) from an integer or a pair of integers; `what` names it in errors."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{what} must be an integer or a pair of integers, got {value!r}")
        return (integer(value[0], what), integer(value[1], what))
    single = integer(value, what)
    return (single, single)
