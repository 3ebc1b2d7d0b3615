"""CuPy's kernels (xpcnn/kernels/cupy.cu) run on the CPU, to check their logic
where there is no GPU: the same CUDA source compiled by g++ with a few lines that stand
in for CUDA (blocks run one after another, a block's threads one after another too, or
as threads where the kernel synchronises them: __syncthreads a barrier, __shared__
static), with blocks of BLOCK threads, behind a stand-in for the `cupy` module that keeps arrays
in NumPy. Each launch also checks its arguments against the kernel's parameters (a
pointer's element type, an int against a long long), which CuPy does not.

    fast = cuda_on_cpu.kernel_module()         # xpcnn.kernels.cupy, CuPy installed or not
    fake = cuda_on_cpu.fake_cupy(tmp_folder)   # compiles once (some seconds)
    monkeypatch.setattr(fast, "cupy", fake)

The arithmetic is the CPU's (no fused multiply-add: -ffp-contract=off), its exp, tanh and
log glibc's: element-wise results match NumPy bit for bit where a kernel only adds,
multiplies, divides and takes square roots.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np

SHIM = r"""
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

struct dim3 { unsigned x, y, z; };
static thread_local dim3 threadIdx, blockIdx;
static dim3 blockDim, gridDim;
#define __global__
#define __device__
#define __shared__ static

