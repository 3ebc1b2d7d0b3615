"""Figures drawn into PNG files (xpcnn/io/figures.py)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from xpcnn.io import figures


def test_a_figure_is_written_whole_as_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    figure = figures.new_figure(2, 2)
    figure.subplots().plot([0, 1], [1, 0])
    (tmp_path / "plot.png").write_bytes(b"an older plot")
    figures.save_png(figure, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"
    assert [path.name for path in tmp_path.iterdir()] == ["plot.png"]  # no temporary file left beside it


def test_without_matplotlib_it_is_not_available(monkeypatch):
    pytest.importorskip("matplotlib")
    assert figures.available()
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    assert not figures.available()


def test_drawing_leaves_the_scripts_matplotlib_backend_as_it_was(tmp_path):
    """A script or notebook that plots too: its backend was switched to Agg."""
    pytest.importorskip("matplotlib")
    code = ("import matplotlib; matplotlib.use('svg'); import matplotlib.pyplot; from xpcnn.io import figures; "
            f"figures.save_png(figures.new_figure(1, 1), __import__('pathlib').Path({str(tmp_path / 'f.png')!r})); "
            "print(matplotlib.get_backend())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "svg" and (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("channels, ndim", [(1, 2), (3, 3), (2, 2)])
def test_an_image_is_shown_in_colour_with_three_channels_else_grey(channels, ndim):
    pytest.importorskip("matplotlib")
    axes = figures.new_figure(1, 1).subplots()
    figures.show_image(axes, np.full((channels, 4, 5), 7, np.uint8))
    assert axes.images[0].get_array().shape == (4, 5, 3)[:ndim] and not axes.axison
