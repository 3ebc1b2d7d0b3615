"""The folder a training run writes, whether started by `xpcnn train` or from Python:

    checkpoint.npz               model, optimizer and trainer state (latest; xpcnn.checkpoint)
    metrics.jsonl                one JSON line per completed epoch
    summary.json                 what was trained on what, and the test result
    curves.png, confusion.png    learning curves and confusion matrix (with matplotlib)

Every file is written atomically: a reader never sees half of one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import plots
from .atomic import atomic_write_text

CHECKPOINT_NAME = "checkpoint.npz"
METRICS_NAME = "metrics.jsonl"
SUMMARY_NAME = "summary.json"


class RunFolder:
    """Paths and writers of one run folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_NAME

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY_NAME

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        atomic_write_text(self.path / METRICS_NAME, "".join(json.dumps(row) + "\n" for row in history))

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_text(self.summary, json.dumps(summary, indent=2) + "\n")

    def draw_plots(self, history: list[dict[str, Any]], counts: np.ndarray, classes: list[str], title: str,
                   log: Callable[[str], None]) -> None:
        """curves.png and confusion.png; says so through `log` when matplotlib is missing."""
        if not plots.available():
            log("plots skipped: matplotlib is not installed (pip install 'xpcnn[plot]')")
            return
        accuracy = np.trace(counts) / max(int(counts.sum()), 1)
        plots.learning_curves(history, self.path / "curves.png", title)
        plots.confusion(counts, classes, self.path / "confusion.png", f"{title}: test accuracy {accuracy:.2%}")
        log(f"plots: {self.path / 'curves.png'}, {self.path / 'confusion.png'}")
