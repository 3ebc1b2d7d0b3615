from __future__ import annotations

import os

import pytest

from xpcnn.io.regular import open_regular, why_missing


class Refused(ValueError):
    pass


def test_a_regular_file_and_a_link_to_one_open(tmp_path):
    (tmp_path / "file").write_bytes(b"abc")
    (tmp_path / "link").symlink_to(tmp_path / "file")
    for name in ("file", "link"):
        with open_regular(tmp_path / name, Refused) as handle:
            assert handle.read() == b"abc"


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"), reason="no FIFOs or devices here")
def test_anything_else_is_refused_by_name_at_once(tmp_path):
    os.mkfifo(tmp_path / "pipe")  # opening it for reading would wait for a writer
    (tmp_path / "zero").symlink_to("/dev/zero")  # reading it would never end
    for name in ("pipe", "zero", "."):
        with pytest.raises((Refused, IsADirectoryError), match=f"{name}: not a regular file|Is a directory"):
            open_regular(tmp_path / name, Refused)


def test_a_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_regular(tmp_path / "missing", Refused)


def test_a_path_that_is_not_there_is_told_from_a_link_to_nothing(tmp_path):
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    assert why_missing(tmp_path / "loop") == "is a link to nothing (its target is missing, or the links loop)"
    assert why_missing(tmp_path / "none") == "does not exist"
