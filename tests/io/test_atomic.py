"""Atomic writes (xpcnn/io/atomic.py).

Saves that survive SIGKILL are tested where they are used: tests/io/test_checkpoint.py and the
crash-and-resume test in tests/cli/test_main.py.
"""

from __future__ import annotations

import os
import stat

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


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_device_or_fifo_is_refused_never_replaced(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    targets = [tmp_path / "pipe"]
    if os.path.exists("/dev/null"):  # a link to it: writing must not replace the machine's /dev/null
        (tmp_path / "null").symlink_to("/dev/null")
        targets.append(tmp_path / "null")
    for target in targets:
        with pytest.raises(FileExistsError, match="is not a regular file"):
            atomic_write_text(target, "x")
    assert stat.S_ISFIFO((tmp_path / "pipe").stat().st_mode) and sorted(tmp_path.iterdir()) == sorted(targets)
    assert not os.path.exists("/dev/null") or stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_link_is_written_through(tmp_path):
    (tmp_path / "model.onnx").write_text("old")
    (tmp_path / "link.onnx").symlink_to("model.onnx")
    atomic_write_text(tmp_path / "link.onnx", "new")
    assert (tmp_path / "link.onnx").is_symlink() and (tmp_path / "model.onnx").read_text() == "new"


def test_a_file_where_a_folder_should_be_is_named(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(OSError, match=r"cannot write .*notes.txt/sub/a.txt: .*notes.txt is a file, not a folder"):
        atomic_write_text(tmp_path / "notes.txt" / "sub" / "a.txt", "x")
    atomic_write_text(tmp_path / "new" / "folders" / "a.txt", "x")  # missing folders are made
    assert (tmp_path / "new" / "folders" / "a.txt").read_text() == "x"


def test_a_link_into_a_missing_folder_or_a_loop_is_refused_not_followed_or_replaced(tmp_path):
    os.symlink(tmp_path / "nowhere" / "model.onnx", tmp_path / "dangling.onnx")
    with pytest.raises(FileNotFoundError, match=r"dangling.onnx is a link that loops, or into a folder that does not "
                                                r"exist"):
        atomic_write_text(tmp_path / "dangling.onnx", "x")
    assert not (tmp_path / "nowhere").exists()
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    with pytest.raises(FileNotFoundError, match="loop is a link that loops"):
        atomic_write_text(tmp_path / "loop", "x")
    assert (tmp_path / "loop").is_symlink()
    os.symlink(tmp_path / "new.txt", tmp_path / "to-new")  # a link to a file not yet there, in a folder that is
    atomic_write_text(tmp_path / "to-new", "written")
    assert (tmp_path / "new.txt").read_text() == "written" and (tmp_path / "to-new").is_symlink()


def test_a_replaced_file_keeps_its_mode(tmp_path):
    """A checkpoint made private (chmod 600) became readable by everyone at the next save."""
    path = tmp_path / "checkpoint.npz"
    atomic_write_text(path, "old")
    path.chmod(0o600)
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and path.stat().st_mode & 0o777 == 0o600
