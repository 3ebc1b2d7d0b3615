"""Classification metrics: what the training step counts on the device, and what a test
set's predictions add up to on the host. No file readers here: the step imports it."""

from __future__ import annotations

from typing import Any

import numpy as np
from array_api_compat import array_namespace

from .checks import integer


def count_correct(logits: Any, labels: Any) -> Any:
    """Number of rows whose arg-max equals the label, as a 0-d float array on the device."""
    xp = array_namespace(logits)
    return xp.sum(xp.astype(xp.argmax(logits, axis=1) == labels, xp.float32))


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int) -> np.ndarray:
    """counts[true, predicted] (host integers) of `classes` classes, from `labels` and
    `predictions` (n,) class indices in [0, classes); TypeError or ValueError naming what
    is not."""
    classes = integer(classes, "confusion_matrix classes", 1)
    labels, predictions = _indices(labels, "labels", classes), _indices(predictions, "predictions", classes)
    if labels.shape != predictions.shape:
        raise ValueError(f"confusion_matrix: {labels.shape[0]} labels but {predictions.shape[0]} predictions")
    counts = np.zeros((classes, classes), np.int64)
    np.add.at(counts, (labels, predictions), 1)
    return counts


def _indices(values: Any, what: str, classes: int) -> np.ndarray:
    """`values` as host class indices (n,) in [0, classes): a negative one would count as
    a class from the end, a float one fail inside NumPy's indexing."""
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"confusion_matrix {what} must be (n,) class indices, got shape {values.shape}")
    if values.dtype.kind not in "iu":
        raise TypeError(f"confusion_matrix {what} must be integers (class indices), got {values.dtype}")
    outside = np.flatnonzero((values < 0) | (values >= classes))
    if outside.size:
        raise ValueError(f"confusion_matrix {what} must be in [0, {classes}); the one at index {outside[0]} is "
                         f"{values[outside[0]]}")
    return values


def per_class(counts: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """From a confusion matrix counts[true, predicted]: each class's precision (of the
    images predicted as it, how many are it), recall (of its images, how many were found),
    F1 (their harmonic mean) and support (its images), and their unweighted means ("macro")
    over the classes the matrix has images of or predictions of, as scikit-learn's report
    takes them: a class with neither (a folder's class with no test picture) has nothing to
    score. A class never predicted has precision 0, one never present recall 0."""
    counts = np.asarray(counts, np.float64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"per_class takes a confusion matrix (K, K), got shape {counts.shape}")
    if len(classes) != counts.shape[0]:  # zip would drop the classes beyond the shorter
        raise ValueError(f"per_class: {counts.shape[0]} classes in the confusion matrix but {len(classes)} names")
    right, predicted, present = np.diag(counts), counts.sum(axis=0), counts.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, right / predicted, 0.0)
        recall = np.where(present > 0, right / present, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    rows = [{"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(classes, precision, recall, f1, present)]
    seen = (present > 0) | (predicted > 0)
    seen = seen if seen.any() else np.ones_like(seen)  # an empty matrix: the means of zeros, 0
    macro = {"precision": float(precision[seen].mean()), "recall": float(recall[seen].mean()),
             "f1": float(f1[seen].mean())}
    return {"classes": rows, "macro": macro}


def per_class_table(scores: dict[str, Any]) -> str:
    """per_class()'s result (or evaluate()'s) as a text table, a line per class and one for
    the mean."""
    if not isinstance(scores, dict) or not {"classes", "macro"} <= set(scores):
        given = f"a dict of {sorted(scores)}" if isinstance(scores, dict) else type(scores).__name__
        raise TypeError(f'per_class_table takes what per_class() or evaluate() returns ("classes" and "macro"), '
                        f"got {given}")
    width = max([5, *(len(row["class"]) for row in scores["classes"])])
    # Rates take 7 characters: "100.00%" would push a narrower column out of line.
    lines = [f"{'class':<{width}}  precision   recall       f1  support"]
    for row in scores["classes"]:
        lines.append(f"{row['class']:<{width}}  {row['precision']:9.2%}  {row['recall']:7.2%}  {row['f1']:7.2%}  "
                     f"{row['support']:7,}")
    macro = scores["macro"]
    lines.append(f"{'mean':<{width}}  {macro['precision']:9.2%}  {macro['recall']:7.2%}  {macro['f1']:7.2%}")
    return "\n".join(lines)
