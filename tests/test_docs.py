"""The documentation cannot rot: every Python example in README.md and docs/ runs, the site
builds with `mkdocs build --strict`, the command's reference names every flag, and the
README stays a short page with the test command CI runs."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

import xpcnn.model
from xpcnn.cli.arguments import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 250


def python_blocks(page: Path) -> list[tuple[int, str]]:
    """(line, code) of each ```python block of a Markdown page."""
    found, lines = [], page.read_text().splitlines()
    for number, line in enumerate(lines):
        if line.strip() == "```python":
            end = next(i for i in range(number + 1, len(lines)) if lines[i].strip() == "```")
            found.append((number + 1, "\n".join(lines[number + 1:end])))
    return found


@pytest.mark.parametrize("page", [page for page in PAGES if python_blocks(page)], ids=lambda page: page.name)
def test_every_python_example_runs(page, tmp_path, monkeypatch):
    """The blocks of a page run in order in one namespace, as a reader would paste them, in
    an empty folder, with no data but what the package carries."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("XPCNN_DATA_DIR", raising=False)
    monkeypatch.setattr(xpcnn.model, "BUILDABLE", dict(xpcnn.model.BUILDABLE))  # a page's register_layer ends here
    namespace: dict = {"__name__": f"example_{page.stem}"}
    for line, code in python_blocks(page):
        try:
            exec(compile(code, f"{page.name}:{line}", "exec"), namespace)  # noqa: S102  (our own documentation)
        except Exception as exc:
            raise AssertionError(f"{page.name}, the example at line {line} fails: {type(exc).__name__}: {exc}") from exc


def test_the_python_block_finder_finds_blocks(tmp_path):
    (tmp_path / "page.md").write_text("text\n```python\nx = 1\ny = 2\n```\n```bash\nls\n```\n")
    assert python_blocks(tmp_path / "page.md") == [(2, "x = 1\ny = 2")]


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs is not installed (the docs extra)")
def test_the_site_builds_strictly(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    reference = (tmp_path / "site" / "reference" / "index.html").read_text()
    assert "Conv2D" in reference and "EarlyStopping" in reference  # the docstrings were read


def test_the_command_reference_names_every_flag():
    page = (ROOT / "docs" / "cli.md").read_text()
    commands = build_parser()._subparsers._group_actions[0].choices
    missing = [f"{name} {flag}" for name, parser in commands.items() for action in parser._actions
               for flag in action.option_strings if flag.startswith("--") and flag not in ("--help", "--debug")
               and flag not in page]
    assert not missing, f"docs/cli.md does not name: {missing}"
    assert all(f"## {name}" in page for name in commands)


def test_the_readme_is_short_and_holds_the_ci_command():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= MAX_README_LINES
    command = re.search(r"<!-- test-command -->\n```bash\n(.+)\n```", text)
    assert command and "pytest" in command.group(1)
    for word in ("moonshot", "issue "):
        assert word not in text.lower(), f"the README speaks of {word!r}: tracker words belong to the tracker"
