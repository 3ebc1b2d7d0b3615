"""PNG pictures of what xpcnn.explain.maps computes (needs matplotlib): a network's first
filters, and one image with the parts its answer rests on and its feature maps."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..io.figures import new_figure, save_png, shortened, show_image
from .maps import Occlusion

MAX_FILTERS = 64  # filters drawn at most: the first ones
MAPS_A_ROW = 8  # feature maps drawn for each layer: its most active channels
MAX_BARS = 10  # classes drawn at most, whatever `top` asks: more bars than this could not be read


def filters(weights: np.ndarray, path: str | Path, title: str = "") -> None:
    """The filters (O, I, kh, kw) of a first convolution as small pictures: in colour for
    3 input channels (RGB), else blue for negative and red for positive weights (the mean
    over input channels where there are more than one), each scaled by its largest."""
    shown = weights[:MAX_FILTERS]
    count, channels = shown.shape[:2]
    columns = min(count, 8)
    rows = math.ceil(count / columns)
    figure = new_figure(1.0 + 1.1 * columns, 0.8 + 1.1 * rows)
    for k, ax in enumerate(figure.subplots(rows, columns, squeeze=False).ravel()):
        ax.set_axis_off()
        if k >= count:
            continue
        scale = max(float(np.abs(shown[k]).max()), 1e-12)
        if channels == 3:
            ax.imshow(np.transpose(0.5 + shown[k] / (2 * scale), (1, 2, 0)))
        else:
            ax.imshow(shown[k].mean(axis=0) / scale, cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_title(str(k), fontsize=7)
    more = f" (the first {MAX_FILTERS} of {weights.shape[0]})" if weights.shape[0] > MAX_FILTERS else ""
    mean = f", mean over {channels} input channels" if channels not in (1, 3) else ""
    figure.suptitle(f"{title or 'first convolution'}: {weights.shape[0]} filters "
                    f"{weights.shape[2]}x{weights.shape[3]}{more}{mean}")
    save_png(figure, Path(path))


def explanation(path: str | Path, pixels: np.ndarray, classes: list[str], occluded: Occlusion,
                maps: dict[str, np.ndarray], layers: dict[str, str], title: str = "", top: int = 5) -> None:
    """One image (uint8 (C, H, W)): itself, where hiding it lowers the probability of the
    class followed (red) or raises it (blue), its `top` classes (MAX_BARS at most), and a
    row of feature maps for each layer of `maps` (named by `layers`, position to
    description)."""
    figure = new_figure(10.0, 3.0 + 1.35 * len(maps))
    # without feature maps (a network of dense layers), the top row is the whole figure, not 3 of 4.35 parts
    upper, lower = figure.subfigures(2, 1, height_ratios=[3.0, 1.35 * len(maps)]) if maps else (figure, None)
    image_axes, occluded_axes, classes_axes = upper.subplots(1, 3, width_ratios=[1, 1.25, 1.2])
    show_image(image_axes, pixels)
    image_axes.set_title("the image, as the network reads it", fontsize=9)
    _show_occlusion(upper, occluded_axes, pixels, occluded, classes[occluded.target])
    _show_classes(classes_axes, occluded.probabilities, classes, top)
    if maps:
        _show_maps(lower, maps, layers)
    if title:
        figure.suptitle(title)
    save_png(figure, Path(path))


def _show_occlusion(figure: Any, axes: Any, pixels: np.ndarray, occluded: Occlusion, name: str) -> None:
    axes.imshow(pixels.mean(axis=0), cmap="gray", vmin=0, vmax=255)
    reach = max(float(np.abs(occluded.drop).max()), 1e-6)
    shown = axes.imshow(occluded.drop, cmap="RdBu_r", vmin=-reach, vmax=reach, alpha=0.6)
    axes.set_axis_off()
    p = occluded.probabilities[occluded.target]  # shown here too: a class followed may be outside the top ones
    axes.set_title(f"hiding a {occluded.patch}x{occluded.patch} patch:\nfall of p({shortened(name, 28)}) from {p:.1%}",
                   fontsize=9)
    figure.colorbar(shown, ax=axes, shrink=0.8)


def _show_classes(axes: Any, probabilities: np.ndarray, classes: list[str], top: int) -> None:
    order = np.argsort(probabilities)[::-1][:min(top, MAX_BARS)]
    names = [shortened(classes[k]) for k in order]
    axes.barh(range(len(order)), probabilities[order] * 100, color="tab:blue")
    axes.set_yticks(range(len(order)), names, fontsize=8)
    axes.invert_yaxis()
    axes.set(xlim=(0, 100), xlabel="probability (%)", title="most likely classes")
    axes.title.set_fontsize(9)


def _show_maps(figure: Any, maps: dict[str, np.ndarray], layers: dict[str, str]) -> None:
    """A row for each layer: its MAPS_A_ROW channels of largest mean, each scaled alone."""
    grid = figure.subplots(len(maps), MAPS_A_ROW, squeeze=False)
    for row, (position, values) in zip(grid, maps.items()):
        active = np.argsort(values.mean(axis=(1, 2)))[::-1][:MAPS_A_ROW]
        for k, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            if k < len(active):
                ax.imshow(values[active[k]], cmap="viridis")
                ax.set_title(f"channel {active[k]}", fontsize=7)
            else:  # fewer channels than a row holds
                ax.set_frame_on(False)
        row[0].set_ylabel(f"{position} {layers[position]}\n{'x'.join(map(str, values.shape))}", fontsize=8)
    figure.suptitle("feature maps: each layer's most active channels", fontsize=9)
