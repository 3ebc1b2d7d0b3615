"""The `xpcnn` command: each subcommand calls the library (a Python user can do the same
with the same functions) and prints; main maps errors to exit codes: 0 success, 1 failure
(one line on stderr; --debug shows the traceback), 2 bad usage, 130 interrupted (saved).
The arguments each command takes are declared in arguments.py.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from .. import backend, presets
from ..datasets.sources import escaped
from ..diagnostics import machine
from ..metrics import per_class_table
from ..train.workers import quiet
from .arguments import build_parser, continue_command, parse


class UsageError(Exception):
    """Arguments that parse but do not fit together (exit status 2)."""


def _say(message: str) -> None:
    """Progress and notes, on the stderr of the moment (a caller's redirection too); results go to stdout."""
    print(message, file=sys.stderr, flush=True)


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
    state, say = trainer.state, options["log"]
    if complete(trainer):
        done = f"{trainer.epochs} epoch{'s' * (trainer.epochs != 1)}"
        ended = f"stopped after epoch {state.epoch}: {state.stopped}" if state.stopped else done
        say(f"the run in {checkpoint.parent} is complete ({ended}): evaluating it again on {trainer.model.backend}")
    else:
        say(f"resuming {checkpoint.parent} at epoch {state.epoch + 1}, batch {state.batch}")
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
    say = _say if comm.is_root else quiet  # the first process reports for all
    recipe = None if args.resume else _recipe(args)  # checked before anything is made
    folder = _open_folder(args, comm)
    out = folder.path
    options = {"run_dir": folder, "checkpoint_every": args.checkpoint_every, "progress": not args.no_progress,
               "anomaly": args.detect_anomaly, "comm": comm, "log": say,
               "workers": args.workers,  # None: Trainer chooses (machine.default_workers)
               "cuda_graphs": args.cuda_graphs}  # None: where the backend records them unasked
    if comm.size > 1:
        say(f"data-parallel over {comm.size} processes ({comm.kind}): each takes its share of every batch")
    trainer = None
    try:
        trainer, (train_set, val_set, test_set) = distributed.together(
            comm, lambda: _resume(args, folder.checkpoint, options) if args.resume else _start(args, recipe, options))
        distributed.check_same(comm, "settings", {"resume": args.resume, "epochs": trainer.epochs})  # else a hang
        if not record.complete(trainer):
            say(f"training {trainer.describe()}; run folder {out}")
            trainer.fit(train_set, trainer.epochs, val_set)
        result = trainer.finish(test_set)
    except TrainingInterrupted as stop:
        return _continue_line(say, f"{stop}; checkpoint saved to {stop.checkpoint}", args, out, comm)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt) and trainer is not None and folder.checkpoint.exists():
            # a Ctrl-C outside the steps (between the fit and its test, say): the last checkpoint continues
            code = _continue_line(say, f"interrupted; the run continues from its checkpoint {folder.checkpoint}",
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


def _continue_line(say: Any, what: str, args: argparse.Namespace, out: Path, comm: Any) -> int:
    """Say `what` stopped the run and the command that continues it; the exit status."""
    anywhere = " (under mpirun with any number of processes, or without)" if comm.size > 1 else ""
    say(f"{what}; continue with: {continue_command(args, out)}{anywhere}")
    return 130


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, args.dataset, args.data_dir, download=not args.no_download,
                                 backend_name=args.backend, device=args.device, batch_size=args.batch_size,
                                 full_test_set=args.full_test_set, log=_say,
                                 on_bad="skip" if args.skip_bad_images else None)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"test accuracy {result['accuracy']:.2%} (loss {result['loss']:.4f}) on {result['images']:,} "
              f"image{'s' * (result['images'] != 1)} of the {result['data']}")
        print(per_class_table(result))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from ..evaluation import classify_files

    results = classify_files(args.checkpoint, args.images, invert=args.invert, top=args.top,
                             backend_name=args.backend, device=args.device)
    for result in results:  # one line each: the classes on stdout, or the error on stderr (with --json: on stdout)
        if args.json:
            print(json.dumps(result.to_dict()))
        elif result.error is None:
            print(result.to_line())
        else:
            print(f"xpcnn predict: error: {result.to_line()}", file=sys.stderr)
    return 1 if any(result.error for result in results) else 0


