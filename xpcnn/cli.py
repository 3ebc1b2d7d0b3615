"""The `xpcnn` command: train, evaluate, predict, parity, info, download.

It parses arguments, calls the library, prints, and maps errors to exit codes; anything
it does, a Python user can do with the same functions. Exit status: 0 success, 1 failure
(one line on stderr; --debug shows the traceback), 2 bad usage, 130 interrupted (after
saving a checkpoint).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import backend, machine, presets
from ._version import __version__


class UsageError(Exception):
    """Arguments that parse but do not fit together (exit status 2)."""


def _say(message: str) -> None:
    print(message, flush=True)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


# -- the parser ------------------------------------------------------------------------

PRESET_CHOICES = sorted(presets.PRESETS) + sorted(presets.ALIASES)
PRESET_HELP = f"preset: {', '.join(presets.PRESETS)} ({', '.join(f'{a} = {n}' for a, n in presets.ALIASES.items())})"


def _by_preset(field: str) -> str:
    """Each preset's recipe value of `field`, for help texts: "tutorial: 3, lenet: 5"."""
    return ", ".join(f"{name}: {getattr(recipe, field)}" for name, recipe in presets.RECIPES.items())


def _add_backend_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="numpy", choices=backend.BACKENDS, help="array library to run on (default: numpy)")
    parser.add_argument("--device", default=None, help="device of the backend, e.g. cpu, cuda:0 (default: the backend's default)")


def _add_data_flags(parser: argparse.ArgumentParser) -> None:
    from .datasets import DATASETS

    parser.add_argument("--dataset", default="mnist", choices=sorted(DATASETS), help="dataset (default: mnist)")
    parser.add_argument("--data-dir", default=None, help="folder with the IDX files (else $XPCNN_DATA_DIR, then the cache)")
    parser.add_argument("--no-download", action="store_true", help="never download; fall back to the bundled MNIST subset")


def _add_train_parser(commands: Any) -> None:
    from .optim import OPTIMIZERS, SCHEDULES

    train = commands.add_parser("train", help="train a model and write a run folder", description="Train a preset on MNIST or Fashion-MNIST. Writes the checkpoint, metrics.jsonl, summary.json and (with matplotlib) plots into the run folder.")
    train.add_argument("--model", default="tutorial", choices=PRESET_CHOICES, help=f"{PRESET_HELP} (default: tutorial)")
    _add_backend_flags(train)
    train.add_argument("--dtype", default="float32", choices=backend.DTYPES)
    train.add_argument("--epochs", type=_positive_int, help=f"total epochs ({_by_preset('epochs')})")
    train.add_argument("--batch-size", type=_positive_int, help=f"({_by_preset('batch_size')})")
    train.add_argument("--optimizer", choices=sorted(OPTIMIZERS), help=f"({_by_preset('optimizer')})")
    train.add_argument("--lr", type=_positive_float, help=f"peak learning rate ({_by_preset('lr')})")
    train.add_argument("--momentum", type=float, help=f"SGD momentum ({_by_preset('momentum')})")
    train.add_argument("--weight-decay", type=float, help="(default: 0)")
    train.add_argument("--schedule", choices=sorted(SCHEDULES), help="learning-rate schedule (default: cosine)")
    train.add_argument("--warmup", type=int, help="warm-up steps of the cosine schedule (default: 0)")
    train.add_argument("--augment", type=int, help=f"shift training images randomly by up to N pixels ({_by_preset('augment')})")
    train.add_argument("--seed", type=int, default=0, help="seed of weights, batch order and dropout (default: 0)")
    _add_data_flags(train)
    train.add_argument("--val-split", type=_fraction, default=0.0, help="fraction of the training set held out for validation")
    train.add_argument("--limit", type=_positive_int, help="use only this many training (and test) images, for quick runs")
    train.add_argument("--out", type=Path, help="run folder (default: runs/<model>-<time>)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    train.add_argument("--checkpoint-every", type=_positive_int, help="also checkpoint every K optimizer steps")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--detect-anomaly", action="store_true", help="check every layer for NaN/Inf and name the first (slower)")
    train.add_argument("--no-plots", action="store_true", help="do not draw PNG plots")


def _add_use_parsers(commands: Any) -> None:
    evaluate = commands.add_parser("evaluate", help="test accuracy of a checkpoint")
    evaluate.add_argument("checkpoint", type=Path)
    _add_backend_flags(evaluate)
    _add_data_flags(evaluate)
    evaluate.add_argument("--batch-size", type=_positive_int, default=1000)
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON")

    predict = commands.add_parser("predict", help="classify images (PNG/JPEG with Pillow, or .npy)")
    predict.add_argument("checkpoint", type=Path)
    predict.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    _add_backend_flags(predict)
    predict.add_argument("--invert", action="store_true", help="images are dark ink on light paper")
    predict.add_argument("--top", type=_positive_int, default=1, help="show the K most likely classes")


