"""Fast paths: standard-path functions redone for one array library.

The layers' math is written once against the Array API standard: the standard path, the
reference. A kernel module here redoes some of its functions with what one library has
beyond the standard (NumPy's `out=` and strided views, numba's compiled loops) and
declares each with `@implements(standard)`: the same parameters, the same results (the
tests hold every registered function to its standard one). A layer asks
`backend.fast_path(standard, x)` and gets the fast function of x's library, or the
standard one; which modules each library takes, in order of preference, is declared in
`backend.FAST_PATHS`.

Kernel modules depend only downward (backend, distributed, optim, layers); adding one
for another library is one more module here and one more entry in `backend.FAST_PATHS`.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable
from typing import Any, TypeVar

# Where colorama is installed, numba colours its messages through it, and colorama resets
# the terminal as the process exits: under mpirun, whose processes write to a terminal of
# its own, `--json` output ended in "\033[0m". The kernels have no messages to colour.
# numba reads this as it is first imported: here, before backend imports it to see whether
# it imports, ahead of xpcnn.kernels.numba.
os.environ.setdefault("NUMBA_DISABLE_ERROR_MESSAGE_HIGHLIGHTING", "1")

F = TypeVar("F", bound=Callable[..., Any])

_REGISTRIES: dict[str, dict[Callable[..., Any], Callable[..., Any]]] = {}


def parameters(function: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    """(name, kind, default) of each parameter of `function`: what a caller may pass.
    Annotations are left out: a kernel may name a library's own array type."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


def implements(standard: Callable[..., Any]) -> Callable[[F], F]:
    """Register the decorated function as its module's fast path of `standard`. TypeError
    when their parameters differ, ValueError when the module registers `standard` twice:
    both at import, so a mismatch can never go unnoticed."""

    def register(fast: F) -> F:
        if parameters(fast) != parameters(standard):
            raise TypeError(f"{fast.__module__}.{fast.__qualname__} takes {inspect.signature(fast)}, but the "
                            f"{standard.__module__}.{standard.__qualname__} it replaces takes "
                            f"{inspect.signature(standard)}")
        registry = _REGISTRIES.setdefault(fast.__module__, {})
        if standard in registry:
            raise ValueError(f"{fast.__module__} registers two fast paths of {standard.__qualname__}")
        registry[standard] = fast
        return fast

    return register


def registry(module: str) -> dict[Callable[..., Any], Callable[..., Any]]:
    """{standard function: its fast path} of kernel module `module` (imported at the first
    lookup)."""
    found = _REGISTRIES.get(module)
    if found is None:  # asked at every step by every layer: the import machinery only once
        importlib.import_module(module)
        found = _REGISTRIES.setdefault(module, {})
    return found
