"""The matrix product of the dense and convolution layers, as a function a fast path can
replace (backend.fast_path): CuPy's `@` calls cuBLAS, which a CUDA graph cannot hold
there, so every step of a CuPy run with graphs takes a product kernel of xpcnn's own
(kernels/cupy.py)."""

from __future__ import annotations

from typing import Any


def matmul(a: Any, b: Any) -> Any:
    """a (M, K) @ b (K, N): (M, N)."""
    return a @ b