def _add_parity_parser(commands: Any) -> None:
    from .optim import OPTIMIZERS

    parity = commands.add_parser("parity", help="compare backends layer by layer on the same weights and batch",
                                 description="Exit status 0 when every judged difference is within tolerance, 1 when not, 2 on bad usage or a backend not usable here.")
    parity.add_argument("--backends", default="numpy,torch", help="comma-separated, first is the reference; NAME or NAME:DEVICE, e.g. numpy,cupy or numpy,torch:cuda (default: numpy,torch)")
    parity.add_argument("--model", default="tutorial", help=f"{PRESET_HELP}, or a checkpoint file (default: tutorial)")
    parity.add_argument("--dtype", default="float64", choices=backend.DTYPES)
    parity.add_argument("--batch-size", type=_positive_int, default=32, help="images of the bundled MNIST subset to use (default: 32)")
    parity.add_argument("--steps", type=int, default=0, help="also train K steps on each backend and follow the drift (default: 0)")
    parity.add_argument("--optimizer", default="sgd", choices=sorted(OPTIMIZERS), help="optimizer of --steps (default: sgd)")
    parity.add_argument("--seed", type=int, default=0, help="seed of a preset's weights (default: 0)")
    parity.add_argument("--json", action="store_true", help="print the report as JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xpcnn", description="Train and use CNNs written once for NumPy, CuPy, PyTorch and array-api-strict.")
    parser.add_argument("--version", action="version", version=f"xpcnn {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train_parser(commands)
    _add_use_parsers(commands)
    _add_parity_parser(commands)
    commands.add_parser("info", help="version, usable backends, devices, BLAS")
    download = commands.add_parser("download", help="download and verify a dataset into the cache")
    download.add_argument("dataset", nargs="?", default="mnist", choices=["mnist", "fashion-mnist"])
    download.add_argument("--data-dir", default=None, help="download into this folder instead of the cache")
    return parser


# -- train -----------------------------------------------------------------------------


def _recipe(args: argparse.Namespace) -> presets.Recipe:
    """The preset's recipe with the flags given on the command line."""
    recipe = presets.recipe(args.model).replace(
        epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr, momentum=args.momentum,
        weight_decay=args.weight_decay, schedule=args.schedule, warmup=args.warmup, augment=args.augment)
    if recipe.optimizer != "sgd":
        if args.momentum is not None:
            raise UsageError("--momentum applies to --optimizer sgd only")
        recipe = recipe.replace(momentum=0.0)
    if args.val_split and args.limit and args.limit < 10:
        raise UsageError("--limit is too small to hold out a validation split")
    return recipe


def _new_trainer(args: argparse.Namespace, recipe: presets.Recipe, train_size: int, options: dict[str, Any]) -> Any:
    from .datasets import num_batches
    from .training import Trainer

    name = presets.canonical(args.model)
    model = presets.build(name, args.seed).to(args.backend, args.device, args.dtype)
    steps_per_epoch = num_batches(train_size, recipe.batch_size)
    if recipe.schedule == "cosine" and recipe.warmup >= recipe.total_steps(steps_per_epoch):
        raise UsageError(f"--warmup {recipe.warmup} must be below the total number of steps ({recipe.total_steps(steps_per_epoch)})")
    return Trainer(model, recipe.build_optimizer(model, steps_per_epoch), batch_size=recipe.batch_size, seed=args.seed,
                   augment=recipe.augment, name=name, **options)


def cmd_train(args: argparse.Namespace) -> int:
    from .datasets import load_dataset
    from .run_folder import RunFolder
    from .training import Trainer, TrainingInterrupted

    out = args.out or Path("runs") / f"{presets.canonical(args.model)}-{time.strftime('%Y%m%d-%H%M%S')}"
    checkpoint = RunFolder(out).checkpoint
    if args.resume != checkpoint.exists():
        raise UsageError(f"--resume: no checkpoint in {out}" if args.resume else
                         f"{out} already holds a checkpoint; pass --resume to continue it, or choose another --out")
    recipe = _recipe(args)
    loaded = load_dataset(args.dataset, args.data_dir, download=not args.no_download, log=_say)
    _say(f"data: {loaded.source}")
    train_set, test_set = loaded.train.sample(args.limit, args.seed), loaded.test.sample(args.limit, args.seed + 1)
    val_set = None
    if args.val_split:
        train_set, val_set = train_set.split(args.val_split, args.seed)
    options = {"run_dir": out, "checkpoint_every": args.checkpoint_every, "progress": not args.no_progress,
               "log": _say, "anomaly": args.detect_anomaly}
    if args.resume:
        trainer = Trainer.resume(checkpoint, args.backend, args.device, **options)
        epochs = args.epochs or trainer.epochs
        _say(f"resuming {out} at epoch {trainer.state.epoch + 1}, batch {trainer.state.batch}")
    else:
        trainer, epochs = _new_trainer(args, recipe, len(train_set), options), recipe.epochs
    model, settings = trainer.model, trainer.settings()
    _say(f"training {trainer.name} ({model.num_params():,} parameters) on {model.backend} ({model.device}, {model.dtype}) "
         f"for {epochs} epoch{'s' if epochs != 1 else ''}, {settings['optimizer']} lr {settings['lr']:g}, "
         f"batch {settings['batch_size']}; run folder {out}")
    try:
        trainer.fit(train_set, epochs, val_set)
    except TrainingInterrupted as stop:
        _say(f"{stop}; checkpoint saved to {stop.checkpoint}; continue with: xpcnn train --out {out} --resume")
        return 130
    result = trainer.finish(test_set, plots=not args.no_plots)
    _say(f"test accuracy {result['accuracy']:.2%} (loss {result['loss']:.4f}) on {len(test_set):,} images; "
         f"training took {sum(row['seconds'] for row in trainer.history):.1f} s")
    return 0


# -- evaluate, predict, parity, info, download ------------------------------------------


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint
    from .datasets import load_dataset
    from .evaluation import evaluate

    checkpoint = load_checkpoint(args.checkpoint, args.backend, args.device)
    data = checkpoint.data_statistics()
    if data["name"] != args.dataset:
        _say(f"note: the model was trained on {data['name']}, evaluating on {args.dataset}")
    loaded = load_dataset(args.dataset, args.data_dir, download=not args.no_download, log=_say)
    result = evaluate(checkpoint.model, loaded.test, args.batch_size)
    if args.json:
        print(json.dumps({"accuracy": result["accuracy"], "loss": result["loss"], "images": len(loaded.test), "data": loaded.source}))
    else:
        _say(f"data: {loaded.source}")
        _say(f"test accuracy {result['accuracy']:.2%} (loss {result['loss']:.4f}) on {len(loaded.test):,} images")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint
    from .evaluation import predict
    from .images import read_image

    checkpoint = load_checkpoint(args.checkpoint, args.backend, args.device)
    data = checkpoint.data_statistics()
    images = np.stack([read_image(path, invert=args.invert) for path in args.images])
    probabilities = predict(checkpoint.model, images, data["mean"], data["std"])
    for path, row in zip(args.images, probabilities):
        best = np.argsort(row)[::-1][: args.top]
        print(f"{path}: " + ", ".join(f"{data['classes'][k]} ({row[k]:.1%})" for k in best))
    return 0


def cmd_parity(args: argparse.Namespace) -> int:
    from . import parity
    from .checkpoint import load_checkpoint

    targets = [parity.parse_target(spec.strip()) for spec in args.backends.split(",") if spec.strip()]
    if len(targets) < 2:
        raise UsageError("--backends needs at least two backends, e.g. numpy,torch")
    for name, device in targets:
        reason = backend.device_unusable_reason(name, device)
        if reason is not None:
            raise UsageError(f"backend {name}{':' + device if device else ''} is not usable here: {reason}")
    if args.steps < 0:
        raise UsageError("--steps must be >= 0")
    if args.model in PRESET_CHOICES:
        model = presets.build(args.model, args.seed)
    elif Path(args.model).is_file():
        model = load_checkpoint(args.model).model
    else:
        raise UsageError(f"--model {args.model!r} is neither a preset ({', '.join(PRESET_CHOICES)}) nor a checkpoint file")
    result = parity.check(model, targets, args.dtype, batch_size=args.batch_size, steps=args.steps,
                          optimizer=args.optimizer, seed=args.seed, name=args.model)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.to_text())
    return 0 if result.passed else 1


def cmd_info(args: argparse.Namespace) -> int:
    print(f"xpcnn {__version__}, Python {platform.python_version()}, NumPy {np.__version__}")
    print(f"machine: {machine.cpu()}")
    for name in backend.BACKENDS:
        reason = backend.unavailable_reason(name)
        if reason is None:
            print(f"backend {name}: usable; devices {', '.join(backend.devices(name))}; dtypes {', '.join(backend.DTYPES)}")
        else:
            print(f"backend {name}: not usable: {reason}")
    for line in machine.blas() or ["unknown (install threadpoolctl to see it)"]:
        print(f"BLAS: {line}")
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from .datasets import download

    for path, downloaded in download(args.dataset, args.data_dir, log=_say):
        _say(f"{path}: {'downloaded' if downloaded else 'present'} and verified")
    return 0


COMMANDS = {"train": cmd_train, "parity": cmd_parity, "evaluate": cmd_evaluate, "predict": cmd_predict, "info": cmd_info, "download": cmd_download}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UsageError as exc:
        if args.debug:
            raise
        parser.print_usage(sys.stderr)
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
