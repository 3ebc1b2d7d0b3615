from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from xpcnn.train import TrainingInterrupted
from xpcnn.train.stops import interrupt_on_terminate


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