def cmd_parity(args: argparse.Namespace) -> int:
    from ..diagnostics import parity

    try:
        targets = parity.usable_targets(args.backends)
    except ValueError as exc:
        raise UsageError(f"--backends: {exc}") from None
    try:
        model = parity.model_from(args.model, args.seed, args.width)
    except LookupError as exc:
        raise UsageError(f"--model {exc}") from None
    result = parity.check(model, targets, args.dtype, batch_size=args.batch_size, steps=args.steps,
                          optimizer=args.optimizer, seed=args.seed, name=args.model)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.to_text())
    return 0 if result.passed else 1


def cmd_export(args: argparse.Namespace) -> int:
    from ..io.onnx import export_checkpoint

    path, shape = export_checkpoint(args.checkpoint, args.output, softmax=args.softmax, opset=args.opset)
    print(f"{path}: ONNX opset {args.opset}; input: raw pixels in [0, 1], (batch, {', '.join(map(str, shape))}) "
          f"float32; output: {'probabilities' if args.softmax else 'logits'} (batch, classes)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    print("\n".join(machine.report()))
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from ..datasets import download

    for path, downloaded in download(args.dataset, args.data_dir, log=_say):
        print(f"{path}: {'downloaded' if downloaded else 'present'} and verified")
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "parity": cmd_parity,
            "export": cmd_export, "info": cmd_info, "download": cmd_download}


def main(argv: list[str] | None = None) -> int:
    from ..distributed import launched_rank
    from ..train.stops import interrupt_on_terminate

    for stream in (sys.stdout, sys.stderr):  # a file name that is no UTF-8 is shown escaped, not an error
        getattr(stream, "reconfigure", lambda **_: None)(errors="backslashreplace")
    with warnings.catch_warnings(), interrupt_on_terminate():  # SIGTERM (a batch scheduler's) ends it as Ctrl-C does
        warnings.filterwarnings("ignore", module=r"PIL\.")  # Pillow's notes of what it recovered: we say it in one line
        warnings.filterwarnings("ignore", ".* encountered in ", RuntimeWarning)  # NumPy's overflow notes: one line
        parser = build_parser()
        if launched_rank() == 0:
            return _main(parse(parser, argv), _say)
        # The other processes of a data-parallel job: the first prints usage, errors and results for all,
        # and its exit status is the job's; these end with 0 (at a non-zero one, mpirun kills the first
        # before it has said why). One failing alone says so as it ends the job (failing_alone_ends_all).
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                args = parse(parser, argv)
        except SystemExit:  # usage error or --help, which the first process prints
            return 0
        with open(os.devnull, "w") as nowhere, contextlib.redirect_stdout(nowhere):
            _main(args, quiet)
        return 0


def _main(args: argparse.Namespace, report: Any) -> int:
    """Run the parsed command; errors become one line through `report` and an exit status."""
    from ..distributed import end_job

    try:
        if hasattr(args, "backend"):  # before any work: no data is loaded for a backend that cannot run
            backend.require(args.backend, args.device)
        return COMMANDS[args.command](args)
    except (UsageError, presets.SettingsError, backend.BackendUnavailable) as exc:  # flags that do not fit
        if args.debug:
            raise
        flag = f"--{exc.field.replace('_', '-')}: {exc.message}" if isinstance(exc, presets.SettingsError) else exc
        report(f"{args.usage()}xpcnn {args.command}: error: {flag}")
        return 2
    except BrokenPipeError:  # the reader of stdout left (| head): nothing more to say to it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so exiting flushes into nothing
        return 1
    except KeyboardInterrupt:  # outside training, which stops by itself (and saves) on Ctrl-C
        report("xpcnn: interrupted")  # the first process says it for a data-parallel job
        end_job(130)  # the other processes of a data-parallel job would wait for this one
        return 130
    except Exception as exc:  # one line for people; --debug for the traceback
        if args.debug:
            raise
        said = escaped(str(exc) or ("out of memory" if isinstance(exc, MemoryError) else type(exc).__name__))
        report(f"xpcnn {args.command}: error: {said}")
        return 1

