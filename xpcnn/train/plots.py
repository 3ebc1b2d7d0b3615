"""PNG plots of a run: learning curves, how each layer learned, the confusion matrix and
the most confident mistakes (needs matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..io.figures import available, new_figure, save_png, shortened, show_image

__all__ = ["available", "confusion", "layer_learning", "learning_curves", "mistakes"]


def learning_curves(history: list[dict[str, Any]], path: str | Path, title: str = "") -> None:
    """Loss and accuracy per epoch, training and (if present) validation."""
    figure = new_figure(9, 3.5)
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
    save_png(figure, Path(path))


MAX_NAMED = 10  # layers up to which each line is named in the legend: beyond, the first and the last


def change_scale(changes: list[float | None]) -> dict[str, Any]:
    """The scale of the change axis (matplotlib's set_yscale arguments) for `changes`: log,
    or where a layer did not move at all (0, which a log scale leaves out) symlog, linear
    below the smallest change that is not 0."""
    known = [change for change in changes if change is not None]
    if all(change > 0 for change in known):
        return {"value": "log"}
    return {"value": "symlog", "linthresh": min((change for change in known if change > 0), default=1e-3)}


def layer_learning(history: list[dict[str, Any]], path: str | Path, title: str = "",
                   kinds: dict[str, str] | None = None) -> bool:
    """How each layer learned per epoch, from the rows' "layers" (xpcnn.train.layer_stats):
    how far each Conv2D and Dense layer's weights moved, and the share of each ReLU's units
    that are dead, one line a layer, darker to lighter from the input to the output, named
    by position and by `kinds` (the layers' types by position, where given). False,
    and no file written, where no row has them (a run recorded before they were)."""
    from matplotlib import colormaps

    rows = [row for row in history if "layers" in row]
    if not rows:
        return False
    figure = new_figure(10, 3.8)
    change_axes, dead_axes = figure.subplots(1, 2)
    for axes, kind, scale in ((change_axes, "change", 1), (dead_axes, "dead", 100)):
        positions = list(dict.fromkeys(position for row in rows for position in row["layers"][kind]))
        for k, position in enumerate(positions):
            values = [row["layers"][kind].get(position) for row in rows]  # None: not measured (a resumed epoch)
            named = len(positions) <= MAX_NAMED or k in (0, len(positions) - 1)
            axes.plot([row["epoch"] for row in rows], [np.nan if v is None else scale * v for v in values], "o-",
                      markersize=3, color=colormaps["viridis"](0.9 * k / max(1, len(positions) - 1)),
                      label=f"{position} {(kinds or {}).get(position, '')}".strip() if named else None)
        if positions:
            axes.legend(title="layer", fontsize=7, title_fontsize=7)
        else:  # a network of GELUs, say: an empty frame would look like a failure to draw
            axes.text(0.5, 0.5, f"no {'Conv2D or Dense' if kind == 'change' else 'ReLU'} layer", ha="center",
                      va="center", transform=axes.transAxes, color="gray")
        axes.grid(alpha=0.3)
        axes.xaxis.get_major_locator().set_params(integer=True)
    change_axes.set_yscale(**change_scale([change for row in rows for change in row["layers"]["change"].values()]))
    change_axes.set(xlabel="epoch", ylabel="||W_end - W_start|| / ||W_start||",
                    title="how far each layer's weights moved in the epoch")
    dead_axes.set(xlabel="epoch", ylabel="dead units (%)", ylim=(-3, 103),
                  title="ReLU units that no probe image switches on")
    if title:
        figure.suptitle(title)
    save_png(figure, Path(path))
    return True


MAX_WRITTEN = 20  # classes up to which each cell's count is written in it
MAX_LABELS = 30  # tick labels on an axis at most: beyond, every k-th class is named


def confusion(counts: np.ndarray, classes: list[str], path: str | Path, title: str = "") -> None:
    """Confusion matrix: rows true class, columns predicted, coloured by the share of the
    true class. Readable from 2 to 100 classes and more: the figure grows with them, the
    counts are written in the cells up to MAX_WRITTEN classes, and beyond MAX_LABELS every
    k-th class is named (long names shortened)."""
    n = len(classes)
    side = min(5.5 + 0.12 * max(0, n - 10), 16.0)
    figure = new_figure(side + 1.0, side)
    axes = figure.subplots()
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    image = axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    step = -(-n // MAX_LABELS)
    ticks = list(range(0, n, step))
    names = [shortened(classes[k]) for k in ticks]
    size = 8 if n <= MAX_LABELS else 6
    slanted = max(map(len, names)) > 2
    axes.set_xticks(ticks, names, rotation=45 if slanted else 0, ha="right" if slanted else "center", fontsize=size)
    axes.set_yticks(ticks, names, fontsize=size)
    axes.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix (test set)")
    if n <= MAX_WRITTEN:
        for (i, j), value in np.ndenumerate(counts):
            if value:
                axes.text(j, i, str(value), ha="center", va="center", fontsize=7,
                          color="white" if rates[i, j] > 0.5 else "black")
    figure.colorbar(image, ax=axes, label="share of true class")
    save_png(figure, Path(path))


MAX_MISTAKES = 24  # test images shown at most: the most confidently wrong


def mistakes(images: np.ndarray, labels: np.ndarray, predicted: np.ndarray, confidences: np.ndarray,
             classes: list[str], path: str | Path, title: str = "") -> int:
    """The test images (uint8 (n, C, H, W)) the network got most confidently wrong, each
    under its true class, the class given and that class's probability; the number drawn
    (none drawn, and no file written, where every image was right)."""
    wrong = np.flatnonzero(predicted != labels)
    shown = wrong[np.argsort(-confidences[wrong], kind="stable")][:MAX_MISTAKES]
    if not shown.size:
        return 0
    columns = min(len(shown), 8)
    rows = -(-len(shown) // columns)
    figure = new_figure(1.0 + 1.4 * columns, 0.9 + 1.6 * rows)
    for place, ax in enumerate(figure.subplots(rows, columns, squeeze=False).ravel()):
        ax.set_axis_off()
        if place >= len(shown):  # the last row's empty cells
            continue
        k = shown[place]
        show_image(ax, images[k])
        given = f"{shortened(classes[labels[k]], 12)} → {shortened(classes[predicted[k]], 12)}"
        ax.set_title(f"{given}\n{confidences[k]:.1%}", fontsize=7)  # the most confident are 99.x %, not "100%"
    figure.suptitle(f"{title or 'test images'}: the {len(shown)} most confident of {len(wrong):,} mistakes "
                    "(true → given, its probability)", fontsize=9)
    save_png(figure, Path(path))
    return len(shown)
