"""Training: the loop, its run record and folder, worker threads, callbacks."""

from .trainer import Trainer

__all__ = ["Trainer"]
