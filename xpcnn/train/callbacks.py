"""Callbacks: code that runs at fixed points of a Trainer's fit, to report, save or stop.

    trainer = Trainer(model, optimizer, run_dir="runs/mine", callbacks=[EarlyStopping(patience=3)])
    trainer.fit(train, epochs=20, val=val)

A Trainer calls its callbacks in order, yours first, then its own: the progress bar
(`progress=True`) and, with a run folder, the checkpoints, the metrics file and the
summary (each unless you passed one of its kind), so that a checkpoint holds what your
callbacks did at that point. A callback
reads the trainer (its `state`, `history`, `model`) and may end the run with
`trainer.stop(reason)`; it must not change the model or the optimizer, or a resumed run
would not retrace the interrupted one. In data-parallel training every process calls its
callbacks; with worker threads only the first (the trainer you made) does, and the first
one's decision to stop is everyone's.

A callback whose settings change what a run does is recorded in the checkpoint with its
state (`RECORDED`), and `Trainer.resume` rebuilds it: EarlyStopping and BestCheckpoint.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..checks import integer, number
from ..io.schema import CheckpointError
from .run_folder import BEST_NAME

if TYPE_CHECKING:
    from .trainer import Trainer


class Callback:
    """Does nothing at each point; override what you need. `trainer` is the Trainer."""

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first step of a fit (also of a resumed one)."""

    def on_epoch_start(self, trainer: Trainer, batches: int) -> None:
        """Before an epoch's first step (or the next one, on resume); it has `batches` in all."""

    def on_step_end(self, trainer: Trainer) -> None:
        """After each optimizer step; `trainer.state` holds the epoch's running sums."""

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        """After an epoch: `row` is its metrics (the last of `trainer.history`)."""

    def on_fit_end(self, trainer: Trainer) -> None:
        """After a fit, also one that was interrupted or failed."""

    def on_test_end(self, trainer: Trainer, result: dict[str, Any], test: Any) -> None:
        """After `trainer.finish(test)` evaluated the model: `result` is evaluate()'s."""


def progress_bar(total: int, what: str, unit: str, done: int = 0) -> Any:
    """A tqdm bar on stderr of `total` units, `done` of them done, that leaves no line
    behind; None without tqdm (the `progress` extra)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=done, unit=unit, desc=what, leave=False, dynamic_ncols=True)


class ProgressBar(Callback):
    """A progress bar per epoch, with the running loss and accuracy (needs tqdm: the
    `progress` extra; without it, nothing)."""

    def __init__(self) -> None:
        self._bar: Any = None

    def on_epoch_start(self, trainer: Trainer, batches: int) -> None:
        self._bar = progress_bar(batches, f"epoch {trainer.state.epoch + 1}/{trainer.epochs}", "batch",
                                 trainer.state.batch)

    def on_step_end(self, trainer: Trainer) -> None:
        if self._bar is not None:
            s = trainer.state
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{s.loss_sum / s.seen:.4f}", acc=f"{s.correct / s.seen:.2%}", refresh=False)
            if s.batch == self._bar.total:  # gone before the epoch's line is logged
                self._close()

    def on_fit_end(self, trainer: Trainer) -> None:
        self._close()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class MetricsLog(Callback):
    """metrics.jsonl in the run folder: one JSON line per completed epoch, also written
    once the model is tested."""

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        self._write(trainer)

    def on_test_end(self, trainer: Trainer, result: dict[str, Any], test: Any) -> None:
        # A kill between the last epoch's checkpoint and this file leaves it an epoch short,
        # and resuming the complete run only tests it: written again, it matches the checkpoint.
        if trainer.history:  # a model tested before any epoch has no metrics file to mend
            self._write(trainer)

    @staticmethod
    def _write(trainer: Trainer) -> None:
        if trainer.folder is not None and trainer.comm.is_root:
            trainer.folder.write_metrics(trainer.history)


class PeriodicCheckpoints(Callback):
    """The run folder's checkpoint (Trainer.save), written after every epoch and, with
    `every`, every that many optimizer steps within one."""

    def __init__(self, every: int | None = None) -> None:
        self.every = None if every is None else integer(every, "checkpoint_every", 1)
        self._batches = 0

    def on_epoch_start(self, trainer: Trainer, batches: int) -> None:
        self._batches = batches

    def on_step_end(self, trainer: Trainer) -> None:
        # The epoch's last step is saved by on_epoch_end, with the epoch complete.
        if self.every and trainer.optimizer.steps % self.every == 0 and trainer.state.batch < self._batches:
            trainer.save()

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        trainer.save()


class RunSummary(Callback):
    """summary.json in the run folder once the model is tested and, where the folder asks
    for them and matplotlib is installed, curves.png, layers.png, confusion.png and
    mistakes.png."""

    def on_test_end(self, trainer: Trainer, result: dict[str, Any], test: Any) -> None:
        folder = trainer.folder
        if folder is None or not trainer.comm.is_root:
            return
        folder.write_summary(trainer.summary(result, test))
        if folder.with_plots:
            kinds = {str(position): type(layer).__name__ for position, layer in trainer.model.named_layers()}
            folder.draw_plots(trainer.history, result, test, f"{trainer.name} on {test.spec.name}", trainer.log, kinds)


class Watching(Callback):
    """A callback that follows one of the epoch's metrics, `monitor` ("val_loss",
    "val_accuracy", "train_loss" or "train_accuracy"; losses improve downwards, accuracies
    upwards), and the best value it has taken: an epoch improves on it by more than
    `min_delta`. Its settings and state are recorded in the checkpoint (see RECORDED)."""

    MONITORS = {"val_loss": -1, "val_accuracy": 1, "train_loss": -1, "train_accuracy": 1}  # the better direction

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0) -> None:
        name = type(self).__name__
        if not isinstance(monitor, str) or monitor not in self.MONITORS:
            raise ValueError(f"{name} monitor must be one of {', '.join(self.MONITORS)}, got {monitor!r}")
        self.monitor, self.min_delta = monitor, number(min_delta, f"{name} min_delta", 0.0, math.inf)
        self.best: float | None = None
        self.best_epoch = 0

    def config(self) -> dict[str, Any]:
        return {"monitor": self.monitor, "min_delta": self.min_delta}

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        expected = set(self.state_dict())
        best, counts = state.get("best"), [state.get(key) for key in sorted(expected - {"best"})]
        if set(state) != expected or not (best is None or (type(best) in (int, float) and math.isfinite(best))) \
                or not all(type(count) is int and count >= 0 for count in counts):
            raise ValueError(f"{type(self).__name__}: expected state with {', '.join(sorted(expected))} (best a finite "
                             f"number or null, the others counts >= 0), got {state!r}"[:300])
        for key, value in state.items():
            setattr(self, key, value)

    def on_fit_start(self, trainer: Trainer) -> None:
        if self.monitor.startswith("val_") and trainer.val is None:
            raise ValueError(f"{type(self).__name__} monitors {self.monitor}, but the fit has no validation set "
                             "(fit(..., val=...); xpcnn train --val-split)")

    def improved(self, row: dict[str, Any]) -> bool:
        """Whether the epoch of `row` improves on the best, which it then becomes."""
        value = row[self.monitor]
        if self.best is None or self.MONITORS[self.monitor] * (value - self.best) > self.min_delta:
            self.best, self.best_epoch = value, row["epoch"]
            return True
        return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{key}={value!r}' for key, value in self.config().items())})"


class EarlyStopping(Watching):
    """Ends the run once `monitor` has not improved on its best by more than `min_delta`
    for `patience` epochs in a row (see Watching). The weights are those of the last
    epoch; BestCheckpoint keeps the best one's."""

    def __init__(self, monitor: str = "val_loss", patience: int = 3, min_delta: float = 0.0) -> None:
        super().__init__(monitor, min_delta)
        self.patience, self.waited = integer(patience, "EarlyStopping patience", 1), 0

    def config(self) -> dict[str, Any]:
        return {**super().config(), "patience": self.patience}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "waited": self.waited}

    def restart(self) -> None:
        """Wait `patience` epochs again from now, keeping the best value: what extending a
        run it stopped does (record.extend)."""
        self.waited = 0

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        if self.improved(row):
            self.waited = 0
            return
        self.waited += 1
        if self.waited >= self.patience:
            trainer.stop(f"early stopping: {self.monitor} has not improved on {self.best:.4g} (epoch "
                         f"{self.best_epoch}) for {self.waited} epoch{'s' if self.waited > 1 else ''}")


