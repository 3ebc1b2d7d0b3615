"""The `xpcnn` command: it parses arguments, calls the library (a Python user can do the
same with the same functions), prints, and maps errors to exit codes: 0 success, 1 failure
(one line on stderr; --debug shows the traceback), 2 bad usage, 130 interrupted (saved)."""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import backend, machine, presets
from ._version import __version__


class UsageError(Exception):
    """Arguments that parse but do not fit together (exit status 2)."""


_say = functools.partial(print, flush=True)  # progress and results, in order with the progress bar
_note = functools.partial(print, file=sys.stderr, flush=True)  # progress where stdout is for machines


def _checked(convert: Callable[[str], Any], accept: Callable[[Any], bool], expected: str) -> Callable[[str], Any]:
    """An argparse type: `convert`, then refuse values that `accept` rejects."""
    def parse(text: str) -> Any:
        value = convert(text)
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {expected}, got {value}")
        return value

    parse.__name__ = convert.__name__  # argparse says "invalid float value: 'abc'"
    return parse


_positive_int = _checked(int, lambda value: value >= 1, ">= 1")
_positive_float = _checked(float, lambda value: 0 < value < math.inf, "> 0 and finite")
_count = _checked(int, lambda value: value >= 0, ">= 0")
_fraction = _checked(float, lambda value: 0.0 <= value < 1.0, "in [0, 1)")


PRESET_CHOICES = sorted(presets.PRESETS) + sorted(presets.ALIASES)
PRESET_HELP = f"preset: {', '.join(presets.PRESETS)} ({', '.join(f'{a} = {n}' for a, n in presets.ALIASES.items())})"


def _by_preset(field: str) -> str:
    """Each preset's recipe value of `field`, for help texts: "tutorial: 3, lenet: 5"."""
    return ", ".join(f"{name}: {getattr(recipe, field)}" for name, recipe in presets.RECIPES.items())


def _command(commands: Any, name: str, run: Callable[[argparse.Namespace], int], **kwargs: Any) -> Any:
    """The parser of subcommand `name`, which `run` carries out; it also remembers its usage
    line, for errors found after parsing."""
    parser = commands.add_parser(name, **kwargs)
    parser.set_defaults(run=run, usage=parser.format_usage)
    return parser


def _add_backend_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="numpy", choices=backend.BACKENDS, help="array library (default: numpy)")
    parser.add_argument("--device", help="device of the backend, e.g. cpu, cuda:0 (default: the backend's default)")


def _add_data_flags(parser: argparse.ArgumentParser) -> None:
    from .datasets import DATASETS

    parser.add_argument("--dataset", choices=sorted(DATASETS), help="dataset (default: mnist; for evaluate, the one "
                        "the model was trained on)")
    parser.add_argument("--data-dir", help="folder with the IDX files (else $XPCNN_DATA_DIR, then the cache)")
    parser.add_argument("--no-download", action="store_true", help="never download; fall back to the bundled subset")


def _add_train_parser(commands: Any) -> None:
    from .optim import OPTIMIZERS, SCHEDULES

    train = _command(commands, "train", cmd_train, help="train a model and write a run folder", description="Train "
                     "a preset; the run folder gets the checkpoint, metrics.jsonl, summary.json and PNG plots.")
    flag = train.add_argument
    flag("--model", choices=PRESET_CHOICES, help=f"{PRESET_HELP} (default: tutorial)")
    _add_backend_flags(train)
    flag("--dtype", choices=backend.DTYPES, help="(default: float32)")
    flag("--epochs", type=_positive_int, help=f"total epochs ({_by_preset('epochs')})")
    flag("--batch-size", type=_positive_int, help=f"({_by_preset('batch_size')})")
    flag("--optimizer", choices=sorted(OPTIMIZERS), help=f"({_by_preset('optimizer')})")
    flag("--lr", type=_positive_float, help=f"peak learning rate ({_by_preset('lr')})")
    flag("--momentum", type=float, help=f"SGD momentum ({_by_preset('momentum')})")
    flag("--weight-decay", type=float, help="(default: 0)")
    flag("--schedule", choices=sorted(SCHEDULES), help="learning-rate schedule (default: cosine)")
    flag("--warmup", type=_count, help="warm-up steps of the cosine schedule (default: 0)")
    flag("--augment", type=_checked(int, lambda value: 0 <= value <= 8, "in [0, 8]"),
         help=f"shift training images by up to N pixels ({_by_preset('augment')})")
    flag("--seed", type=_count, help="seed of weights, batch order and dropout (default: 0)")
    _add_data_flags(train)
    flag("--val-split", type=_fraction, help="fraction of the training set held out for validation (default: 0)")
    flag("--limit", type=_positive_int, help="use only this many training (and test) images, for quick runs")
    flag("--out", type=Path, help="run folder (default: runs/<model>-<time>)")
    flag("--resume", action="store_true", help="continue the run in --out with its saved settings and data; "
         "--epochs beyond the saved total extends it")
    flag("--checkpoint-every", type=_positive_int, help="also checkpoint every K optimizer steps")
    flag("--no-progress", action="store_true", help="no progress bar")
    flag("--detect-anomaly", action="store_true", help="check every layer for NaN/Inf and name the first (slower)")
    flag("--no-plots", action="store_true", help="do not draw PNG plots")


