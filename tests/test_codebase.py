"""The shape of the code a newcomer reads: short functions, a thin command line, modules
that import only downward, library names in one module, tests that mirror the package.
Each rule has a test that shows it can fail."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import xpcnn
from xpcnn import backend

PACKAGE = Path(xpcnn.__file__).parent
TESTS = Path(__file__).parent
MAX_FUNCTION_LINES = 50
MAX_CLI_MODULE_LINES = 300

# Each module's rank in the layering (docs/architecture.md): a module imports only modules
# of its rank or below. The longest matching prefix gives a module's rank.
RANKS = {
    "xpcnn._version": 0, "xpcnn.kernels": 0,  # the kernel registry (xpcnn/kernels/__init__.py)
    "xpcnn.backend": 1,
    "xpcnn.capture": 2, "xpcnn.distributed": 2, "xpcnn.init": 2,
    "xpcnn.layers": 3, "xpcnn.losses": 3, "xpcnn.hooks": 3, "xpcnn.metrics": 3, "xpcnn.weights": 3,
    "xpcnn.model": 4,
    "xpcnn.optim": 5,
    "xpcnn.kernels.numba": 6, "xpcnn.kernels.numpy": 6, "xpcnn.presets": 6,
    "xpcnn.io": 7, "xpcnn.datasets": 7,
    "xpcnn.diagnostics": 8,
    "xpcnn.evaluation": 9,
    "xpcnn.train": 10,
    "xpcnn.cli": 11,
    "xpcnn": 12,  # the package's own __init__ and __main__
}
# Tests of the whole code base, or of more than one module, rather than of one module.
CROSS_CUTTING = {"test_codebase.py", "test_purity.py", "test_package.py", "test_fuzz_readers.py", "test_gpu_check.py",
                 "test_docs.py", "test_layer_contract.py"}


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def rank(module: str) -> int:
    matches = [prefix for prefix in RANKS if module == prefix or module.startswith(prefix + ".")]
    if module.endswith("__main__"):
        return RANKS["xpcnn"]
    return RANKS[max(matches, key=len)]


def imports(path: Path, root: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, absolute module) of every import of the package's own modules in `path`,
    those inside functions too; `from . import a` names module a."""
    name, found = module_name(path, root), []
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], *([base] if base else [])])
            if base.split(".")[0] == root.name:
                for alias in node.names:
                    whole = f"{base}.{alias.name}"
                    found.append((node.lineno, whole if (root.parent / whole.replace(".", "/")).with_suffix(".py")
                                   .exists() or (root.parent / whole.replace(".", "/")).is_dir() else base))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == root.name]
    return found


def upward_imports(root: Path) -> list[str]:
    return [f"{module_name(path, root)}:{line} imports {target} (rank {rank(target)} > {rank(module_name(path, root))})"
            for path in sorted(root.rglob("*.py")) for line, target in imports(path, root)
            if rank(target) > rank(module_name(path, root))]


def long_functions(path: Path, limit: int) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    return [f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > limit]


def name_comparisons(path: Path) -> list[str]:
    """Comparisons with a backend's name (== "numpy", in ("torch", ...)) in `path`."""
    def names(node: ast.AST) -> set[str]:
        if isinstance(node, ast.Constant) and node.value in backend.BACKENDS:
            return {node.value}
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return set().union(*(names(item) for item in node.elts))
        return set()

    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Compare) and (named := set().union(*map(names, [node.left, *node.comparators]))):
            found.append(f"{path.name}:{node.lineno} compares with {sorted(named)}")
    return found


def orphan_tests(tests: Path, package: Path) -> list[str]:
    """Test modules that mirror no module of the package (tests/a/test_b.py: xpcnn/a/b.py
    or the package xpcnn/a/b/)."""
    orphans = []
    for path in sorted(tests.rglob("test_*.py")):
        if path.parent == tests and path.name in CROSS_CUTTING:
            continue
        mirrored = package / path.parent.relative_to(tests) / path.name.removeprefix("test_")
        if not mirrored.exists() and not mirrored.with_suffix("").is_dir():
            orphans.append(str(path.relative_to(tests)))
    return orphans


def test_no_function_is_longer_than_a_screen():
    found = [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in long_functions(path, MAX_FUNCTION_LINES)]
    assert not found, f"functions over {MAX_FUNCTION_LINES} lines: " + "; ".join(found)


def test_the_command_line_stays_thin():
    for path in sorted((PACKAGE / "cli").glob("*.py")):
        lines = path.read_text().count("\n")
        assert lines < MAX_CLI_MODULE_LINES, f"{path.name} has {lines} lines: move library work out of it"


def test_modules_import_only_downward():
    found = upward_imports(PACKAGE)
    assert not found, "upward imports: " + "; ".join(found)


def test_library_names_are_compared_only_in_backend():
    found = [hit for path in sorted(PACKAGE.rglob("*.py")) if path.name != "backend.py"
             for hit in name_comparisons(path)]
    assert not found, "library names compared outside backend.py (ask it a capability): " + "; ".join(found)


def test_tests_mirror_the_package():
    assert not orphan_tests(TESTS, PACKAGE), f"tests that mirror no module: {orphan_tests(TESTS, PACKAGE)}"


def test_the_checks_can_fail(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "long.py").write_text(f"def too_long():\n{body}\n")
    assert long_functions(tmp_path / "long.py", MAX_FUNCTION_LINES) == ["long.py:1 too_long (51 lines)"]
    (tmp_path / "names.py").write_text('if name == "numpy" or kind in ("cupy", "x"):\n    pass\n')
    assert name_comparisons(tmp_path / "names.py") == ["names.py:1 compares with ['numpy']",
                                                       "names.py:1 compares with ['cupy']"]
    fake = tmp_path / "xpcnn"
    (fake / "layers").mkdir(parents=True)
    (fake / "train").mkdir()
    (fake / "train" / "__init__.py").write_text("")
    (fake / "layers" / "conv.py").write_text("def f():\n    from ..train import trainer\n")
    assert upward_imports(fake) == ["xpcnn.layers.conv:2 imports xpcnn.train (rank 10 > 3)"]
    (tmp_path / "tests" / "layers").mkdir(parents=True)
    (tmp_path / "tests" / "layers" / "test_gone.py").write_text("")
    (tmp_path / "tests" / "layers" / "test_conv.py").write_text("")
    assert orphan_tests(tmp_path / "tests", fake) == ["layers/test_gone.py"]


@pytest.mark.parametrize("module, expected", [("xpcnn.kernels", 0), ("xpcnn.kernels.numba", 6),
                                              ("xpcnn.io.schema", 7), ("xpcnn.train.trainer", 10)])
def test_ranks_take_the_longest_prefix(module, expected):
    assert rank(module) == expected
