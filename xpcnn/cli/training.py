"""The `xpcnn train` command: a new run from a preset and the flags given, or a run
resumed from its folder; the library's start_run and resume_run do the work."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .. import presets
from ..diagnostics import machine
from ..train.workers import quiet
from .arguments import continue_command
from .output import UsageError, say


def _recipe(args: argparse.Namespace) -> presets.Recipe:
    """The preset's recipe, changed by the flags given."""
    return presets.recipe(_model(args)).replace(
        epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
        momentum=args.momentum, nesterov=args.nesterov, weight_decay=args.weight_decay, schedule=args.schedule,
        warmup=args.warmup, augment=args.augment, pad=args.pad, flip=args.flip, label_smoothing=args.label_smoothing)


def _start(args: argparse.Namespace, recipe: presets.Recipe, options: dict[str, Any]) -> tuple[Any, Any]:
    from ..train import start_run

    return start_run(_model(args), recipe, dataset=args.dataset or "mnist", data_dir=args.data_dir,
                     download=not args.no_download, allow_bundled=args.data_dir is None and args.dataset is None,
                     limit=args.limit, seed=args.seed or 0, val_split=args.val_split or 0.0,
                     early_stopping=args.early_stopping, keep_best=bool(args.keep_best), backend_name=args.backend,
                     device=args.device, dtype=args.dtype or "float32", folder_options=_folder_options(args),
                     width=args.width or 1.0, **options)


def _model(args: argparse.Namespace) -> str:
    """The preset asked for, else the dataset's default (train.default_preset)."""
    from ..train import default_preset

    return args.model or default_preset(args.dataset or "mnist")


def _folder_options(args: argparse.Namespace) -> dict[str, Any]:
    """How to read a folder of pictures (--dataset images); its flags are refused elsewhere."""
    flags = {"image_size": "--image-size", "channels": "--channels", "test_split": "--test-split",
             "on_bad": "--skip-bad-images", "pictures": "--digits"}
    given = {"image_size": args.image_size, "channels": args.channels, "test_split": args.test_split,
             "on_bad": "skip" if args.skip_bad_images else None, "pictures": "digits" if args.digits else None}
    given = {key: value for key, value in given.items() if value is not None}
    if args.dataset != "images":
        if given:
            raise UsageError(f"{flags[next(iter(given))]} applies to --dataset images only")
        return {}
    if args.data_dir is None:
        raise UsageError("--dataset images reads the folder of pictures --data-dir: give it")
    if args.digits and args.channels == 3:
        raise UsageError("--channels: pictures of digits (--digits) are grey: 1, or leave it out")
    return {**given, "progress": not args.no_progress}


def _resume(args: argparse.Namespace, checkpoint: Path, options: dict[str, Any]) -> tuple[Any, Any]:
    from ..train import resume_run
    from ..train.record import KEPT_ON_RESUME, complete

    given = {key: getattr(args, key) for key in KEPT_ON_RESUME if getattr(args, key) is not None}
    unset = {key for key in ("workers", "cuda_graphs") if options[key] is None}  # not given: the run's own
    options = {key: value for key, value in options.items() if key not in unset}
    trainer, data = resume_run(checkpoint, args.backend, args.device, epochs=args.epochs, expected=given,
                               width=args.width, **options)
    state, report = trainer.state, options["log"]
    if complete(trainer):
        done = f"{trainer.epochs} epoch{'s' * (trainer.epochs != 1)}"
        ended = f"stopped after epoch {state.epoch}: {state.stopped}" if state.stopped else done
        report(f"the run in {checkpoint.parent} is complete ({ended}): evaluating it again on {trainer.model.backend}")
    else:
        report(f"resuming {checkpoint.parent} at epoch {state.epoch + 1}, batch {state.batch}")
    return trainer, data


def _open_folder(args: argparse.Namespace, comm: Any) -> Any:
    """The run folder, made now (by the first process) so that a path that cannot be one
    fails before any training."""
    from ..distributed import together
    from ..train.run_folder import RunFolder, RunFolderError

    def make() -> RunFolder:
        try:
            return RunFolder.open(args.out, resume=args.resume, name=presets.canonical(_model(args)))
        except RunFolderError as exc:
            raise UsageError(f"--out: {exc}") from None

    made = together(comm, make if comm.is_root else lambda: None)  # it knows what it made, to remove it unused
    path = comm.broadcast(None if made is None else made.path)
    folder = made if made is not None else RunFolder(path)
    folder.with_plots = not args.no_plots
    return folder


