"""Classification metrics: what the training step counts on the device, and what a test
set's predictions add up to on the host. No file readers here: the step imports it."""

from __future__ import annotations

from typing import Any

import numpy as np
from array_api_compat import array_namespace


def count_correct(logits: Any, labels: Any) -> Any:
    """Number of rows whose arg-max equals the label, as a 0-d float array on the device."""
    xp = array_namespace(logits)
    return xp.sum(xp.astype(xp.argmax(logits, axis=1) == labels, xp.float32))


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int) -> np.ndarray:
    """counts[true, predicted] (host integers) of `classes` classes."""
    counts = np.zeros((classes, classes), np.int64)
    np.add.at(counts, (labels, predictions), 1)
    return counts
