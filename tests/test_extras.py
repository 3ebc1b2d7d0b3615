from __future__ import annotations

import re
from pathlib import Path

import pytest

from xpcnn.extras import EXTRAS, install_hint


def test_the_extras_are_pyproject_s():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 and later
    declared = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    for extra, packages in EXTRAS.items():
        names = [re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower() for requirement in declared[extra]]
        assert list(packages) == names, extra
    assert set(declared) - set(EXTRAS) == {"cupy", "cupy-cuda12", "torch", "docs", "test"}  # backends; work on xpcnn


def test_a_hint_installs_the_packages_where_xpcnn_is_not_on_pypi():
    assert install_hint("onnx") == "pip install onnx (in xpcnn's clone: pip install '.[onnx]')"
