"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates for Training Neural
Networks", section 3.3): a copy of a trainer's network takes `steps` optimizer steps with
the learning rate rising exponentially from `start` to `end`, and the loss of each batch
is recorded. The loss stays flat while the rate is too small to learn, falls once it is
large enough, and rises when it is too large. The rate where the smoothed loss was lowest
is the suggested peak rate of a run with a decaying schedule (Smith's "maximum learning
rate"). On the presets it came out at 0.6-7.4 times their tuned rates, and trained
better than a third or a tenth of it (benchmarks/results/lr-range-20261208.md).

    result = find_lr(trainer, train)  # the trainer's network and optimizer are untouched
    print(result.suggested)

Only the copy trains: the same optimizer (its settings, fresh state), batch size, seed,
shifts and label smoothing as the trainer, the batches its first epochs would draw.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import backend
from ..checks import flag, integer, number
from ..datasets import Dataset, batches, num_batches
from ..evaluation import check_model_fits
from ..io.atomic import atomic_write_text
from ..optim import Schedule
from . import plots
from .callbacks import progress_bar
from .step import TrainingStep
from .trainer import Trainer
from .workers import quiet

DIVERGED = 4.0  # the test stops where the recent loss is this many times its lowest (fastai's bound)
NOISE_IMAGES = 32  # the divergence check averages the losses of this many images at least
START, END, STEPS = 1e-7, 10.0, 100  # the test's defaults: 8 decades, 100 steps (a step raises the rate 1.2 times)
MAX_STEPS = 100_000
MAX_RATIO = 1e300  # end / start at most: the rate's multiplier start/end stays a normal float
DATA_NAME, PLOT_NAME = "lr-range.json", "lr-range.png"  # what `write` writes, beside a run's files


class Rising(Schedule):
    """The rate multiplier of the test: start/end at step 0, rising exponentially to 1 at
    step `steps - 1`."""

    def __init__(self, ratio: float, steps: int) -> None:
        self.ratio, self.steps = ratio, steps

    def __call__(self, step: int) -> float:
        return self.ratio ** (1 - min(step, self.steps - 1) / max(1, self.steps - 1))

    def config(self) -> dict[str, Any]:
        return {"type": "rising", "ratio": self.ratio, "steps": self.steps}


@dataclass(frozen=True)
class LRRange:
    """What the range test measured: each step's rate and batch loss (mean over the
    batch), the loss smoothed; the suggested peak rate, where the smoothed loss was lowest
    (None where no rate made it fall: its lowest came at the first step); whether the test
    stopped early because the loss diverged."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggested: float | None
    diverged: bool

    def to_json(self) -> dict[str, Any]:
        """The fields as JSON-ready data: a loss that is not finite (the diverged end) as None."""
        def finite(values: list[float]) -> list[float | None]:
            return [value if math.isfinite(value) else None for value in values]

        return {"lrs": self.lrs, "losses": finite(self.losses), "smoothed": finite(self.smoothed),
                "suggested": self.suggested, "diverged": self.diverged}

    def write(self, folder: str | Path, title: str = "", plot: bool = True) -> list[Path]:
        """Write lr-range.json (`to_json`) into `folder`, and with `plot` and matplotlib
        lr-range.png (xpcnn.train.plots.lr_range), else remove an earlier test's; the
        paths written. Stopped while drawing (Ctrl-C, an error), it removes both files.
        TypeError for a folder that is no path, a title that is no str or a plot flag
        that is not True or False."""
        if not isinstance(folder, (str, os.PathLike)):
            raise TypeError(f"LRRange.write folder must be a path (str or Path), got {folder!r}")
        if not isinstance(title, str):
            raise TypeError(f"LRRange.write title must be a str, got {title!r}")
        drawn = flag(plot, "LRRange.write plot") and plots.available()
        data, picture = Path(folder) / DATA_NAME, Path(folder) / PLOT_NAME
        atomic_write_text(data, json.dumps(self.to_json(), indent=1) + "\n")
        try:
            if drawn:
                plots.lr_range(self, picture, title)
            else:
                picture.unlink(missing_ok=True)  # an earlier test's plot would contradict this data
        except BaseException:  # Ctrl-C too: the data without its plot, or with an earlier one, is half a test
            data.unlink(missing_ok=True)
            picture.unlink(missing_ok=True)
            raise
        return [data, picture] if drawn else [data]


def find_lr(trainer: Trainer, train: Dataset, *, start: float = START, end: float = END, steps: int = STEPS,
            progress: bool = False) -> LRRange:
    """Run the range test (see xpcnn.train.lr_range) on a copy of `trainer`'s network and
    optimizer with `train`'s batches, from rate `start` to `end` over at most `steps`
    steps (`progress`: a bar on stderr, with tqdm); the trainer is left as it was.
    TypeError or ValueError for a range or step count that cannot be, or images the
    network does not take."""
    start = number(start, "find_lr start", 0.0, math.inf, low_included=False)
    end = number(end, "find_lr end", start, math.inf, low_included=False)
    if end / start >= MAX_RATIO:  # each rate is `end` times a multiplier down to start/end, which would round to 0
        raise ValueError(f"find_lr end must be less than {MAX_RATIO:g} times start ({start:g}), got {end:g}")
    steps = integer(steps, "find_lr steps", 2, MAX_STEPS)
    progress = flag(progress, "find_lr progress")
    if not isinstance(trainer, Trainer):
        raise TypeError(f"find_lr trainer must be a Trainer, got {type(trainer).__name__}")
    check_model_fits(trainer.model, train, "find_lr train")
    step = _copied_step(trainer, start, end, steps)
    model, optimizer = step.model, step.optimizer
    lrs: list[float] = []
    losses = Smoothed(steps, trainer.batch_size)
    bar = progress_bar(steps, "learning-rate range test", "step") if progress else None
    # The overflows on the way to a loss that is not finite are what the test looks for: no warnings.
    with np.errstate(all="ignore"), contextlib.closing(bar) if bar else contextlib.nullcontext():
        for epoch in range(math.ceil(steps / num_batches(len(train), trainer.batch_size))):
            for x, y in batches(train, trainer.batch_size, seed=trainer.seed, epoch=epoch, augment=trainer.augment,
                                backend_name=model.backend, device=model.device, dtype=model.dtype):
                lrs.append(optimizer.current_lr)
                losses.add(float(backend.to_numpy(step.compute(x, y))[0]))
                if bar:
                    bar.update(1)
                if len(lrs) == steps or losses.diverged:
                    return losses.result(lrs)
                step.update()
    return losses.result(lrs)  # not reached: the epochs hold `steps` batches


def _copied_step(trainer: Trainer, start: float, end: float, steps: int) -> TrainingStep:
    """The training step of copies of the trainer's network, loss and optimizer (its
    settings, fresh state), the rate rising from `start` to `end` over `steps` steps."""
    model, optimizer = copy.deepcopy((trainer.model, trainer.optimizer))  # the optimizer keeps the copied model
    optimizer.state, optimizer.steps = {slot: {} for slot in optimizer.slots}, 0
    optimizer.lr, optimizer.schedule = end, Rising(start / end, steps)
    return TrainingStep(model, optimizer, copy.deepcopy(trainer.loss_fn), graphs=False, log=quiet)


class Smoothed:
    """Batch losses and their averages over a few steps (a batch's loss is noisy): while
    the test runs, over the last ones, to see it diverge; once it is done, over those on
    both sides (`result`), which follow the curve without lagging it."""

    def __init__(self, steps: int, batch_size: int = NOISE_IMAGES) -> None:
        self.losses: list[float] = []
        self.half = max(1, steps // 40)  # steps on each side: the rate rises 2.5 times over 5 of 100 steps
        # The divergence check's window: the last 3 steps, or enough small batches for NOISE_IMAGES images
        # (single images' losses run from 0.1 to 5 at one rate: their lowest would look like a minimum).
        self.recent = max(self.half + 1, math.ceil(NOISE_IMAGES / batch_size))
        self._lowest = math.inf
        self.diverged = False  # whether the last loss is not finite, or far above the lowest (see `add`)

    def add(self, loss: float) -> None:
        """Record a batch's loss; `diverged` says whether it is not finite, or the average of
        the last `recent` losses is DIVERGED times the lowest such average so far (none
        before `recent` steps: a partial window's average is a lucky batch or two)."""
        self.losses.append(loss)
        if not math.isfinite(loss):
            self.diverged = True
        elif len(self.losses) >= self.recent:
            average = sum(self.losses[-self.recent:]) / self.recent
            self._lowest = min(self._lowest, average)
            self.diverged = average > DIVERGED * self._lowest

    def result(self, lrs: list[float]) -> LRRange:
        """What the test found at the rates `lrs`, one a loss."""
        h, losses = self.half, self.losses
        windows = [losses[max(0, k - h):k + h + 1] for k in range(len(losses))]
        smoothed = [sum(window) / len(window) for window in windows]
        finite = [k for k, value in enumerate(smoothed) if math.isfinite(value)]
        best = min(finite, key=lambda k: smoothed[k], default=0)
        fell = best > 0  # else no rate made the loss fall below the first steps'
        return LRRange(lrs, losses, smoothed, suggested=lrs[best] if fell else None, diverged=self.diverged)