def cmd_train(args: argparse.Namespace) -> int:
    from .. import distributed
    from ..train import TrainingInterrupted, record

    comm = distributed.world()
    machine.keep_freed_memory()  # this process only trains: faster steps (see there)
    report = say if comm.is_root else quiet  # the first process reports for all
    recipe = None if args.resume else _recipe(args)  # checked before anything is made
    if args.find_lr:
        _check_find_lr(args, comm.size)
    folder = _open_folder(args, comm)
    if args.find_lr:
        return _find_lr(args, recipe, folder)
    out = folder.path
    options = {"run_dir": folder, "checkpoint_every": args.checkpoint_every, "progress": not args.no_progress,
               "anomaly": args.detect_anomaly, "comm": comm, "log": report,
               "workers": args.workers,  # None: Trainer chooses (machine.default_workers)
               "cuda_graphs": args.cuda_graphs}  # None: where the backend records them unasked
    if comm.size > 1:
        report(f"data-parallel over {comm.size} processes ({comm.kind}): each takes its share of every batch")
    trainer = None
    try:
        trainer, (train_set, val_set, test_set) = distributed.together(
            comm, lambda: _resume(args, folder.checkpoint, options) if args.resume else _start(args, recipe, options))
        distributed.check_same(comm, "settings", {"resume": args.resume, "epochs": trainer.epochs})  # else a hang
        if not record.complete(trainer):
            report(f"training {trainer.describe()}; run folder {out}")
            trainer.fit(train_set, trainer.epochs, val_set)
        result = trainer.finish(test_set)
    except TrainingInterrupted as stop:
        return _continue_line(report, f"{stop}; checkpoint saved to {stop.checkpoint}", args, out, comm)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt) and trainer is not None and folder.checkpoint.exists():
            # a Ctrl-C outside the steps (between the fit and its test, say): the last checkpoint continues
            code = _continue_line(report, f"interrupted; the run continues from its checkpoint {folder.checkpoint}",
                                  args, out, comm)
            distributed.end_job(code)  # the other processes of a data-parallel job would wait for this one
            return code
        if comm.is_root:
            folder.remove_if_empty()  # a run that never saved leaves no folder behind
        raise
    sample = test_set.selection is not None and test_set.selection.limit is not None  # main prints the first's
    print(f"test accuracy {result['accuracy']:.2%} (loss {result['loss']:.4f}) on {len(test_set):,} "
          f"{'test ' * sample}image{'s' * (len(test_set) != 1)}{' drawn as the run limits them' * sample}; "
          f"training took {sum(row['seconds'] for row in trainer.history):.1f} s")
    return 0


def _check_find_lr(args: argparse.Namespace, processes: int) -> None:
    """Refuse what --find-lr cannot take, naming what was given."""
    from ..train.lr_range import END, START

    if args.resume or processes > 1:
        raise UsageError("--find-lr tests a new run's rates in one process: not "
                         f"{'with --resume' if args.resume else f'under mpirun ({processes} processes)'}")
    if args.lr is not None:
        raise UsageError(f"--lr: --find-lr tries the rates from {START:g} to {END:g} and suggests one: leave --lr out")


def _find_lr(args: argparse.Namespace, recipe: presets.Recipe, folder: Any) -> int:
    """The learning-rate range test of the run the flags describe, written into its folder."""
    from ..extras import install_hint
    from ..train import find_lr, plots
    from ..train.lr_range import END, START, STEPS

    try:
        trainer, (train_set, _, _) = _start(args, recipe, {"progress": False, "log": say, "workers": 1})
        say(f"learning-rate range test of {trainer.name} on {trainer.model.backend}, "
            f"{trainer.optimizer.config()['type']} with batch {trainer.batch_size}: up to {STEPS} steps, the rate "
            f"rising from {START:g} to {END:g}")
        found = find_lr(trainer, train_set, progress=not args.no_progress)
        written = found.write(folder.path, f"{trainer.name} on {train_set.spec.name}: batch {trainer.batch_size}",
                              plot=not args.no_plots)
    except BaseException:
        folder.remove_if_empty()  # a test that wrote nothing leaves no folder behind
        raise
    say(f"wrote {', '.join(map(str, written))}")
    if not args.no_plots and not plots.available():  # as a run's plots are: said, not silently left out
        say(f"plot skipped: matplotlib is not installed ({install_hint('plot')})")
    steps = f"{len(found.lrs)} steps from {found.lrs[0]:.2g} to {found.lrs[-1]:.2g}" + ", where the loss diverged" \
        * found.diverged
    if found.suggested is None:
        print(f"no rate to suggest: the loss fell at no rate of the test ({steps})")
    else:
        print(f"suggested --lr {found.suggested:.2g}, where the smoothed loss was lowest ({steps})")
    return 0


def _continue_line(report: Any, what: str, args: argparse.Namespace, out: Path, comm: Any) -> int:
    """Say `what` stopped the run and the command that continues it; the exit status."""
    anywhere = " (under mpirun with any number of processes, or without)" if comm.size > 1 else ""
    report(f"{what}; continue with: {continue_command(args, out)}{anywhere}")
    return 130
