"""How each layer learns, measured at the end of every epoch and kept in the epoch's row
of the history as row["layers"]:

- "change": for each Conv2D and Dense layer, by position, how far its weights moved over
  the epoch relative to their size, ||W_end - W_start|| / ||W_start||. A layer that learns
  moves by a share that falls with the learning rate; one at 0 has stopped, one near or
  above 1 is being rewritten each epoch. None where it is not known: weights that began
  the epoch at 0, or an epoch resumed without its first weights.
- "dead": for each ReLU, by position, the share of its units (channels of a feature map,
  features of a vector) that no image of a fixed probe switches on. A dead unit passes no
  gradient back, so the weights that feed it stop learning.

A network of more than MAX_WATCHED Conv2D and Dense layers together, or of more than
MAX_WATCHED ReLUs, has that many of them measured, spread evenly from the first to the
last. The probe is the first training images (at most PROBE_IMAGES, fewer for large
images), run through the network in evaluation mode: no weight, running statistic or
random draw changes, so the run is the same with and without the measures.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from .. import backend
from ..datasets import Dataset, batches
from ..evaluation import check_model_fits
from ..hooks import LayerHook, Position
from ..layers import Conv2D, Dense, ReLU
from ..model import Sequential

PROBE_IMAGES = 256  # the first training images, at most
PROBE_VALUES = 1 << 22  # input values of the probe at most: 16 MiB in float32, 27 colour images of 224x224
MAX_WATCHED = 64  # layers of each kind at most, spread over the depth: a row stays small in the checkpoint


class LayerStats:
    """How each layer of `model` learns (see xpcnn.train.layer_stats), its probe the first
    images of `train`. TypeError or ValueError where `model` is no Sequential or `train`
    no Dataset it takes."""

    def __init__(self, model: Sequential, train: Dataset) -> None:
        if not isinstance(model, Sequential):
            raise TypeError(f"LayerStats takes a Sequential, got {type(model).__name__}")
        check_model_fits(model, train, "LayerStats train")
        named = model.named_layers()
        self.model = model
        self.weighted = spread([str(position) for position, layer in named if isinstance(layer, (Conv2D, Dense))])
        self.relus = spread([str(position) for position, layer in named if isinstance(layer, ReLU)])
        c, h, w = train.images.shape[1:]
        self.probe = train.subset(np.arange(min(len(train), PROBE_IMAGES, max(1, PROBE_VALUES // (c * h * w)))))

    def weights(self) -> dict[str, np.ndarray]:
        """Host copies of the weights whose change is measured, by parameter name."""
        return {f"{position}.weight": np.array(backend.to_numpy(self.model.params[f"{position}.weight"]))
                for position in self.weighted}

    def measure(self, start: dict[str, np.ndarray] | None) -> dict[str, dict[str, float | None]]:
        """{"change": {position: share or None}, "dead": {position: share}} (see
        xpcnn.train.layer_stats), the change from the weights the epoch began with (`start`,
        as weights() gave them; None where unknown). ValueError for a `start` weight of
        another shape."""
        return {"change": self._changes(start or {}), "dead": self._dead_shares()}

    def _changes(self, start: dict[str, np.ndarray]) -> dict[str, float | None]:
        changes: dict[str, float | None] = {}
        for name, now in self.weights().items():
            began = start.get(name)
            if began is not None and np.shape(began) != now.shape:  # would broadcast: a wrong change, silently
                raise ValueError(f"LayerStats.measure start: {name} has shape {np.shape(began)}, the network's "
                                 f"{now.shape}")
            size = 0.0 if began is None else float(np.linalg.norm(began.astype(np.float64)))
            change = float(np.linalg.norm(now.astype(np.float64) - began)) / size if size > 0 else math.nan
            changes[name.removesuffix(".weight")] = change if math.isfinite(change) else None
        return changes

    def _dead_shares(self) -> dict[str, float]:
        if not self.relus:
            return {}
        model, active = self.model, ActiveUnits()
        x, _ = next(batches(self.probe, len(self.probe), shuffle=False, backend_name=model.backend,
                            device=model.device, dtype=model.dtype))
        with model.hooked(active, at=self.relus):
            model.forward(x, training=False)
        return {position: float(np.mean(~active.units[position])) for position in self.relus}


class ActiveUnits(LayerHook):
    """Which units of each hooked layer's output, (N, C, ...) or (N, F), are positive for
    at least one image and place: a host bool array (C,) or (F,) by position."""

    def __init__(self) -> None:
        self.units: dict[str, np.ndarray] = {}

    def after_forward(self, index: Position, layer: Any, y: Any) -> None:
        xp = array_namespace(y)
        self.units[str(index)] = np.asarray(backend.to_numpy(xp.any(y > 0, axis=(0, *range(2, y.ndim)))))


def spread(positions: list[str], most: int = MAX_WATCHED) -> list[str]:
    """`positions`, or `most` of them spread evenly from the first to the last."""
    if len(positions) <= most:
        return positions
    return [positions[k] for k in np.linspace(0, len(positions) - 1, most).round().astype(int)]
