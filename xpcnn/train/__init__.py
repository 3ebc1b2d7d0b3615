"""Training: the loop (Trainer), its callbacks, how each layer learns (LayerStats), the
learning-rate range test (find_lr), the run record and folder it keeps, worker threads,
and what `xpcnn train` starts and continues (start_run, resume_run)."""

from .callbacks import (
    BestCheckpoint,
    Callback,
    EarlyStopping,
    MetricsLog,
    PeriodicCheckpoints,
    ProgressBar,
    RunSummary,
)
from .layer_stats import LayerStats
from .lr_range import LRRange, find_lr
from .record import SettingsConflict
from .run_folder import RunFolder, RunFolderError
from .runs import default_preset, resume_run, start_run
from .stops import TrainingDiverged, TrainingInterrupted
from .trainer import Trainer

__all__ = [
    "Trainer", "Callback", "EarlyStopping", "BestCheckpoint", "ProgressBar", "MetricsLog", "PeriodicCheckpoints",
    "RunSummary", "RunFolder", "RunFolderError", "SettingsConflict", "TrainingDiverged", "TrainingInterrupted",
    "start_run", "resume_run", "default_preset", "LayerStats", "find_lr", "LRRange",
]