def _add_use_parsers(commands: Any) -> None:
    evaluate = _command(commands, "evaluate", cmd_evaluate, help="test accuracy of a checkpoint")
    evaluate.add_argument("checkpoint", type=Path)
    _add_backend_flags(evaluate)
    _add_data_flags(evaluate)
    evaluate.add_argument("--batch-size", type=_positive_int, default=1000)
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON")

    predict = _command(commands, "predict", cmd_predict, help="classify images (PNG/JPEG with Pillow, or .npy)")
    predict.add_argument("checkpoint", type=Path)
    predict.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    _add_backend_flags(predict)
    predict.add_argument("--invert", action="store_true", help="images are dark ink on light paper")
    predict.add_argument("--top", type=_positive_int, default=1, help="show the K most likely classes")


def _add_parity_parser(commands: Any) -> None:
    from .optim import OPTIMIZERS

    parity = _command(commands, "parity", cmd_parity, help="compare backends layer by layer on the same weights and "
                      "batch", description="Exit status 0 when every judged difference is within tolerance, 1 when "
                      "not, 2 on bad usage or a backend not usable here.")
    flag = parity.add_argument
    flag("--backends", default="numpy,torch", help="comma-separated, first is the reference; NAME or NAME:DEVICE, "
         "e.g. numpy,cupy or numpy,torch:cuda (default: numpy,torch)")
    flag("--model", default="tutorial", help=f"{PRESET_HELP}, or a checkpoint file (default: tutorial)")
    flag("--dtype", default="float64", choices=backend.DTYPES)
    flag("--batch-size", type=_positive_int, default=32, help="bundled MNIST images to use (default: 32)")
    flag("--steps", type=_count, default=0, help="also train K steps on each backend, follow the drift (default: 0)")
    flag("--optimizer", default="sgd", choices=sorted(OPTIMIZERS), help="optimizer of --steps (default: sgd)")
    flag("--seed", type=int, default=0, help="seed of a preset's weights (default: 0)")
    flag("--json", action="store_true", help="print the report as JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xpcnn", description="Train and use CNNs written once for NumPy, CuPy, "
                                     "PyTorch and array-api-strict.")
    parser.add_argument("--version", action="version", version=f"xpcnn {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train_parser(commands)
    _add_use_parsers(commands)
    _add_parity_parser(commands)
    _command(commands, "info", cmd_info, help="version, usable backends, devices, BLAS")
    download = _command(commands, "download", cmd_download, help="download and verify a dataset into the cache")
    download.add_argument("dataset", nargs="?", default="mnist", choices=["mnist", "fashion-mnist"])
    download.add_argument("--data-dir", default=None, help="download into this folder instead of the cache")
    return parser


RESUMED = ("model", "dtype", "seed", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule",
           "warmup", "augment", "dataset", "data_dir", "limit", "val_split")  # must agree with a resumed run


def _recipe(args: argparse.Namespace) -> presets.Recipe:
    """The preset's recipe, changed by the flags given."""
    if args.val_split and args.limit and args.limit < 10:
        raise UsageError("--limit is too small to hold out a validation split")
    return presets.recipe(args.model or "tutorial").replace(
        epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, schedule=args.schedule, warmup=args.warmup,
        augment=args.augment)


def _start(args: argparse.Namespace, recipe: presets.Recipe, options: dict[str, Any]) -> tuple[Any, Any]:
    from .training import start_run

    return start_run(args.model or "tutorial", recipe, dataset=args.dataset or "mnist", data_dir=args.data_dir,
                     download=not args.no_download, limit=args.limit, seed=args.seed or 0,
                     val_split=args.val_split or 0.0, backend_name=args.backend, device=args.device,
                     dtype=args.dtype or "float32", log=_say, **options)


def _resume(args: argparse.Namespace, checkpoint: Path, options: dict[str, Any]) -> tuple[Any, Any]:
    from .training import SettingsConflict, resume_run

    given = {key: getattr(args, key) for key in RESUMED if getattr(args, key) is not None}
    try:
        trainer, data = resume_run(checkpoint, args.backend, args.device, epochs=args.epochs, expected=given,
                                   log=_say, **options)
    except SettingsConflict as exc:
        flag = "--" + exc.key.replace("_", "-")
        raise UsageError(f"{flag} {exc.given} differs from the run's saved {exc.saved}: --resume continues the run "
                         "as it was started; leave the flag out, or start a new --out") from None
    _say(f"resuming {checkpoint.parent} at epoch {trainer.state.epoch + 1}, batch {trainer.state.batch}")
    return trainer, data


def cmd_train(args: argparse.Namespace) -> int:
    from .run_folder import RunFolder, RunFolderError
    from .training import TrainingInterrupted

    recipe = None if args.resume else _recipe(args)  # checked before anything is made
    try:  # made now, so that a folder that cannot be one fails before any training
        folder = RunFolder.open(args.out, resume=args.resume, name=presets.canonical(args.model or "tutorial"))
    except RunFolderError as exc:
        raise UsageError(f"--out: {exc} (--resume continues a saved run)") from None
    out = folder.path
    options = {"run_dir": out, "checkpoint_every": args.checkpoint_every, "progress": not args.no_progress,
               "anomaly": args.detect_anomaly}
    trainer, (train_set, val_set, test_set) = (_resume(args, folder.checkpoint, options) if args.resume
                                               else _start(args, recipe, options))
    _say(f"training {trainer.describe()}; run folder {out}")
    try:
        trainer.fit(train_set, trainer.epochs, val_set)
    except TrainingInterrupted as stop:
        _say(f"{stop}; checkpoint saved to {stop.checkpoint}; continue with: xpcnn train --out {out} --resume")
        return 130
    result = trainer.finish(test_set, plots=not args.no_plots)
    _say(f"test accuracy {result['accuracy']:.2%} (loss {result['loss']:.4f}) on {len(test_set):,} images; "
         f"training took {sum(row['seconds'] for row in trainer.history):.1f} s")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, args.dataset, args.data_dir, download=not args.no_download,
                                 backend_name=args.backend, device=args.device, batch_size=args.batch_size,
                                 log=_note if args.json else _say)
    if args.json:
        print(json.dumps(result))
    else:
        _say(f"data: {result['data']}\ntest accuracy {result['accuracy']:.2%} (loss {result['loss']:.4f}) on "
             f"{result['images']:,} images")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .evaluation import classify_files

    results = classify_files(args.checkpoint, args.images, invert=args.invert, top=args.top,
                             backend_name=args.backend, device=args.device)
    for path, best in zip(args.images, results):
        print(f"{path}: " + ", ".join(f"{name} ({probability:.1%})" for name, probability in best))
    return 0


def cmd_parity(args: argparse.Namespace) -> int:
    from . import parity

    try:
        targets = parity.usable_targets(args.backends)
    except ValueError as exc:
        raise UsageError(f"--backends: {exc}") from None
    try:
        model = parity.model_from(args.model, args.seed)
    except LookupError as exc:
        raise UsageError(f"--model {exc}") from None
    result = parity.check(model, targets, args.dtype, batch_size=args.batch_size, steps=args.steps,
                          optimizer=args.optimizer, seed=args.seed, name=args.model)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.to_text())
    return 0 if result.passed else 1


def cmd_info(args: argparse.Namespace) -> int:
    print("\n".join(machine.report()))
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from .datasets import download

    for path, downloaded in download(args.dataset, args.data_dir, log=_say):
        _say(f"{path}: {'downloaded' if downloaded else 'present'} and verified")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (UsageError, presets.SettingsError) as exc:  # settings that do not fit: a usage error
        if args.debug:
            raise
        print(args.usage(), end="", file=sys.stderr)
        print(f"xpcnn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xpcnn: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line for people; --debug for the traceback
        if args.debug:
            raise
        print(f"xpcnn {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
