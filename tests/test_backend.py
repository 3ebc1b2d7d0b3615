"""The backend module: names, devices, dtypes, transfers."""

from __future__ import annotations

import gc
import sys
import types

import numpy as np
import pytest

from xpcnn import backend, capture
from xpcnn.layers.product import matmul


def test_available_backends_are_usable():
    names = backend.available_backends()
    assert "numpy" in names
    for name in names:
        assert backend.unavailable_reason(name) is None
        backend.namespace(name)


def test_unknown_backend_and_unusable_backend():
    with pytest.raises(ValueError, match="unknown backend 'jax'"):
        backend.namespace("jax")
    with pytest.raises(ValueError) as refused:
        backend.require("jax")
    assert backend.device_unusable_reason("jax", "cpu") == str(refused.value)  # the same line, told not raised
    for name in set(backend.BACKENDS) - set(backend.available_backends()):
        with pytest.raises(backend.BackendUnavailable, match=name):
            backend.namespace(name)


def test_round_trip_copies_and_keeps_values(target):
    host = np.arange(12, dtype=np.float32).reshape(3, 4)
    moved = backend.to_backend(host, *target)
    assert backend.backend_of(moved) == target[0]
    back = backend.to_numpy(moved)
    np.testing.assert_array_equal(back, host)
    host[0, 0] = 99.0  # the moved copy never shares memory with its source
    assert backend.to_numpy(moved)[0, 0] == 0.0


def test_between_backends_and_dtypes(target):
    for source in backend.available_backends():
        if source == "cupy" and target[0] != "cupy":
            continue
        x = backend.to_backend(np.ones((2, 3)), source)
        y = backend.to_backend(x, target[0], target[1], "float32")
        assert backend.dtype_name(y.dtype) == "float32"
        np.testing.assert_array_equal(backend.to_numpy(y), np.ones((2, 3)))


def test_as_host_takes_any_backends_arrays_and_plain_data():
    torch = pytest.importorskip("torch")
    np.testing.assert_array_equal(backend.as_host(torch.ones(2, requires_grad=True)), [1.0, 1.0])
    np.testing.assert_array_equal(backend.as_host([1, 2]), [1, 2])
    host = np.zeros(3)
    assert backend.as_host(host) is host  # no copy of what is host memory already


def test_a_tensor_moved_leaves_the_autograd_graph():
    torch = pytest.importorskip("torch")
    moved = backend.to_backend(torch.ones(2, requires_grad=True), "torch", dtype="float64")
    assert not moved.requires_grad and moved.dtype == torch.float64


def test_to_backend_takes_the_keywords_of_sequential_to():
    moved = backend.to_backend([1, 2], "numpy", device="cpu", dtype="float32")
    assert moved.dtype == np.float32 and moved.tolist() == [1.0, 2.0]


def test_read_only_host_arrays_move():
    host = np.frombuffer(bytes(range(8)), dtype=np.uint8)  # read-only, like IDX data
    for name in backend.available_backends():
        np.testing.assert_array_equal(backend.to_numpy(backend.to_backend(host, name)), host)


def test_dtype_and_device_validation():
    xp = backend.namespace("numpy")
    assert backend.dtype(xp, "float64") == xp.float64
    with pytest.raises(ValueError, match="unsupported dtype 'float16'"):
        backend.dtype(xp, "float16")
    with pytest.raises(ValueError, match="only the device 'cpu'"):
        backend.device("numpy", "cuda:0")
    assert backend.devices("numpy") == ["cpu"]


def test_a_dtype_of_any_library_names_its_precision():
    # a dtype object of another library than the target's was refused with the message
    # "unsupported dtype dtype('float64'); expected float32 or float64"
    torch = pytest.importorskip("torch")
    for name in backend.available_backends():
        xp = backend.namespace(name)
        for given in (np.float64, np.dtype("float64"), torch.float64, "float64"):
            assert backend.dtype(xp, given) == xp.float64
    for wrong in ("float16", torch.bfloat16, np.int32, "torch.float64", None, 3):
        with pytest.raises(ValueError, match=r"unsupported dtype .*; expected one of float32, float64 \(a name"):
            backend.float_name(wrong)


