"""What `import xpcnn` gives a user (xpcnn/__init__.py)."""

from __future__ import annotations

import subprocess
import sys


def test_the_submodules_a_user_reaches_for_come_with_the_package():
    code = "import xpcnn; xpcnn.optim.Adam, xpcnn.presets.build, xpcnn.datasets.load_dataset, xpcnn.parity.compare"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_help_lists_the_public_api():
    import xpcnn

    assert all(name in xpcnn.__doc__ for name in ("Conv2D", "Sequential", "Trainer", "presets", "optim"))
    assert set(xpcnn.__all__) <= set(dir(xpcnn))
