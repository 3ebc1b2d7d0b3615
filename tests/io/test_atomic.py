"""Atomic writes (xpcnn/io/atomic.py).

Saves that survive SIGKILL are tested where they are used: tests/io/test_checkpoint.py and the
crash-and-resume test in tests/cli/test_main.py.
"""

from __future__ import annotations

import pytest

from xpcnn.io.atomic import FILE_MODE, atomic_write_text


def test_written_files_get_the_usual_mode(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "x")
    (tmp_path / "b.txt").write_text("x")  # an ordinary new file, for comparison
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == (tmp_path / "b.txt").stat().st_mode & 0o777 == FILE_MODE


def test_a_folder_is_not_overwritten_and_the_error_names_it(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(IsADirectoryError, match=r"run is a folder; name the file to write"):
        atomic_write_text(tmp_path / "run", "x")
    assert list((tmp_path).iterdir()) == [tmp_path / "run"]  # no temporary file left beside it
