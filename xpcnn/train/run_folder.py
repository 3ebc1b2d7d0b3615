"""The folder a training run writes, whether started by `xpcnn train` or from Python:

    checkpoint.npz               model, optimizer and trainer state (latest; xpcnn.io.checkpoint)
    metrics.jsonl                one JSON line per completed epoch
    summary.json                 what was trained on what, and the test result
    curves.png, confusion.png    learning curves and confusion matrix (with matplotlib)
    mistakes.png                 the test images most confidently misclassified (with matplotlib)
    best.npz                     the best epoch's checkpoint (train.callbacks.BestCheckpoint)

Every file is written atomically: a reader never sees half of one.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..extras import install_hint
from ..io.atomic import atomic_write_text
from . import plots

CHECKPOINT_NAME = "checkpoint.npz"
METRICS_NAME = "metrics.jsonl"
SUMMARY_NAME = "summary.json"
CURVES_NAME, LAYERS_NAME = "curves.png", "layers.png"
CONFUSION_NAME, MISTAKES_NAME = "confusion.png", "mistakes.png"
BEST_NAME = "best.npz"
WRITTEN = (CHECKPOINT_NAME, METRICS_NAME, SUMMARY_NAME, CURVES_NAME, LAYERS_NAME, CONFUSION_NAME, MISTAKES_NAME,
           BEST_NAME)


class RunFolderError(ValueError):
    """A run folder that does not fit what was asked: a new run where one was saved, a run
    to resume where none is, a path that is not a folder."""


class RunFolder:
    """Paths and writers of one run folder; `with_plots` False leaves the plots out."""

    def __init__(self, path: str | Path, with_plots: bool = True) -> None:
        self.path, self.with_plots = Path(path), with_plots
        self._made: list[Path] = []  # the folders making it made, deepest first
        self._wrote: set[str] = set()  # the run's files written through this object (finish before fit)

    def _make(self, exist_ok: bool = False) -> None:
        """mkdir -p, remembering which folders did not exist (remove_if_empty)."""
        missing, folder = [], self.path
        while not folder.exists() and folder != folder.parent:
            missing.append(folder)
            folder = folder.parent
        self.path.mkdir(parents=True, exist_ok=exist_ok)
        self._made = missing

    @classmethod
    def new(cls, name: str, parent: str | Path = "runs") -> RunFolder:
        """A new, empty folder parent/name-<date>-<time>, made now: two runs started in the
        same second get -2, -3... instead of sharing one."""
        stamp = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        attempt = 1
        while True:
            folder = cls(Path(parent) / (stamp if attempt == 1 else f"{stamp}-{attempt}"))
            try:
                folder._make()
                return folder
            except FileExistsError:
                attempt += 1

    @classmethod
    def open(cls, path: str | Path | None, *, resume: bool, name: str = "run") -> RunFolder:
        """The folder of a run to resume (`path`, holding a checkpoint), or of a new one
        (`path`, without a checkpoint, else a new runs/<name>-<time>), made now so that a
        path that cannot be a folder fails before any training. RunFolderError if not."""
        if path is None:
            if resume:
                raise RunFolderError("resuming needs the run folder to continue")
            return cls.new(name)
        folder = cls(path)
        if folder.path.exists() and not folder.path.is_dir():
            raise RunFolderError(f"{folder.path} is a file, not a run folder")
        if resume and not folder.checkpoint.exists():
            raise RunFolderError(f"no checkpoint to resume in {folder.path}")
        if resume:
            folder.remove_unfinished_writes()
        if not resume:
            folder._check_new("resume it")
        try:
            folder._make(exist_ok=True)
        except OSError as exc:
            raise RunFolderError(f"cannot make {folder.path}: {exc.strerror or exc}") from None
        folder._check_writable()
        return folder

    def check_usable(self, new_run: bool, writes: bool = True) -> None:
        """RunFolderError where the path is a file, or, for a new run, the folder already
        holds one (its checkpoint and files would be mixed with this run's), or, for the
        process that `writes` them, the run's files could not be written."""
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"{self.path} is a file, not a run folder")
        if new_run:
            self._check_new(f"continue it with Trainer.resume('{self.checkpoint}')")
        if writes and self.path.is_dir():  # the other processes of a data-parallel run leave no trace
            self._check_writable()

    def _check_new(self, how_to_continue: str) -> None:
        """RunFolderError where the folder holds another run's files, which a new run's
        would be mixed with: its checkpoint (then `how_to_continue` it), or what a run
        writes beside one (a summary and plots of a model tested without training)."""
        if self.checkpoint.exists():
            raise RunFolderError(f"{self.path} already holds a run; {how_to_continue}, or choose another folder")
        held = [name for name in WRITTEN if (self.path / name).is_file() and name not in self._wrote]
        if held:
            raise RunFolderError(f"{self.path} already holds another run's {', '.join(held)}: a new run's files would "
                                 "be mixed with them; choose another folder, or empty this one")

    def _check_writable(self) -> None:
        """RunFolderError where the run could not write its files, found before it trains:
        the folder takes no new file (read-only, /proc), or one of the run's names is held
        by what is not a file (a folder, a FIFO)."""
        for name in WRITTEN:
            path = self.path / name
            if path.exists() and not path.is_file():
                raise RunFolderError(f"{path} is not a file, and the run writes its {name} there")
        try:
            with tempfile.TemporaryFile(dir=self.path):
                pass
        except OSError as exc:
            raise RunFolderError(f"cannot write into {self.path}: {exc.strerror or exc}") from None

    def remove_unfinished_writes(self) -> None:
        """Remove the temporary files of writes a kill interrupted (see xpcnn.io.atomic): the
        run they belonged to is over, and the files they were to replace are intact."""
        for name in WRITTEN:
            for leftover in self.path.glob(f".{name}.*.tmp"):
                if leftover.is_file() and not leftover.is_symlink():  # what atomic writes make, nothing else
                    leftover.unlink(missing_ok=True)

    def remove_if_empty(self) -> None:
        """Remove the folder if making it made it and nothing was written into it, and the
        folders above it that making it made, while they are empty (a folder that was
        there before stays)."""
        for folder in self._made:
            if not folder.is_dir() or any(folder.iterdir()):
                return
            folder.rmdir()

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_NAME

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY_NAME

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        atomic_write_text(self.path / METRICS_NAME, "".join(json.dumps(row) + "\n" for row in history))
        self._wrote.add(METRICS_NAME)

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_text(self.summary, json.dumps(summary, indent=2) + "\n")
        self._wrote.add(SUMMARY_NAME)

    def draw_plots(self, history: list[dict[str, Any]], result: dict[str, Any], test: Any, title: str,
                   log: Callable[[str], None], kinds: dict[str, str] | None = None) -> None:
        """curves.png, layers.png, confusion.png and mistakes.png, from the `history` of
        epochs and the test `result` (evaluate's) on `test` (a Dataset); says so through
        `log` when matplotlib is missing; `kinds` names the layers' types by position. A
        model tested before any epoch (finish without fit) has no curves: their axes would
        be empty under a legend of curves that are not there."""
        if not plots.available():
            log(f"plots skipped: matplotlib is not installed ({install_hint('plot')})")
            return
        classes, counts = list(test.spec.classes), result["confusion"]
        if history:
            plots.learning_curves(history, self.path / CURVES_NAME, title)
        layers = plots.layer_learning(history, self.path / LAYERS_NAME, title, kinds)
        plots.confusion(counts, classes, self.path / CONFUSION_NAME, f"{title}: test accuracy {result['accuracy']:.2%}")
        wrong = plots.mistakes(test.images, test.labels, result["predictions"], result["confidences"], classes,
                               self.path / MISTAKES_NAME, title)
        if not wrong:  # an earlier test's mistakes, where none is wrong now
            (self.path / MISTAKES_NAME).unlink(missing_ok=True)
        drawn = [CURVES_NAME] * bool(history) + [LAYERS_NAME] * layers + [CONFUSION_NAME]
        drawn += [MISTAKES_NAME] * bool(wrong)
        self._wrote.update(drawn)
        notes = ["no epoch trained: no learning curves"] * (not history) + ["no test image wrong"] * (not wrong)
        shown = ", ".join(str(self.path / name) for name in drawn)
        log(f"plots: {shown}" + (f" ({'; '.join(notes)})" if notes else ""))