class BestCheckpoint(Watching):
    """Keeps the best epoch by `monitor` (see Watching) as best.npz in the run folder: a
    whole checkpoint, written when an epoch improves on the best, that evaluate, predict
    and export take like the last one."""

    NAME = BEST_NAME

    def on_fit_start(self, trainer: Trainer) -> None:
        super().on_fit_start(trainer)
        if trainer.folder is None:
            raise ValueError("BestCheckpoint keeps best.npz in the run folder, but the trainer has none (run_dir=...)")

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        if self.improved(row):
            trainer.save(trainer.folder.path / self.NAME)


def with_own_callbacks(given: Sequence[Callback], progress: bool, folder: bool,
                       checkpoint_every: int | None) -> list[Callback]:
    """`given`, then a trainer's own callbacks of the kinds not given: the progress bar
    (with `progress`), and for a run `folder` its checkpoints (every epoch and every
    `checkpoint_every` steps), metrics file and summary; the checkpoint first, so that
    metrics.jsonl never runs ahead of it."""
    every = None if checkpoint_every is None else integer(checkpoint_every, "checkpoint_every", 1)
    if every is not None and not folder:
        raise ValueError("checkpoint_every: checkpoints are written in the run folder, but the trainer has none "
                         "(run_dir=...)")
    writers = [type(callback).__name__ for callback in given if isinstance(callback, (BestCheckpoint, RunSummary,
                                                                                      MetricsLog))]
    if len(writers) != len(set(writers)):
        raise ValueError(f"Trainer callbacks: two of {', '.join(sorted(set(writers)))} would write the same file")
    own = [ProgressBar()] if progress else []
    if folder:
        own += [PeriodicCheckpoints(every), MetricsLog(), RunSummary()]
    kinds = {type(callback) for callback in given}
    return [*given, *(callback for callback in own if type(callback) not in kinds)]


RECORDED: dict[str, type[Callback]] = {"EarlyStopping": EarlyStopping, "BestCheckpoint": BestCheckpoint}


def recorded(callbacks: list[Callback]) -> list[Callback]:
    """The callbacks of `callbacks` that a checkpoint records (types of RECORDED), in order."""
    return [callback for callback in callbacks if type(callback) in RECORDED.values()]


def rebuild_recorded(saved: list[dict[str, Any]], path: Any) -> list[Callback]:
    """The recorded callbacks of a checkpoint at `path`, with their settings and state;
    CheckpointError naming the file and the callback when they do not fit it."""
    callbacks = []
    for entry in saved:
        kind = RECORDED.get(entry["type"])
        if kind is None:
            raise CheckpointError(f"{path}: field trainer.callbacks: unknown callback {entry['type']!r}"[:300])
        try:
            callback = kind(**entry["config"])
            callback.load_state_dict(entry["state"])
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: field trainer.callbacks: {exc}"[:300]) from None
        callbacks.append(callback)
    return callbacks
