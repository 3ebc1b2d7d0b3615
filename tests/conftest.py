"""Shared fixtures: the backend matrix and the hypothesis profiles.

Every backend usable here runs the layer tests; CuPy and torch-on-CUDA are marked `gpu`
and skip cleanly on machines without a CUDA device, unless XPCNN_REQUIRE_GPU=1 (set by
benchmarks/gpu_check.sh): then an unusable GPU backend fails them, so a broken CUDA setup
never reads as a pass.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from xpcnn import backend

settings.register_profile(
    "ci", max_examples=12, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("XPCNN_HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

# (backend, device) pairs; GPU ones carry the gpu marker.
REQUIRE_GPU = os.environ.get("XPCNN_REQUIRE_GPU") == "1"
CPU_TARGETS = [("numpy", None), ("array_api_strict", None), ("torch", "cpu")]
GPU_TARGETS = [("cupy", None), ("torch", "cuda")]


def _usable(name: str, device: str | None) -> str | None:
    return backend.device_unusable_reason(name, device)


def _target_params() -> list:
    params = []
    for name, device in CPU_TARGETS + GPU_TARGETS:
        marks = [pytest.mark.gpu] if (name, device) in GPU_TARGETS else []
        reason = _usable(name, device)
        if reason is not None and not (REQUIRE_GPU and (name, device) in GPU_TARGETS):
            marks.append(pytest.mark.skip(reason=f"{name}: {reason}"))
        label = name if device in (None, "cpu") else f"{name}-{device}"
        params.append(pytest.param((name, device), id=label, marks=marks))
    return params


TARGETS = _target_params()


@pytest.fixture(params=TARGETS, scope="session")
def target(request):
    """(backend name, device spec) of every usable backend."""
    reason = _usable(*request.param)
    if reason is not None:  # only with XPCNN_REQUIRE_GPU: the others were skipped
        pytest.fail(f"XPCNN_REQUIRE_GPU is set but {request.param[0]} cannot run here: {reason}")
    return request.param


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """Every test, and every command it starts, caches in a folder of the session's (decoded
    folders of pictures, downloads): none writes into the user's ~/.cache/xpcnn."""
    patch = pytest.MonkeyPatch()
    patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    yield
    patch.undo()


@pytest.fixture
def bundled_mnist(tmp_path, monkeypatch):
    """Commands the test starts read no MNIST but the subset inside the package (train
    without --data-dir, with --no-download): no XPCNN_DATA_DIR, an empty cache. Every
    machine has it, CI too, which has no ../shared/data/mnist."""
    monkeypatch.delenv("XPCNN_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))


@pytest.fixture(scope="session")
def to_target(target):
    """Move host data to the current target: to_target(array, dtype=None)."""
    name, device = target

    def move(array, dtype=None):
        return backend.to_backend(np.asarray(array), name, device, dtype)

    return move
