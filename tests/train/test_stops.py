from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from xpcnn.train import TrainingInterrupted
from xpcnn.train.stops import interrupt_on_terminate, stopping_on_signals


def test_an_interruption_says_where_it_saved_or_that_it_saved_nothing():
    assert str(TrainingInterrupted("interrupted at epoch 1, batch 3", Path("run/checkpoint.npz"))) == \
        "interrupted at epoch 1, batch 3"
    unsaved = TrainingInterrupted("interrupted at epoch 1, batch 3", None)
    assert unsaved.checkpoint is None and str(unsaved) == (
        "interrupted at epoch 1, batch 3; nothing was saved (no run folder: Trainer(run_dir=...) keeps a checkpoint "
        "to resume from)")


def test_a_terminate_signal_interrupts_as_ctrl_c_does():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), interrupt_on_terminate():
        os.kill(os.getpid(), signal.SIGTERM)
        signal.sigtimedwait([], 0.5)  # the handler runs at the next bytecode: wait for nothing meanwhile
    assert signal.getsignal(signal.SIGTERM) is before  # restored after the block


def test_inside_the_block_a_signal_asks_the_run_to_stop_and_after_it_acts_as_before():
    """Not restored, a Ctrl-C after a fit would ask a finished trainer to stop instead of interrupting."""
    numbers = (signal.SIGINT, signal.SIGTERM)
    before = [signal.getsignal(number) for number in numbers]
    asked = []
    with stopping_on_signals(lambda: asked.append(True)):
        for number in numbers:
            os.kill(os.getpid(), number)
            signal.sigtimedwait([], 0.5)  # the handler runs at the next bytecode: wait for nothing meanwhile
    assert asked == [True, True]
    assert [signal.getsignal(number) for number in numbers] == before
