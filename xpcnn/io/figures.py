"""Figures drawn into PNG files with matplotlib (the plot extra): a figure of its own,
outside pyplot, written atomically. Run plots (xpcnn.train.plots) and explanations
(xpcnn.explain) draw with these."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

from .atomic import atomic_write_bytes


def available() -> bool:
    """Whether matplotlib is installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def new_figure(width: float, height: float) -> Any:
    """A Figure of its own, outside pyplot: it draws into a file without a display, and
    leaves the backend of a script's or notebook's own plots as it was."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def save_png(figure: Any, path: Path) -> None:
    """`figure` as a PNG at `path`, written whole or not at all."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # a class named in a script the font lacks (a folder named 猫) gets boxes, not
        warnings.filterwarnings("ignore", "Glyph .* missing from", UserWarning)  # two lines of warning per glyph
        figure.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())


def show_image(axes: Any, pixels: Any) -> None:
    """A uint8 image (C, H, W) in `axes`, without ticks: in colour with 3 channels, else
    grey (the mean of its channels)."""
    if pixels.shape[0] == 3:
        axes.imshow(pixels.transpose(1, 2, 0))
    else:
        axes.imshow(pixels.mean(axis=0), cmap="gray", vmin=0, vmax=255)
    axes.set_axis_off()


def shortened(name: str, most: int = 14) -> str:
    """A class name as a figure's label: whole up to `most` characters, else its start and
    its end around an ellipsis, `most` characters in all."""
    if len(name) <= most:
        return name
    start = (most - 1) // 2
    return f"{name[:start]}…{name[start + 1 - most:]}"
