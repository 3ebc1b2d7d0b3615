"""What a trained network makes of one image, as arrays on the host: the filters of its
first convolution, the feature maps its stages pass on, and how much its answer rests on
each part of the image (occlusion, after Zeiler and Fergus 2014: hide a patch, watch the
probability of the class fall). Images are given as to predict: uint8 (C, H, W), or grey
(H, W), normalised with the training data's statistics (model.data) unless mean and std
are given."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import backend
from ..checks import integer
from ..datasets import normalize
from ..evaluation import network_of, prepared, probabilities
from ..hooks import Position, TraceHook
from ..layers import GELU, Conv2D, ReLU, Sigmoid, Tanh
from ..model import Sequential

ACTIVATIONS = (ReLU, GELU, Tanh, Sigmoid)
MAX_PATCHES = 32  # occlusion patches along a side at most: at most 1,024 forwards of the image


def first_filters(model: Sequential | str | Path) -> tuple[Position, np.ndarray]:
    """The position of the network's first Conv2D (of a checkpoint's where `model` is a
    path, as feature_maps and occlusion take it) and its weights (O, I, kh, kw) on the
    host; ValueError where it has none."""
    for position, layer in network_of(model, "first_filters").named_layers():
        if isinstance(layer, Conv2D):
            return position, np.array(backend.to_numpy(layer.params["weight"]))
    raise ValueError("the network has no Conv2D layer, so no filters to show")


def stages(model: Sequential, input_shape: Sequence[int]) -> list[Position]:
    """Where feature_maps looks by default for images of `input_shape` (C, H, W): the first
    activation of the network's top level whose output is a feature map, and the last at
    each feature-map size (every such top-level layer, where none is an activation); none
    for a network without feature maps."""
    mapped = [(position, layer, shape[2:]) for position, layer, shape in model.shaped_layers((1, *input_shape))
              if isinstance(position, int) and len(shape) == 4]
    chosen = [row for row in mapped if isinstance(row[1], ACTIVATIONS)] or mapped
    if not chosen:
        return []
    ends = [position for (position, _, size), after in zip(chosen, chosen[1:] + [None])
            if after is None or after[2] != size]
    return sorted({chosen[0][0], *ends})


def feature_maps(model: Sequential | str | Path, image: np.ndarray, at: Position | Sequence[Position] | None = None,
                 mean: float | Sequence[float] | None = None,
                 std: float | Sequence[float] | None = None) -> dict[str, np.ndarray]:
    """The outputs (C, H, W) of the layers at `at` (positions as Sequential.hooked takes
    them; default: `stages`) for one image, by position, in the network's order."""
    model, images, mean, std = prepared(model, image, mean, std, "feature_maps")
    _one_image(images, "feature_maps")
    positions = stages(model, images.shape[1:]) if at is None else mapped_positions(model, at, images.shape[1:])
    if not positions:  # a network without feature maps
        return {}
    trace = TraceHook()
    with model.hooked(trace, at=positions):
        probabilities(model, normalize(images, mean, std, model.dtype))
    # the caller's own copies, not views of the forward's arrays
    return {str(position): np.array(output[0]) for position, output in trace.outputs.items()}


def mapped_positions(model: Sequential, at: Position | Sequence[Position], input_shape: Sequence[int]) -> list[str]:
    """The positions `at` names (an index, -1 the last, or "3.body.2" inside a block; or a
    list of them), as str, after checking that each layer's output is a feature map for
    images of `input_shape` (C, H, W); ValueError naming the first that is not."""
    shapes = {str(position): shape for position, _, shape in model.shaped_layers((1, *input_shape))}
    named = model.positions(at, "feature maps at", "the default ones (stages)")
    for position in named:
        if len(shapes[position]) != 4:
            raise ValueError(f"feature maps at {position}: the layer's output is {shapes[position][1:]} for an "
                             "image, not a feature map (C, H, W)")
    return named


@dataclass
class Occlusion:
    """How much the probability of class `target` falls where a patch of the image is
    hidden (`drop`, (H, W): the fall averaged over the patches that hid each pixel; a
    negative value is a rise), next to the `probabilities` (K,) of the whole image."""

    target: int
    probabilities: np.ndarray
    drop: np.ndarray
    patch: int
    stride: int


def occlusion(model: Sequential | str | Path, image: np.ndarray, target: int | None = None,
              patch: int | None = None, stride: int | None = None, mean: float | Sequence[float] | None = None,
              std: float | Sequence[float] | None = None, batch_size: int = 256) -> Occlusion:
    """Hide one square of `patch` pixels of one image at a time, every `stride` pixels, by
    the training images' mean colour (0 once normalised), and follow the probability of
    class `target` (default: the most likely). Defaults: a patch of a seventh of the
    image's side, moved by half of it (a small patch on a large image: by up to a whole
    patch, so that there are at most MAX_PATCHES positions along a side where it can).
    The hidden copies run `batch_size` a forward."""
    model, images, mean, std = prepared(model, image, mean, std, "occlusion")
    _one_image(images, "occlusion")
    batch_size = integer(batch_size, "occlusion batch_size", 1)
    x = normalize(images, mean, std, model.dtype)
    whole = probabilities(model, x)[0]
    target = int(np.argmax(whole)) if target is None else integer(target, "occlusion target", 0, whole.size - 1)
    height, width = x.shape[2:]
    patch = max(1, round(min(height, width) / 7)) if patch is None else patch
    patch = integer(patch, "occlusion patch", 1, min(height, width))
    fewest = math.ceil((max(height, width) - patch) / (MAX_PATCHES - 1))
    stride = min(patch, max(1, patch // 2, fewest)) if stride is None else integer(stride, "occlusion stride", 1, patch)
    corners = [(top, left) for top in _starts(height, patch, stride) for left in _starts(width, patch, stride)]
    fall, hidden = np.zeros((height, width)), np.zeros((height, width))
    for start in range(0, len(corners), batch_size):
        chunk = corners[start : start + batch_size]
        copies = np.repeat(x, len(chunk), axis=0)
        for k, (top, left) in enumerate(chunk):
            copies[k, :, top : top + patch, left : left + patch] = 0
        hiding = probabilities(model, copies)[:, target]
        for (top, left), p in zip(chunk, hiding):
            fall[top : top + patch, left : left + patch] += whole[target] - p
            hidden[top : top + patch, left : left + patch] += 1
    return Occlusion(target, whole, fall / hidden, patch, stride)


def _starts(side: int, patch: int, stride: int) -> list[int]:
    """Where patches start along a side: every `stride`, and flush with its end, so that
    every pixel is hidden at least once."""
    starts = list(range(0, side - patch + 1, stride))
    return starts if starts[-1] == side - patch else [*starts, side - patch]


def _one_image(images: np.ndarray, what: str) -> None:
    if images.shape[0] != 1:
        raise ValueError(f"{what} looks at one image (C, H, W), got {images.shape[0]} images")
