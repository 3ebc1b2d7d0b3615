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
# of lower rank, or of its own rank within its own package. The longest matching prefix
# gives a module's rank.
RANKS = {
    "xpcnn._version": 0, "xpcnn.checks": 0, "xpcnn.extras": 0,
    "xpcnn.kernels": 0,  # the kernel registry (xpcnn/kernels/__init__.py)
    "xpcnn.backend": 1,
    "xpcnn.capture": 2, "xpcnn.distributed": 2, "xpcnn.init": 2,
    "xpcnn.layers": 3, "xpcnn.losses": 3, "xpcnn.hooks": 3, "xpcnn.metrics": 3, "xpcnn.weights": 3,
    "xpcnn.model": 4,
    "xpcnn.optim": 5,
    "xpcnn.kernels.numba": 6, "xpcnn.kernels.numpy": 6, "xpcnn.kernels.cupy": 6,
    "xpcnn.presets": 7, "xpcnn.io.atomic": 7, "xpcnn.io.npyheader": 7, "xpcnn.io.regular": 7,
    "xpcnn.datasets": 8,
    "xpcnn.io": 9,
    "xpcnn.diagnostics": 10,
    "xpcnn.evaluation": 11,
    "xpcnn.explain": 12, "xpcnn.train": 12,
    "xpcnn.cli": 13,
    "xpcnn": 14,  # the package's own __init__ and __main__
}
# backend imports the kernel modules of FAST_PATHS by name, lazily: the one place a lower
# rank reaches a higher one, so that the standard path never depends on a kernel.
IMPORTS_BY_NAME = {"xpcnn.backend", "xpcnn.kernels"}
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


def package_of(module: str) -> str:
    return module.rpartition(".")[0]


def upward_imports(root: Path) -> list[str]:
    """Imports of a higher rank, or of the same rank in another package."""
    found = []
    for path in sorted(root.rglob("*.py")):
        mine = module_name(path, root)
        for line, target in imports(path, root):
            sideways = rank(target) == rank(mine) and package_of(target) != package_of(mine) and target != mine
            if rank(target) > rank(mine) or (sideways and not target.startswith(mine + ".")):
                found.append(f"{mine}:{line} imports {target} (rank {rank(target)}, its own {rank(mine)})")
    return found


def imports_by_name(path: Path, root: Path = PACKAGE) -> list[str]:
    """Modules of the package imported by a string given to importlib (an import the rank
    check cannot see)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in (
                "import_module", "__import__", "find_spec"):
            named = [arg.value for arg in node.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str)]
            found += [f"{module_name(path, root)}:{node.lineno} imports {name} by name" for name in named
                      if name.split(".")[0] == root.name]
    return found


def long_functions(path: Path, limit: int) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    return [f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > limit]


def name_comparisons(path: Path) -> list[str]:
    """Decisions on a backend's name in `path`: comparisons (== "numpy", in ("torch", ...)),
    match cases, startswith, and dictionaries keyed by names."""
    def names(node: ast.AST | None) -> set[str]:
        if isinstance(node, ast.Constant) and node.value in backend.BACKENDS:
            return {node.value}
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return set().union(*(names(item) for item in node.elts))
        return set()

    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        named: set[str] = set()
        if isinstance(node, ast.Compare):
            named = set().union(*map(names, [node.left, *node.comparators]))
        elif isinstance(node, ast.MatchValue):
            named = names(node.value)
        elif isinstance(node, ast.Dict):
            named = set().union(*map(names, node.keys))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                "startswith", "endswith"):
            named = set().union(*map(names, node.args))
        if named:
            found.append(f"{path.name}:{node.lineno} decides on {sorted(named)}")
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


def test_only_backend_imports_modules_by_name():
    found = [hit for path in sorted(PACKAGE.rglob("*.py")) if module_name(path) not in IMPORTS_BY_NAME
             for hit in imports_by_name(path)]
    assert not found, "; ".join(found)


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
    (tmp_path / "names.py").write_text('if name == "numpy" or kind in ("cupy", "x"):\n    pass\n'
                                       'ways = {"torch": 1}\nname.startswith("cupy")\n'
                                       'match name:\n    case "numpy":\n        pass\n')
    assert sorted(name_comparisons(tmp_path / "names.py")) == [
        "names.py:1 decides on ['cupy']", "names.py:1 decides on ['numpy']", "names.py:3 decides on ['torch']",
        "names.py:4 decides on ['cupy']", "names.py:6 decides on ['numpy']"]
    fake = tmp_path / "xpcnn"
    (fake / "layers").mkdir(parents=True)
    (fake / "train").mkdir()
    (fake / "train" / "__init__.py").write_text("")
    (fake / "layers" / "conv.py").write_text("def f():\n    from ..train import trainer\n")
    (fake / "losses.py").write_text("from .layers import conv\nimportlib.import_module('xpcnn.train.trainer')\n")
    assert upward_imports(fake) == ["xpcnn.layers.conv:2 imports xpcnn.train (rank 12, its own 3)",
                                    "xpcnn.losses:1 imports xpcnn.layers.conv (rank 3, its own 3)"]
    assert imports_by_name(fake / "losses.py", fake) == ["xpcnn.losses:2 imports xpcnn.train.trainer by name"]
    (tmp_path / "tests" / "layers").mkdir(parents=True)
    (tmp_path / "tests" / "layers" / "test_gone.py").write_text("")
    (tmp_path / "tests" / "layers" / "test_conv.py").write_text("")
    assert orphan_tests(tmp_path / "tests", fake) == ["layers/test_gone.py"]


@pytest.mark.parametrize("module, expected", [("xpcnn.kernels", 0), ("xpcnn.kernels.numba", 6),
                                              ("xpcnn.io.atomic", 7), ("xpcnn.io.schema", 9),
                                              ("xpcnn.train.trainer", 12)])
def test_ranks_take_the_longest_prefix(module, expected):
    assert rank(module) == expected