def test_copy_into_overwrites_in_place_in_the_targets_dtype(target):
    array = backend.to_backend(np.zeros(3), *target, "float32")
    backend.copy_into(array, np.array([1.5, 2.0, -1.0]))
    assert backend.to_numpy(array).tolist() == [1.5, 2.0, -1.0] and backend.dtype_name(array.dtype) == "float32"


def test_host_numbers_keep_their_precision_in_float64(target):
    # Python floats are float64; torch alone would read a list of them as float32 (a
    # recorded step's optimizer coefficients were rounded so on the GPU before this).
    third = 1 / 3
    array = backend.to_backend(np.zeros(2), *target, "float64")
    backend.copy_into(array, [third, 0.1])
    assert backend.to_numpy(array).tolist() == [third, 0.1]
    assert backend.to_numpy(backend.to_backend([third], *target, "float64")).tolist() == [third]


GRAPH_TARGETS = [("torch", "cuda"), ("cupy", None)]


def test_torch_on_cuda_and_cupy_record_graphs_and_torch_unasked(target):
    array = backend.to_backend(np.zeros(1), *target)
    assert backend.can_record_graphs(array) == (target in GRAPH_TARGETS)
    assert backend.records_graphs_unasked(array) == (target == ("torch", "cuda"))
    if target not in GRAPH_TARGETS:
        with pytest.raises(ValueError, match="CUDA graphs need PyTorch on a CUDA device, or CuPy, not"):
            backend.record_graph(array, lambda: None)


def test_inference_fills_a_cache_at_a_time_on_a_cpu_and_far_more_on_a_gpu(target):
    array = backend.to_backend(np.zeros(1), *target)
    on_gpu = target[0] == "cupy" or target[1] == "cuda"
    assert backend.scratch_bytes(array) == (backend.GPU_SCRATCH_BYTES if on_gpu else backend.CPU_SCRATCH_BYTES)


def test_a_graph_replays_its_work_on_the_arrays_it_was_recorded_with(target):
    """A matrix product among it: on CuPy, the recordable kernel (cuBLAS is refused)."""
    if target not in GRAPH_TARGETS:
        pytest.skip(f"{target[0]} records no CUDA graphs")
    x = backend.to_backend(np.zeros((2, 3)), *target, "float32")
    w = backend.to_backend(np.ones((3, 2)), *target, "float32")
    def work():
        return backend.fast_path(matmul, x)(x, w) * 2 + 1

    with capture.recordable():
        work()  # its kernels compiled and loaded first, as a trainer's first step of a shape does
        result, replay = backend.record_graph(x, work)
    for value in (2.0, -1.0):
        backend.copy_into(x, np.full((2, 3), value))
        replay()
        assert backend.to_numpy(result).tolist() == [[6 * value + 1] * 2] * 2


def test_fast_paths_follow_the_environment(monkeypatch):
    monkeypatch.delenv("XPCNN_STANDARD_PATH", raising=False)
    monkeypatch.setenv("XPCNN_NUMBA", "0")
    assert backend.fast_paths("numpy") == ["xpcnn.kernels.numpy"]
    monkeypatch.setenv("XPCNN_STANDARD_PATH", "1")
    assert backend.fast_paths("numpy") == []
    monkeypatch.delenv("XPCNN_STANDARD_PATH")
    assert backend.fast_paths("torch") == backend.fast_paths("array_api_strict") == []


def test_a_fast_path_whose_package_fails_to_import_is_skipped_with_a_warning(monkeypatch, tmp_path):
    (tmp_path / "broken_accelerator").mkdir()
    (tmp_path / "broken_accelerator" / "__init__.py").write_text('raise ImportError("needs NumPy 1.x")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("XPCNN_STANDARD_PATH", raising=False)
    monkeypatch.setitem(backend.FAST_PATHS, "numpy", (("xpcnn.kernels.numba", "broken_accelerator"),
                                                      ("xpcnn.kernels.numpy", None)))
    backend._importable.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="broken_accelerator is installed but does not import .*needs NumPy"):
            assert backend.fast_paths("numpy") == ["xpcnn.kernels.numpy"]
    finally:
        backend._importable.cache_clear()


