"""PNG plots of a run: learning curves, how each layer learned, the confusion matrix and
the most confident mistakes; the learning-rate range test (needs matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..io.figures import available, new_figure, save_png, shortened, show_image

__all__ = ["available", "confusion", "layer_learning", "learning_curves", "lr_range", "mistakes"]


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


MAX_LINES = 10  # layers up to which each is a named line; a deeper network is drawn as a heat map, a row a layer
TITLES = {"change": "how far each layer's weights moved in the epoch",
          "dead": "ReLU units that no probe image switches on"}
LABELS = {"change": "||W_end - W_start|| / ||W_start||", "dead": "dead units (%)"}


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
    that are dead, named by position and by `kinds` (the layers' types by position, where
    given). Up to MAX_LINES layers of a kind, a line a layer, darker to lighter from the
    input to the output; more (resnet20's 22), a heat map with a row a layer, in order. False,
    and no file written, where no row has them (a run recorded before they were)."""
    rows = [row for row in history if "layers" in row]
    if not rows:
        return False
    measures = {kind: _measured(rows, kind) for kind in ("change", "dead")}
    deepest = max(len(values) for values in measures.values())
    figure = new_figure(11 if deepest > MAX_LINES else 10, max(3.8, 1.4 + 0.17 * deepest))
    epochs = [row["epoch"] for row in rows]
    for axes, (kind, values) in zip(figure.subplots(1, 2), measures.items()):
        names = {position: f"{position} {(kinds or {}).get(position, '')}".strip() for position in values}
        if not values:  # a network of GELUs, say: an empty frame would look like a failure to draw
            axes.text(0.5, 0.5, f"no {'Conv2D or Dense' if kind == 'change' else 'ReLU'} layer", ha="center",
                      va="center", transform=axes.transAxes, color="gray")
        elif deepest > MAX_LINES:
            _heat_map(figure, axes, epochs, values, names, kind)
        else:
            _lines(axes, epochs, values, names, kind)
        axes.set(xlabel="epoch", title=TITLES[kind])
        axes.xaxis.get_major_locator().set_params(integer=True)
    if title:
        figure.suptitle(title)
    save_png(figure, Path(path))
    return True


def _measured(rows: list[dict[str, Any]], kind: str) -> dict[str, list[float]]:
    """{position: one value per row}, positions in the order measured (from the input),
    NaN where a row has none (a resumed epoch whose start was not kept); dead as %."""
    positions = dict.fromkeys(position for row in rows for position in row["layers"][kind])
    scale = 100 if kind == "dead" else 1
    return {position: [np.nan if (value := row["layers"][kind].get(position)) is None else scale * value
                       for row in rows] for position in positions}


def _lines(axes: Any, epochs: list[int], values: dict[str, list[float]], names: dict[str, str], kind: str) -> None:
    """A line a layer, coloured from the input (dark) to the output (light)."""
    from matplotlib import colormaps

    for k, (position, series) in enumerate(values.items()):
        axes.plot(epochs, series, "o-", markersize=3, label=names[position],
                  color=colormaps["viridis"](0.9 * k / max(1, len(values) - 1)))
    axes.legend(title="layer", fontsize=7, title_fontsize=7)
    axes.grid(alpha=0.3)
    axes.set(ylabel=LABELS[kind])
    if kind == "change":
        axes.set_yscale(**change_scale([v for series in values.values() for v in series if not np.isnan(v)]))
    else:
        axes.set(ylim=(-3, 103))


def _heat_map(figure: Any, axes: Any, epochs: list[int], values: dict[str, list[float]], names: dict[str, str],
              kind: str) -> None:
    """A row a layer, from the input at the top, a column an epoch; white where not measured.
    Changes on a log scale, those of 0 (a layer that did not move) in the colour below it."""
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm, Normalize

    grid = np.array(list(values.values()), dtype=float)  # (layers, epochs)
    edges = [epoch - 0.5 for epoch in epochs] + [epochs[-1] + 0.5]
    if kind == "change":
        moved = grid[grid > 0]
        low, high = (moved.min(), moved.max()) if moved.size else (1e-3, 1.0)
        norm, cmap, extend = LogNorm(low, max(high, low * 1.01)), colormaps["viridis"].with_extremes(
            bad="white", under="black"), "min" if (grid == 0).any() else "neither"
        grid = np.where(grid == 0, low / 10, grid)  # drawn in the colour under the scale, not left out
    else:
        norm, cmap, extend = Normalize(0, 100), colormaps["Reds"].with_extremes(bad="white"), "neither"
    mesh = axes.pcolormesh(edges, np.arange(len(values) + 1) - 0.5, np.ma.masked_invalid(grid), norm=norm,
                           cmap=cmap)
    axes.set_yticks(range(len(values)), list(names.values()), fontsize=6)
    axes.set_ylim(len(values) - 0.5, -0.5)  # the input's layer at the top
    label = LABELS[kind] + (" (black: did not move)" if extend == "min" else "")
    figure.colorbar(mesh, ax=axes, label=label, extend=extend)


def lr_range(found: Any, path: str | Path, title: str = "") -> None:
    """The learning-rate range test's loss against the rate (log scale), each batch's and
    smoothed, the suggested rate (the lowest smoothed loss's) marked; `found` is
    xpcnn.train.lr_range.LRRange."""
    figure = new_figure(7, 4)
    axes = figure.subplots()
    axes.plot(found.lrs, found.losses, color="lightgray", linewidth=1, label="batch loss")
    axes.plot(found.lrs, found.smoothed, color="tab:blue", label="smoothed")
    finite = [value for value in found.smoothed if np.isfinite(value)]
    if finite:  # the diverged tail would squash the curve: up to twice the start's loss
        low, high = min(finite), max(finite[0], min(finite)) * 2
        axes.set_ylim(low - 0.05 * (high - low), high)
    if found.suggested is not None:
        axes.axvline(found.suggested, color="tab:red", linestyle="--", label=f"suggested: {found.suggested:.2g}")
    axes.set(xscale="log", xlabel="learning rate", ylabel="training loss",
             title=title or "learning-rate range test")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    save_png(figure, Path(path))


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
