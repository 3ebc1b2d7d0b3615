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


def per_class(counts: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """From a confusion matrix counts[true, predicted]: each class's precision (of the
    images predicted as it, how many are it), recall (of its images, how many were found),
    F1 (their harmonic mean) and support (its images), and their unweighted means over the
    classes ("macro"). A class never predicted has precision 0, one never present recall 0."""
    counts = np.asarray(counts, np.float64)
    right, predicted, present = np.diag(counts), counts.sum(axis=0), counts.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, right / predicted, 0.0)
        recall = np.where(present > 0, right / present, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    rows = [{"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(classes, precision, recall, f1, present)]
    macro = {"precision": float(precision.mean()), "recall": float(recall.mean()), "f1": float(f1.mean())}
    return {"classes": rows, "macro": macro}


def per_class_table(scores: dict[str, Any]) -> str:
    """per_class()'s result as a text table, a line per class and one for the mean."""
    width = max([5, *(len(row["class"]) for row in scores["classes"])])
    # Rates take 7 characters: "100.00%" would push a narrower column out of line.
    lines = [f"{'class':<{width}}  precision   recall       f1  support"]
    for row in scores["classes"]:
        lines.append(f"{row['class']:<{width}}  {row['precision']:9.2%}  {row['recall']:7.2%}  {row['f1']:7.2%}  "
                     f"{row['support']:7,}")
    macro = scores["macro"]
    lines.append(f"{'mean':<{width}}  {macro['precision']:9.2%}  {macro['recall']:7.2%}  {macro['f1']:7.2%}")
    return "\n".join(lines)