def test_a_cuda_device_pytorch_cannot_reach_is_one_line():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("PyTorch sees a CUDA device here")
    reason = backend.device_unusable_reason("torch", "cuda:0")
    assert "sees no CUDA device" in reason and "\n" not in reason


def test_a_device_that_holds_no_data_is_unusable():
    pytest.importorskip("torch")
    assert backend.device_unusable_reason("torch", "meta") == ("device 'meta' not usable: Cannot copy out of meta "
                                                               "tensor; no data!")


def test_a_recordings_memory_pool_is_not_told_to_free_its_blocks_and_retry():
    """CuPy's pool does that on its own out-of-memory error; a recording's blocks are in the graph."""
    class OutOfMemory(Exception):
        pass

    def memory(size):
        raise OutOfMemory("cudaErrorMemoryAllocation")

    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(
        Memory=memory, MemoryPointer=None, runtime=types.SimpleNamespace(CUDARuntimeError=OutOfMemory)))
    with pytest.raises(MemoryError, match="out of GPU memory while recording a step"):
        backend._allocate_once(fake, 1024)


def cupy_recording_stand_in(monkeypatch) -> tuple[list, list, type]:
    """A stand-in for the parts of CuPy that backend.record_graph uses, logging each call,
    and the MemoryPools it made; arrays of any kind count as CuPy's."""
    log, pools = [], []

    class Context:
        def __init__(self, name):
            self.name = name

        def __enter__(self):
            log.append(f"enter {self.name}")

        def __exit__(self, *exc):
            log.append(f"exit {self.name}")

    class Stream(Context):
        def __init__(self, non_blocking):
            super().__init__(f"stream (non_blocking={non_blocking})")

        def begin_capture(self):
            log.append("begin capture")

        def end_capture(self):
            log.append("end capture")
            return types.SimpleNamespace(launch=lambda: log.append("launch"))

    class MemoryPool:
        def __init__(self, allocator):
            self.allocator = allocator
            pools.append(self)

        def malloc(self, size):
            raise AssertionError("nothing is allocated here")

        def set_limit(self, size=None):
            log.append(f"pool limit {size}")

    default_pool = types.SimpleNamespace(free_all_blocks=lambda: log.append("default pool freed"))
    cuda = types.SimpleNamespace(Stream=Stream, MemoryPool=MemoryPool,
                                 using_allocator=lambda malloc: Context(f"allocator of pool {len(pools)}"))
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(cuda=cuda,
                                                                   get_default_memory_pool=lambda: default_pool))
    monkeypatch.setattr(backend, "backend_of", lambda x: "cupy")
    return log, pools, Context


def test_cupy_records_on_a_stream_of_its_own_into_a_pool_that_never_retries(monkeypatch):
    log, pools, Context = cupy_recording_stand_in(monkeypatch)
    like = types.SimpleNamespace(device=Context("device"))
    result, replay = backend.record_graph(like, lambda: log.append(f"work, collecting: {gc.isenabled()}") or "result")
    assert result == "result" and len(pools) == 1 and gc.isenabled()
    assert pools[0].allocator.func is backend._allocate_once
    # A pool without a limit (at one, CuPy's frees unused blocks: the graph's), no garbage
    # collection while capturing (an old graph's pool would free its memory).
    assert log == ["enter device", "default pool freed", "pool limit 0", "enter stream (non_blocking=True)",
                   "enter allocator of pool 1", "begin capture", "work, collecting: False", "end capture",
                   "exit allocator of pool 1", "exit stream (non_blocking=True)", "exit device"]
    del log[:]
    replay()
    assert log == ["enter device", "launch", "exit device"]  # on the current stream, not the recording's


def test_a_cupy_recording_whose_work_fails_ends_the_capture_and_says_why(monkeypatch):
    log, _, Context = cupy_recording_stand_in(monkeypatch)

    def failing():
        raise RuntimeError("operation not permitted when stream is capturing")

    with pytest.raises(RuntimeError, match="not permitted when stream is capturing"):
        backend.record_graph(types.SimpleNamespace(device=Context("device")), failing)
    assert "end capture" in log and log[-1] == "exit device" and gc.isenabled()

