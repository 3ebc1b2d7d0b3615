"""Backends: the one module that knows array-library names.

A backend is a name ("numpy", "torch", "cupy", "array_api_strict") that resolves to an
Array API namespace and a device. Everything else in xpcnn asks this module for
namespaces, devices, dtypes and transfers, and asks capability questions
(`elementwise_on_one_thread`, `scratch_bytes`, `can_record_graphs`) rather than comparing names, so layer
math never branches on the library. (Initial values and dropout masks are drawn on the
host: see `xpcnn.init`.) What a library does faster than the standard lives behind this
module too: its fast paths (`fast_path`, declared in `xpcnn.kernels`), recording device
work as a CUDA graph (`record_graph`, used by `xpcnn.capture`) and running it on the
right GPU (`on_device`).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib
import importlib.util
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import array_api_compat
import numpy as np

from . import kernels
from .extras import EXTRAS, install_hint

BACKENDS: tuple[str, ...] = ("numpy", "torch", "array_api_strict", "cupy")
DTYPES: tuple[str, ...] = ("float32", "float64")

_NAMESPACE_MODULES = {
    "numpy": "array_api_compat.numpy",
    "torch": "array_api_compat.torch",
    "cupy": "array_api_compat.cupy",
    "array_api_strict": "array_api_strict",
}


class BackendUnavailable(RuntimeError):
    """A backend was asked for that cannot be used on this machine."""


def _unknown(name: Any) -> str | None:
    """The one line for a `name` that is no backend's; None for a backend's."""
    if isinstance(name, str) and name in _NAMESPACE_MODULES:
        return None
    return f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}"


def _check_name(name: str) -> None:
    message = _unknown(name)
    if message is not None:
        raise ValueError(message)


def unavailable_reason(name: str) -> str | None:
    """Why backend `name` cannot run here, or None when it can."""
    _check_name(name)
    return _unavailable(name)


@functools.cache
def _unavailable(name: str) -> str | None:
    try:
        module = importlib.import_module(name)
        importlib.import_module(_NAMESPACE_MODULES[name])
    except ImportError as exc:
        return f"not installed ({exc})"
    if name == "cupy":
        try:
            count = module.cuda.runtime.getDeviceCount()
        except Exception as exc:  # CuPy raises its own CUDA error types here
            return f"no CUDA device ({exc.__class__.__name__}: {exc})"
        if count < 1:
            return "no CUDA device"
    return None


def available_backends() -> list[str]:
    """The backends importable and usable on this machine, in BACKENDS order."""
    return [name for name in BACKENDS if unavailable_reason(name) is None]


def namespace(name: str) -> Any:
    """The Array API namespace of backend `name`; raises BackendUnavailable if unusable."""
    reason = unavailable_reason(name)
    if reason is not None:
        raise BackendUnavailable(f"backend {name!r} is not usable here: {reason}")
    return importlib.import_module(_NAMESPACE_MODULES[name])


def backend_of(x: Any) -> str:
    """The backend name an array belongs to."""
    if array_api_compat.is_numpy_array(x):
        return "numpy"
    if array_api_compat.is_torch_array(x):
        return "torch"
    if array_api_compat.is_cupy_array(x):
        return "cupy"
    if type(x).__module__.startswith("array_api_strict"):
        return "array_api_strict"
    raise TypeError(f"not an array of a supported backend: {type(x).__name__}")


# Each library's kernel modules (xpcnn.kernels), in order of preference, with the optional
# package each needs (its switch: XPCNN_<PACKAGE>=0 skips the module). NumPy takes
# numba's compiled kernels where numba is installed (the `numba` extra), then what
# NumPy alone does faster than the standard; CuPy its CUDA kernels (XPCNN_CUPY=0: CuPy's
# own array operations, the standard path).
FAST_PATHS: dict[str, tuple[tuple[str, str | None], ...]] = {
    "numpy": (("xpcnn.kernels.numba", "numba"), ("xpcnn.kernels.numpy", None)),
    "cupy": (("xpcnn.kernels.cupy", "cupy"),),
}


@functools.cache
def _importable(module: str, needs: str | None) -> bool:
    """Whether kernel `module` can be used: the package it needs is installed and imports
    (a numba too old for this NumPy refuses to: a warning says so, once)."""
    if needs is not None:
        if importlib.util.find_spec(needs) is None:
            return False
        try:
            importlib.import_module(needs)
        except Exception as exc:  # noqa: BLE001  (whatever the package raises on import)
            warnings.warn(f"{needs} is installed but does not import ({type(exc).__name__}: {exc}); "
                          f"the fast paths of {module} are off", RuntimeWarning, stacklevel=3)
            return False
    importlib.import_module(module)
    return True


def switch(variable: str) -> bool | None:
    """Environment variable `variable` read as a switch: True for 1, true, yes or on,
    False for 0, false, no or off (any case), None when unset or empty."""
    value = os.environ.get(variable, "").strip().lower()
    if not value:
        return None
    if value in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value in ("1", "true", "yes", "on")
    raise ValueError(f"environment variable {variable}={os.environ[variable]!r}: expected 1 or 0 (true/false, yes/no, "
                     "on/off)")


def fast_paths(name: str) -> list[str]:
    """The kernel modules backend `name` takes here, in order of preference (none with
    XPCNN_STANDARD_PATH=1, none needing numba with XPCNN_NUMBA=0 (cupy: XPCNN_CUPY=0): the
    environment variables are read at each call)."""
    declared = FAST_PATHS.get(name, ())
    return list(_taken(declared, tuple(os.environ.get(variable) for variable in _switches(declared))))


@functools.cache
def _switches(declared: tuple[tuple[str, str | None], ...]) -> tuple[str, ...]:
    """The environment variables that turn the kernel modules `declared` off."""
    return ("XPCNN_STANDARD_PATH", *(f"XPCNN_{needs.upper()}" for _, needs in declared if needs is not None))


@functools.lru_cache(maxsize=64)
def _taken(declared: tuple[tuple[str, str | None], ...], switches: tuple[str | None, ...]) -> tuple[str, ...]:
    """The modules of `declared` used while their switches read `switches` (the key: a
    layer asks at every step, and reading the environment each time cost microseconds)."""
    return tuple(module for module, needs in declared if fast_path_unused_reason(module, needs) is None)


def fast_path_modules(name: str) -> list[tuple[str, str | None, str | None]]:
    """(module, the package it needs, why it is not used here or None) for each kernel
    module of backend `name`, in order of preference: what `xpcnn info` reports."""
    return [(module, needs, fast_path_unused_reason(module, needs)) for module, needs in FAST_PATHS.get(name, ())]


def fast_path_unused_reason(module: str, needs: str | None) -> str | None:
    """Why kernel `module`, which needs package `needs`, is not used here; None when it is."""
    if switch("XPCNN_STANDARD_PATH"):
        return "XPCNN_STANDARD_PATH is set"
    if needs is not None and switch(f"XPCNN_{needs.upper()}") is False:
        return f"XPCNN_{needs.upper()} is off"
    if _importable(module, needs):
        return None
    if importlib.util.find_spec(str(needs)) is None:
        return f"{needs} is not installed" + (f" ({install_hint(needs)})" if needs in EXTRAS else "")
    return f"{needs} is installed but does not import here"


def fast_path(standard: Callable[..., Any], x: Any) -> Callable[..., Any]:
    """The fast path of `standard` that x's backend takes (declared with
    xpcnn.kernels.implements), else `standard` itself. Tests hold each fast path equal to
    its standard function; the environment variable XPCNN_STANDARD_PATH=1 turns them all
    off, XPCNN_NUMBA=0 the compiled ones."""
    for module in fast_paths(backend_of(x)):
        found = kernels.registry(module).get(standard)
        if found is not None:
            return found
    return standard


def device(name: str, spec: Any = None) -> Any:
    """Resolve a device spec ("cpu", "cuda:1", 0, None for the default) for backend `name`."""
    xp = namespace(name)
    if spec is None:
        if name == "cupy":
            return importlib.import_module("cupy").cuda.Device()
        if name == "torch":
            return importlib.import_module("torch").device("cpu")
        return xp.__array_namespace_info__().default_device()
    if not isinstance(spec, (str, int)):
        return spec  # already a device object of the library
    if name == "torch":
        return importlib.import_module("torch").device(spec)
    if name == "cupy":
        if isinstance(spec, str):
            spec = spec.removeprefix("cuda").removeprefix(":") or 0
        return importlib.import_module("cupy").cuda.Device(int(spec))
    if name == "numpy":
        if str(spec) != "cpu":
            raise ValueError(f"backend 'numpy' has only the device 'cpu', got {spec!r}")
        return "cpu"
    for candidate in xp.__array_namespace_info__().devices():
        if spec in (candidate, str(candidate), getattr(candidate, "_device", None)):
            return candidate
    raise ValueError(f"backend {name!r} has no device {spec!r}")


def device_unusable_reason(name: str, spec: Any = None) -> str | None:
    """Why backend `name` cannot run on device `spec` here (None: it can), found by
    placing a small array there: each library reports a missing device its own way."""
    reason = _unknown(name) or unavailable_reason(name)
    if reason is not None or spec is None:
        return reason
    if name == "torch" and "cuda" in str(spec):
        torch = importlib.import_module("torch")
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            return f"device {spec!r} not usable: PyTorch {torch.__version__} is {build} and sees no CUDA device"
    try:
        to_numpy(to_backend(np.zeros(1), name, spec))  # there and back: torch's "meta" device holds no data
    except Exception as exc:  # noqa: BLE001 (CUDA errors, ValueError, RuntimeError...)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]  # libraries add pages of detail
        return f"device {spec!r} not usable: {first[:200]}"
    return None


def require(name: str, spec: Any = None) -> None:
    """Raise BackendUnavailable, saying why, unless backend `name` runs on device `spec`
    here; ValueError for a name that is no backend, as namespace() gives."""
    _check_name(name)
    reason = device_unusable_reason(name, spec)
    if reason is not None:
        raise BackendUnavailable(f"backend {name}{f' on device {spec}' if spec is not None else ''}: {reason}")


def devices(name: str) -> list[str]:
    """Names of the devices backend `name` can use here."""
    xp = namespace(name)
    if name == "torch":
        torch = importlib.import_module("torch")
        return ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if name == "cupy":
        count = importlib.import_module("cupy").cuda.runtime.getDeviceCount()
        return [f"cuda:{i}" for i in range(count)]
    # array-api-strict's devices print as Device('name'); `device()` accepts the bare name
    return [getattr(d, "_device", str(d)) for d in xp.__array_namespace_info__().devices()]


def device_dtypes(name: str, spec: Any = None) -> list[str]:
    """The floating dtypes of DTYPES that backend `name` offers on device `spec` (some
    devices have no float64)."""
    info = namespace(name).__array_namespace_info__()
    try:
        offered = info.dtypes(device=device(name, spec), kind="real floating")
    except (TypeError, ValueError, AttributeError, NotImplementedError):  # no per-device answer
        return list(DTYPES)
    return [dtype_name for dtype_name in DTYPES if dtype_name in offered]


def float_name(spec: Any) -> str:
    """"float32" or "float64" for a dtype given by that name or as any library's dtype
    object (np.float64, np.dtype("float64"), torch.float64, array-api-strict's): a dtype
    names the precision, whichever library it came from. ValueError for anything else."""
    if isinstance(spec, str):
        found = spec
    elif spec is None or isinstance(spec, (bool, int, float)):
        found = None
    else:
        found = dtype_name(spec)
    if found not in DTYPES:
        raise ValueError(f"unsupported dtype {spec!r}; expected one of {', '.join(DTYPES)} (a name, or a NumPy, "
                         "torch or array-api dtype)")
    return found


def dtype(xp: Any, name: Any) -> Any:
    """The floating dtype of namespace `xp` for "float32"/"float64", or for any library's
    dtype of those (see float_name)."""
    return getattr(xp, float_name(name))


def dtype_name(dt: Any) -> str:
    """'float32', 'int64', ... for a dtype of any backend."""
    return str(dt).rsplit(".", 1)[-1].strip("'>")


def to_numpy(x: Any) -> np.ndarray:
    """Copy an array of any backend to host memory as a NumPy array."""
    name = backend_of(x)
    if name == "numpy":
        return np.asarray(x)
    if name == "torch":
        return x.detach().cpu().numpy()
    if name == "cupy":
        return x.get()
    return np.from_dlpack(x)


def detached(x: Any) -> Any:
    """`x` outside any autograd graph: a torch tensor that requires grad, detached (sharing
    its memory); any other array as it is. xpcnn computes its own gradients; through
    such an input torch would record every step, and the parameters the optimizer updates
    from its gradients would join the graph, which then grows with every step."""
    return x.detach() if getattr(x, "requires_grad", False) and backend_of(x) == "torch" else x


def as_host(value: Any) -> np.ndarray:
    """`value` as a host NumPy array: an array of any backend copied there (NumPy's own
    refuses a torch tensor that requires grad, or one on a GPU), other data through
    np.asarray."""
    try:
        backend_of(value)
    except TypeError:
        return np.asarray(value)
    return to_numpy(value)


def to_backend(x: Any, name: str, device: Any = None, dtype: Any = None) -> Any:
    """A copy of `x` (any backend, or host data) on backend `name`, on `device` and in
    `dtype` (None: the backend's default device, and `x`'s dtype).

    Tries DLPack first (device to device where the libraries share one), then goes through
    host NumPy. The result never shares memory with `x`, so in-place updates of one cannot
    change the other.
    """
    return _copied(x, name, device, dtype)  # the keywords are Sequential.to's; they hide device() and dtype() here


def _copied(x: Any, name: str, device_spec: Any, dtype_spec: Any) -> Any:
    xp = namespace(name)
    dev = device(name, device_spec)
    try:
        source = backend_of(x)
    except TypeError:
        source = None
    result = None
    # DLPack between libraries; not from host NumPy into CuPy, which cannot import host
    # memory that way (it would fail, and be caught, on every batch).
    if source is not None and source != name and (source, name) != ("numpy", "cupy"):
        try:
            result = xp.from_dlpack(x)
        except (BufferError, RuntimeError, TypeError, ValueError, AttributeError):
            result = None
    if result is None:
        if source is None:  # host data: NumPy keeps Python floats in float64 (torch would make them float32)
            result = np.asarray(x)
        else:
            result = to_numpy(x) if source != name else detached(x)
    with dev if name == "cupy" else contextlib.nullcontext():  # see on_device
        result = xp.asarray(result, device=dev, copy=True)
    if dtype_spec is not None:  # already a copy of its own: convert without a second one
        result = xp.astype(result, dtype(xp, dtype_spec), copy=False)
    return result


def copy_into(target: Any, source: Any) -> None:
    """Overwrite `target` in place with `source` (host data, or any backend's array of the
    same shape), converted to target's dtype and device."""
    target[...] = to_backend(source, backend_of(target), array_api_compat.device(target), target.dtype)


def on_device(x: Any) -> contextlib.AbstractContextManager[Any]:
    """Make `x`'s GPU the current one for the block where the library needs it: CuPy
    creates arrays and launches kernels on the current device, whatever `device=` says."""
    return x.device if backend_of(x) == "cupy" else contextlib.nullcontext()


def elementwise_on_one_thread(name: str) -> bool:
    """Whether backend `name` runs element-wise work on one thread (NumPy), so that worker
    threads sharing each batch use cores one model leaves idle."""
    return name == "numpy"


CPU_SCRATCH_BYTES = 16 << 20  # a second-level cache or two
GPU_SCRATCH_BYTES = 1 << 30


def scratch_bytes(x: Any) -> int:
    """How many bytes of work memory (a convolution's columns) inference on arrays like `x`
    should fill at once: on a CPU, what a cache or two holds, since there the traffic to
    memory costs; on a GPU, where each piece costs kernel launches and memory is fast, a
    bound on the memory only."""
    name = backend_of(x)
    on_gpu = name == "cupy" or (name == "torch" and x.device.type != "cpu")
    return GPU_SCRATCH_BYTES if on_gpu else CPU_SCRATCH_BYTES


def cuda_versions() -> list[str]:
    """Which CUDA the installed GPU libraries see, one line each (none for a library that
    is not installed)."""
    lines = []
    if importlib.util.find_spec("cupy") is not None:
        try:
            cupy = importlib.import_module("cupy")
            runtime, driver = cupy.cuda.runtime.runtimeGetVersion(), cupy.cuda.runtime.driverGetVersion()
            lines.append(f"CuPy {cupy.__version__}: CUDA runtime {runtime}, driver {driver}")
        except Exception as exc:  # noqa: BLE001  (CuPy raises its own CUDA error types)
            lines.append(f"CuPy: no CUDA driver or device ({type(exc).__name__}: {exc})")
    if importlib.util.find_spec("torch") is not None:
        torch = importlib.import_module("torch")
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        lines.append(f"PyTorch {torch.__version__}: {build}, {torch.cuda.device_count()} CUDA devices")
    return lines


def can_record_graphs(x: Any) -> bool:
    """Whether device work on arrays like `x` can be recorded as a CUDA graph: PyTorch on
    a CUDA device, and CuPy, whose matrix products then take a kernel of xpcnn's own
    (CuPy 14 refuses any cuBLAS call while a stream is captured; see capture.recordable)."""
    name = backend_of(x)
    return (name == "torch" and x.is_cuda) or name == "cupy"


def records_graphs_unasked(x: Any) -> bool:
    """Whether a fit on arrays like `x` records its steps as CUDA graphs unless told not
    to: on PyTorch with CUDA. CuPy's recordings are taken when asked for (cuda_graphs=True):
    they have yet to be measured on a GPU against CuPy's steps run directly."""
    return can_record_graphs(x) and backend_of(x) == "torch"


def record_graph(like: Any, work: Callable[[], Any]) -> tuple[Any, Callable[[], None]]:
    """Record, instead of run, the device work of `work()` on `like`'s GPU (see
    can_record_graphs). Returns what `work()` returned (arrays that the replay writes)
    and the replay: a call that runs all of it again, with one launch, on the arrays it
    was recorded with, after the work already queued on the current stream. `work` must
    not copy between host and device.

    Memory that `work` allocates comes from a pool of the recording's own, so nothing
    allocated later reuses it; arrays made before and used in it must be kept alive for
    as long as the graph is replayed.
    """
    if not can_record_graphs(like):
        raise ValueError(f"CUDA graphs need PyTorch on a CUDA device, or CuPy, not {backend_of(like)} on "
                         f"{array_api_compat.device(like)}")
    return (_record_cupy if backend_of(like) == "cupy" else _record_torch)(like, work)


def _record_torch(like: Any, work: Callable[[], Any]) -> tuple[Any, Callable[[], None]]:
    torch = importlib.import_module("torch")
    # On like's GPU, which need not be the current one: work for another GPU than the
    # recording stream's would run at once instead of being recorded.
    with torch.cuda.device(like.device):
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=torch.cuda.Stream(like.device)):  # and a private memory pool
            result = work()

    def replay() -> None:  # which holds the graph
        with torch.cuda.device(like.device):
            graph.replay()

    return result, replay


