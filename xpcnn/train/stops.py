"""How a run ends before its last epoch: its loss diverged, or it was interrupted by
SIGINT (Ctrl-C) or SIGTERM, which batch schedulers send at the time limit and mpirun
passes on shortly before it kills the processes. (A callback may also end it, complete,
with Trainer.stop.)"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the weights are those before that step."""


class TrainingInterrupted(RuntimeError):
    """Training stopped on SIGINT (Ctrl-C) or SIGTERM after saving a checkpoint (None, and
    the message says so, for a trainer without a run folder)."""

    def __init__(self, message: str, checkpoint: Path | None) -> None:
        super().__init__(message if checkpoint is not None else f"{message}; nothing was saved (no run folder: "
                         "Trainer(run_dir=...) keeps a checkpoint to resume from)")
        self.checkpoint = checkpoint


STOPS = (TrainingDiverged, TrainingInterrupted)  # in data-parallel training, every member stops together


@contextlib.contextmanager
def interrupt_on_terminate() -> Iterator[None]:
    """Inside the block SIGTERM raises KeyboardInterrupt, as SIGINT does: a command ends
    with its cleanup and says so (a training run saves: stopping_on_signals). Main thread
    only; the handler before it is restored after."""
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, interrupt) if in_main_thread else None
    try:
        yield
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def stopping_on_signals(request_stop: Callable[[], None]) -> Iterator[None]:
    """Inside the block, SIGINT and SIGTERM call `request_stop` instead of ending the
    process: the trainer stops at its next batch, after saving. Handlers can only be set
    in the main thread; elsewhere the block runs as it is."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    stop_signals = (signal.SIGINT, signal.SIGTERM) if in_main_thread else ()
    previous = {number: signal.signal(number, lambda signum, frame: request_stop()) for number in stop_signals}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