struct Barrier {
  std::mutex m;
  std::condition_variable cv;
  unsigned count, waiting = 0, generation = 0;
  explicit Barrier(unsigned n) : count(n) {}
  void wait() {
    std::unique_lock<std::mutex> lock(m);
    unsigned mine = generation;
    if (++waiting == count) { waiting = 0; ++generation; cv.notify_all(); return; }
    cv.wait(lock, [&] { return generation != mine; });
  }
};
static Barrier* barrier;  // null while a launch runs its threads one after another
static bool unsynced;     // set by a __syncthreads there: the kernel needs threads
inline void __syncthreads() {
  if (barrier) barrier->wait();
  else unsynced = true;
}
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline unsigned atomicAdd(unsigned* a, unsigned v) { return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST); }
using std::exp; using std::isnan; using std::log; using std::sqrt; using std::tanh;
inline float max(float a, float b) { return std::fmax(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }
"""

LAUNCH = r"""
template <typename A> char kind() {
  typedef typename std::remove_cv<typename std::remove_pointer<A>::type>::type E;
  return std::is_same<E, float>::value ? 'f' : std::is_same<E, double>::value ? 'd'
       : std::is_same<E, unsigned char>::value ? 'B' : std::is_same<E, int>::value ? 'i'
       : std::is_same<E, long long>::value ? 'q' : std::is_same<E, unsigned>::value ? 'I' : '?';
}
template <typename... A> const char* signature(void (*)(A...)) {
  static std::string s;
  s.clear();
  for (std::string part : {std::string(std::is_pointer<A>::value ? "*" : "") + kind<A>()...}) s += part + ",";
  return s.c_str();
}
template <typename... A, std::size_t... I>
void call(void (*k)(A...), void** args, std::index_sequence<I...>) {
  k(*static_cast<typename std::remove_cv<A>::type*>(args[I])...);
}
// Blocks one after another; a block's threads as threads where `threaded` (kernels that
// synchronise them), else one after another.
template <typename... A>
void launch(void (*k)(A...), unsigned gx, unsigned gy, unsigned bx, void** args, int threaded) {
  gridDim = {gx, gy, 1};
  blockDim = {bx, 1, 1};
  Barrier block(bx);
  barrier = threaded ? &block : nullptr;
  unsynced = false;
  if (!threaded) {
    for (unsigned by = 0; by < gy; ++by) {
      for (unsigned b = 0; b < gx; ++b) {
        for (unsigned t = 0; t < bx; ++t) {
          threadIdx = {t, 0, 0};
          blockIdx = {b, by, 0};
          call(k, args, std::index_sequence_for<A...>{});
        }
      }
    }
    return;
  }
  std::vector<std::thread> threads;  // one per thread of a block, which runs the blocks in turn
  for (unsigned t = 0; t < bx; ++t) {
    threads.emplace_back([=, &block] {
      threadIdx = {t, 0, 0};
      for (unsigned by = 0; by < gy; ++by) {
        for (unsigned b = 0; b < gx; ++b) {
          blockIdx = {b, by, 0};
          call(k, args, std::index_sequence_for<A...>{});
          block.wait();  // the block done before the next one reuses its shared memory
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
}
extern "C" int unsynced_threads() { return unsynced; }
"""


BLOCK = 32  # threads a block here (xpcnn.kernels.cupy.BLOCK is set to it): fewer threads, more blocks
# run with threads
SYNCING = {"statistics", "gradient_sums", "pooled_gradient_sums", "softmax_cross_entropy", "product"}


def kernel_module() -> types.ModuleType:
    """xpcnn.kernels.cupy, imported where CuPy is not installed too (CI), with an empty
    module standing in for `cupy` while it imports: it uses CuPy only when a kernel runs,
    and the tests put the stand-in of fake_cupy in its place. The empty module is gone
    from sys.modules afterwards, so nothing else takes CuPy for installed."""
    try:
        return importlib.import_module("xpcnn.kernels.cupy")
    except ModuleNotFoundError as exc:
        if exc.name != "cupy":
            raise
    sys.modules["cupy"] = types.ModuleType("cupy")
    try:
        return importlib.import_module("xpcnn.kernels.cupy")
    finally:
        del sys.modules["cupy"]


def compilable() -> str | None:
    """Why the kernels cannot run on the CPU here (no g++), or None."""
    return None if shutil.which("g++") else "g++ is not installed"


def _entries(names: list[str]) -> str:
    return "".join(f'extern "C" void run_{i}(unsigned gx, unsigned gy, unsigned bx, void** args, int threaded) '
                   f"{{ launch(&{name}, gx, gy, bx, args, threaded); }}\n"
                   f'extern "C" const char* signature_{i}() {{ return signature(&{name}); }}\n'
                   for i, name in enumerate(names))


@functools.cache
def library(folder: Path) -> tuple[ctypes.CDLL, dict[str, int]]:
    """The kernels compiled for the CPU in `folder`, and each instance's entry number."""
    fast = kernel_module()
    names = fast._names()
    source = folder / "kernels_on_cpu.cpp"
    defines = "".join(f"#define {name} {value}\n" for name, value in {"BLOCK": BLOCK, **fast.PRODUCT_GEOMETRY}.items())
    source.write_text(SHIM + defines + fast.SOURCE + LAUNCH + _entries(names))
    built = folder / "kernels_on_cpu.so"
    subprocess.run(["g++", "-std=c++17", "-O1", "-ffp-contract=off", "-shared", "-fPIC", "-pthread", "-w",
                    str(source), "-o", str(built)], check=True, capture_output=True, text=True)
    return ctypes.CDLL(str(built)), {name: i for i, name in enumerate(names)}


PACKED = {np.int64: ("q", ctypes.c_longlong), np.int32: ("i", ctypes.c_int), np.float64: ("d", ctypes.c_double)}
ELEMENTS = {"float32": "f", "float64": "d", "uint8": "B", "int32": "i", "int64": "q", "uint32": "I"}


def _packed(kinds: list[str], args: tuple) -> list:
    """The ctypes value of each argument, after checking it against the parameter's kind."""
    if len(kinds) != len(args):
        raise TypeError(f"{len(args)} arguments for {len(kinds)} parameters")
    values = []
    for position, (kind, arg) in enumerate(zip(kinds, args)):
        if isinstance(arg, np.ndarray):
            got = "*" + ELEMENTS.get(arg.dtype.name, "?")
            value = ctypes.c_void_p(arg.ctypes.data)
        else:
            got, ctype = PACKED.get(type(arg), ("?", None))
            value = ctype(arg) if ctype else None
        if got != kind:
            raise TypeError(f"argument {position}: {got} ({type(arg).__name__}) for a parameter {kind}")
        values.append(value)
    return values


class Function:
    """One kernel instance, called as CuPy's are: function(grid, block, args)."""

    def __init__(self, folder: Path, name: str) -> None:
        self.lib, numbers = library(folder)
        self.name, number = name, numbers[name]
        self.run = getattr(self.lib, f"run_{number}")
        signature = getattr(self.lib, f"signature_{number}")
        signature.restype = ctypes.c_char_p
        self.kinds = signature().decode().rstrip(",").split(",")
        self.launches = 0

    def __call__(self, grid: tuple, block: tuple, args: tuple, shared_mem: int = 0) -> None:
        values = _packed(self.kinds, args)
        pointers = (ctypes.c_void_p * len(values))(*(ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in values))
        gx, gy = (*grid, 1)[:2]
        threaded = self.name.split("<")[0] in SYNCING
        self.run(ctypes.c_uint(gx), ctypes.c_uint(gy), ctypes.c_uint(block[0]), pointers, ctypes.c_int(threaded))
        if self.lib.unsynced_threads():
            raise RuntimeError(f"{self.name} synchronises its threads: name it in cuda_on_cpu.SYNCING")
        LAUNCHES.append(self.name)


LAUNCHES: list[str] = []  # every launch, by name: what a test counts


def fake_cupy(folder: Path) -> types.SimpleNamespace:
    """A stand-in for the `cupy` module as xpcnn.kernels.cupy uses it: NumPy's arrays, the
    kernels run on the CPU."""
    library(folder)

    class RawModule:
        def __init__(self, code: str, options: tuple, name_expressions: list[str]) -> None:
            fast = kernel_module()
            assert code == fast.SOURCE and options == fast.OPTIONS and name_expressions == fast._names()

        def get_function(self, name: str) -> Function:
            return Function(folder, name)

    numpy_part = {name: getattr(np, name) for name in ("empty", "empty_like", "zeros", "ascontiguousarray",
                                                        "reshape", "asarray", "ndarray")}
    runtime = types.SimpleNamespace(getDevice=lambda: 0)
    return types.SimpleNamespace(**numpy_part, RawModule=RawModule, cuda=types.SimpleNamespace(runtime=runtime))
