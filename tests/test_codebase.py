"""The shape of the code a newcomer reads: short functions, a thin command line."""

from __future__ import annotations

import ast
from pathlib import Path

import xpcnn

PACKAGE = Path(xpcnn.__file__).parent
MAX_FUNCTION_LINES = 60
MAX_CLI_LINES = 300


def long_functions(path: Path, limit: int) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    return [f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > limit]


def test_no_function_is_longer_than_a_screen():
    found = [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in long_functions(path, MAX_FUNCTION_LINES)]
    assert not found, "functions over 60 lines: " + "; ".join(found)


def test_the_check_can_fail(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    (tmp_path / "long.py").write_text(f"def too_long():\n{body}\n")
    assert long_functions(tmp_path / "long.py", MAX_FUNCTION_LINES) == ["long.py:1 too_long (62 lines)"]


def test_the_command_line_stays_thin():
    lines = (PACKAGE / "cli.py").read_text().count("\n")
    assert lines < MAX_CLI_LINES, f"cli.py has {lines} lines: move library work out of it"