def _record_cupy(like: Any, work: Callable[[], Any]) -> tuple[Any, Callable[[], None]]:
    cupy = importlib.import_module("cupy")
    # The pool's memory is never handed out again, nor freed: the graph writes it at
    # every replay, the blocks the recording freed too.
    pool = cupy.cuda.MemoryPool(functools.partial(_allocate_once, cupy))
    with like.device, _no_collection(cupy):
        pool.set_limit(size=0)  # at a limit (CUPY_GPU_MEMORY_LIMIT) a pool frees its unused blocks: the graph's
        stream = cupy.cuda.Stream(non_blocking=True)  # capturing the legacy default stream is not allowed
        with stream, cupy.cuda.using_allocator(pool.malloc):
            stream.begin_capture()
            try:
                result = work()
            except BaseException:
                with contextlib.suppress(Exception):  # the stream usable again; work's error is the one to tell
                    stream.end_capture()
                raise
            graph = stream.end_capture()
    return result, _CupyReplay(graph, pool, like.device)


@contextlib.contextmanager
def _no_collection(cupy: Any) -> Iterator[None]:
    """No garbage collection in the block, after a collection and the default pool's unused
    blocks given back: an old recording collected during a capture would free its memory,
    which a capture does not allow, and the recording's pool allocates anew what the step
    run directly left cached."""
    gc.collect()
    cupy.get_default_memory_pool().free_all_blocks()
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _allocate_once(cupy: Any, size: int) -> Any:
    """`size` bytes of device memory for a recording's pool, or MemoryError. (On CuPy's own
    out-of-memory error a pool frees its unused blocks and tries again: a recording's are
    in the graph.)"""
    try:
        return cupy.cuda.MemoryPointer(cupy.cuda.Memory(size), 0)
    except cupy.cuda.runtime.CUDARuntimeError as exc:
        raise MemoryError(f"out of GPU memory while recording a step ({exc})") from None


class _CupyReplay:
    """A CuPy graph's replay, which holds the graph and its memory pool."""

    def __init__(self, graph: Any, pool: Any, on: Any) -> None:
        self.graph, self.pool, self.device = graph, pool, on

    def __call__(self) -> None:
        with self.device:
            self.graph.launch()  # on the current stream, after the copies of this step's inputs
