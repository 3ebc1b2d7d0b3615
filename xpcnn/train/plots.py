"""PNG plots of a run: learning curves and the confusion matrix (needs matplotlib)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from ..io.atomic import atomic_write_bytes


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(width: float, height: float) -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(figure: Any, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())


def learning_curves(history: list[dict[str, Any]], path: str | Path, title: str = "") -> None:
    """Loss and accuracy per epoch, training and (if present) validation."""
    figure = _figure(9, 3.5)
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    epochs = [row["epoch"] for row in history]
    for split, style in (("train", "o-"), ("val", "s--")):
        if all(f"{split}_loss" in row for row in history):
            loss_axes.plot(epochs, [row[f"{split}_loss"] for row in history], style, label=split)
            accuracy_axes.plot(epochs, [100 * row[f"{split}_accuracy"] for row in history], style, label=split)
    loss_axes.set(xlabel="epoch", ylabel="cross-entropy loss", yscale="log", title="loss")
    accuracy_axes.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for axes in (loss_axes, accuracy_axes):
        axes.grid(alpha=0.3)
        axes.legend()
        axes.xaxis.get_major_locator().set_params(integer=True)
    if title:
        figure.suptitle(title)
    _save(figure, Path(path))


def confusion(counts: np.ndarray, classes: list[str], path: str | Path, title: str = "") -> None:
    """Confusion matrix: rows true class, columns predicted, counts written in the cells."""
    figure = _figure(6.5, 5.5)
    axes = figure.subplots()
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    image = axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(classes))
    axes.set_xticks(
        ticks,
        classes,
        rotation=45 if max(map(len, classes)) > 2 else 0,
        ha="right" if max(map(len, classes)) > 2 else "center",
    )
    axes.set_yticks(ticks, classes)
    axes.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix (test set)")
    for (i, j), value in np.ndenumerate(counts):
        if value:
            axes.text(
                j, i, str(value), ha="center", va="center", fontsize=7, color="white" if rates[i, j] > 0.5 else "black"
            )
    figure.colorbar(image, ax=axes, label="share of true class")
    _save(figure, Path(path))
