"""The layer code uses only the Array API standard: no backend library is imported there."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import xpcnn

PACKAGE = Path(xpcnn.__file__).parent
FORBIDDEN = {"numpy", "cupy", "torch", "jax", "array_api_strict"}
# Modules whose math must go through the namespace of their inputs.
PURE = sorted([*(PACKAGE / "layers").glob("*.py"), PACKAGE / "losses.py", PACKAGE / "model.py"])


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", PURE, ids=lambda p: p.name)
def test_no_backend_imports(path):
    assert not imported_roots(path) & FORBIDDEN, f"{path.name} imports {imported_roots(path) & FORBIDDEN}"


def test_the_check_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import numpy as np\nfrom torch import nn\n")
    assert imported_roots(bad) >= {"numpy", "torch"}
