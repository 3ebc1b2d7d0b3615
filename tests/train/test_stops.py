from __future__ import annotations

from pathlib import Path

from xpcnn.train import TrainingInterrupted


def test_an_interruption_says_where_it_saved_or_that_it_saved_nothing():
    assert str(TrainingInterrupted("interrupted at epoch 1, batch 3", Path("run/checkpoint.npz"))) == \
        "interrupted at epoch 1, batch 3"
    unsaved = TrainingInterrupted("interrupted at epoch 1, batch 3", None)
    assert unsaved.checkpoint is None and str(unsaved) == (
        "interrupted at epoch 1, batch 3; nothing was saved (no run folder: Trainer(run_dir=...) keeps a checkpoint "
        "to resume from)")
