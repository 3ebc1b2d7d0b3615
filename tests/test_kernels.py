"""The fast-path registry (xpcnn/kernels/__init__.py): every kernel module declares what it
replaces, each declaration takes what its standard function takes, and each is reached by
a training step. (tests/kernels/ hold each one's results to its standard function.)"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
from pathlib import Path

import numpy as np
import pytest

import xpcnn
from xpcnn import backend, kernels
from xpcnn.layers import norm
from xpcnn.optim import Adam

KERNEL_MODULES = [(name, module) for name, modules in backend.FAST_PATHS.items() for module, _ in modules]
GPU_BACKENDS = {"cupy"}  # their dispatch test needs a GPU: the GPU check runs it


def importable_registries() -> dict[str, dict]:
    return {module: kernels.registry(module) for modules in backend.FAST_PATHS.values()
            for module, needs in modules if needs is None or importlib.util.find_spec(needs) is not None}


def test_every_kernel_module_registers_something_and_takes_what_its_standard_function_takes():
    registries = importable_registries()
    assert registries, "no kernel module can be imported here"
    for module, registry in registries.items():
        assert registry, f"{module} registers no fast path"
        for standard, fast in registry.items():
            assert fast.__module__ == module
            assert kernels.parameters(fast) == kernels.parameters(standard), f"{module}.{fast.__name__}"


def test_every_kernel_module_is_taken_by_a_backend_and_registers_every_function_it_offers():
    files = {f"xpcnn.kernels.{path.stem}" for path in Path(kernels.__file__).parent.glob("*.py")
             if path.stem != "__init__"}
    assert files == {module for _, module in KERNEL_MODULES}, "a kernel module no backend takes is never used"
    for module, registry in importable_registries().items():
        offered = {name for name, value in vars(importlib.import_module(module)).items()
                   if inspect.isfunction(value) and value.__module__ == module and not name.startswith("_")}
        assert offered == {fast.__name__ for fast in registry.values()}, f"{module}: public but not registered"


def test_a_declaration_that_differs_from_its_standard_function_fails_at_import():
    def normalise(rows, gamma, beta, count):  # eps forgotten
        return rows

    with pytest.raises(TypeError, match=r"normalise takes \(rows, gamma, beta, count\), but the "
                                        r"xpcnn.layers.norm.normalise it replaces takes"):
        kernels.implements(norm.normalise)(normalise)

    def twice(rows, gamma, beta, count, eps):
        return rows

    twice.__module__ = "a_kernel_module"
    kernels.implements(norm.normalise)(twice)
    try:
        with pytest.raises(ValueError, match="a_kernel_module registers two fast paths of normalise"):
            kernels.implements(norm.normalise)(twice)
    finally:
        kernels._REGISTRIES.pop("a_kernel_module")


def every_kind_of_layer() -> xpcnn.Sequential:
    """A network that takes every fast path: a padded first convolution, a fused batch
    norm -> pooling -> ReLU block, an unpadded convolution with bias and an input gradient,
    batch norm alone, overlapping max pooling, ReLU, batch norm -> ReLU, GELU, dropout, a
    dense layer."""
    rng = np.random.default_rng(0)
    return xpcnn.Sequential([
        xpcnn.Conv2D(1, 4, 3, padding=1, bias=False, rng=rng), xpcnn.BatchNorm2D(4), xpcnn.MaxPool2D(2), xpcnn.ReLU(),
        xpcnn.Conv2D(4, 6, 3, rng=rng), xpcnn.BatchNorm2D(6), xpcnn.MaxPool2D(2, 1), xpcnn.ReLU(),
        xpcnn.BatchNorm2D(6), xpcnn.ReLU(), xpcnn.GELU(), xpcnn.Flatten(), xpcnn.Dropout(0.25, seed=0),
        xpcnn.Dense(6, 3, rng=rng),
    ])


def calls_of_each_fast_path(name: str, module: str, monkeypatch) -> dict[str, int]:
    """How often a training step and an inference forward on backend `name` call each of
    `module`'s fast paths."""
    registry, calls = kernels.registry(module), {}
    for standard, fast in list(registry.items()):
        calls[fast.__name__] = 0

        def counted(*args, fast=fast, **kwargs):
            calls[fast.__name__] += 1
            return fast(*args, **kwargs)

        monkeypatch.setitem(registry, standard, counted)
    net = every_kind_of_layer().to(name)
    x = backend.to_backend(np.random.default_rng(1).standard_normal((4, 1, 8, 8)), name, dtype="float32")
    loss = xpcnn.SoftmaxCrossEntropy()
    loss.forward(net.forward(x), backend.to_backend(np.array([0, 1, 2, 1]), name))
    net.backward(loss.backward(), input_grad=False)
    Adam(net).step()
    net.forward(x, training=False)
    return calls


@pytest.mark.parametrize("name, module", [pytest.param(name, module, marks=[pytest.mark.gpu] * (name in GPU_BACKENDS))
                                          for name, module in KERNEL_MODULES])
def test_each_registered_fast_path_is_dispatched(name, module, monkeypatch):
    if backend.unavailable_reason(name) is not None:
        pytest.skip(f"{name}: {backend.unavailable_reason(name)}")
    modules = dict(backend.FAST_PATHS[name])
    monkeypatch.delenv("XPCNN_STANDARD_PATH", raising=False)
    for other, needs in modules.items():  # the module under test is the first one taken
        if needs is not None and other != module:
            monkeypatch.setenv(f"XPCNN_{needs.upper()}", "0")
        elif needs is not None:
            pytest.importorskip(needs)
            monkeypatch.delenv(f"XPCNN_{needs.upper()}", raising=False)
    assert backend.fast_paths(name)[0] == module
    calls = calls_of_each_fast_path(name, module, monkeypatch)
    assert all(calls.values()), f"never called: {[name for name, count in calls.items() if not count]}"


def test_a_process_that_compiled_kernels_writes_nothing_to_a_terminal_as_it_exits():
    """numba with colorama installed made colorama reset the terminal at exit: "\\033[0m"
    after the last line of `--json`, under mpirun, whose processes write to a terminal. As a
    training step does: the backend imports numba (to see whether it imports) before the
    kernel module."""
    import pty
    import subprocess
    import sys

    pytest.importorskip("colorama")
    code = ("import xpcnn.backend, numba; xpcnn.backend.fast_paths('numpy'); numba.njit(lambda x: x + 1)(1); "
            "print('done')")
    leader, follower = pty.openpty()
    env = {key: value for key, value in os.environ.items() if key != "NUMBA_DISABLE_ERROR_MESSAGE_HIGHLIGHTING"}
    process = subprocess.Popen([sys.executable, "-c", code], stdout=follower, stderr=subprocess.PIPE, env=env)
    os.close(follower)
    written = b""
    while True:
        try:
            chunk = os.read(leader, 1024)
        except OSError:  # the process closed its end
            break
        if not chunk:
            break
        written += chunk
    os.close(leader)
    assert process.wait(timeout=120) == 0, process.stderr.read()
    assert written.replace(b"\r", b"") == b"done\n"
