"""The `xpcnn` command's arguments: subcommands, flags, their types, defaults and help.

What the commands do is in main.py. Flags of `train` that a resumed run takes from its
checkpoint have no parser default (None): main.py fills the defaults for a new run and
refuses a given flag that differs from a saved run (train.record.KEPT_ON_RESUME).
"""

from __future__ import annotations

import argparse
import math
import shlex
from pathlib import Path
from typing import Any

from .. import backend, datasets, presets
from .._version import __version__
from ..datasets.batches import PADS
from ..io.schema import MAX_EPOCHS
from ..train.record import MAX_AUGMENT
from . import values

PRESET_CHOICES = sorted(presets.PRESETS) + sorted(presets.ALIASES)
PRESET_HELP = f"preset: {', '.join(presets.PRESETS)} ({', '.join(f'{a} = {n}' for a, n in presets.ALIASES.items())})"


def _by_preset(field: str) -> str:
    """Each preset's recipe value of `field`, for help texts: "tutorial: 3, lenet: 5"."""
    return ", ".join(f"{name}: {getattr(recipe, field)}" for name, recipe in presets.RECIPES.items())


def _momentum_help() -> str:
    """--momentum's help: the SGD presets' momentum, and those whose one-cycle schedule sets it."""
    recipes = presets.RECIPES.items()
    kept = ", ".join(f"{name}: {recipe.momentum}" for name, recipe in recipes
                     if recipe.optimizer == "sgd" and recipe.schedule != "onecycle")
    cycled = " and ".join(name for name, recipe in recipes if recipe.schedule == "onecycle")
    return f"SGD momentum ({kept}; refused under the onecycle schedule, which sets it: {cycled})"


def _presets_with(field: str, value: Any) -> str:
    """Which presets' recipes set `field` to `value`, for help texts: "reflect for cifar"."""
    names = [name for name, recipe in presets.RECIPES.items() if getattr(recipe, field) == value]
    return f"{value if isinstance(value, str) else 'on'} for {' and '.join(names)}"


def _command(commands: Any, name: str, **kwargs: Any) -> Any:
    """The parser of subcommand `name`; it remembers its usage line, for errors found after
    parsing, and takes --debug after the command too."""
    parser = commands.add_parser(name, **kwargs)
    parser.set_defaults(usage=parser.format_usage, refuse=parser.error)
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks of errors")
    return parser


DEFAULT_BACKEND = backend.BACKENDS[0]


def _add_backend_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default=DEFAULT_BACKEND, choices=backend.BACKENDS,
                        help=f"array library (default: {DEFAULT_BACKEND})")
    parser.add_argument("--device", help="device of the backend, e.g. cpu, cuda:0 (default: the backend's default)")


def _add_data_flags(parser: argparse.ArgumentParser, default: str, without: str) -> None:
    from ..datasets import DATASETS
    from ..datasets.loading import FOLDER

    parser.add_argument("--dataset", choices=sorted([*DATASETS, FOLDER]), help=f"dataset (default: {default}); "
                        f"{FOLDER}: the folder of pictures --data-dir, a subfolder per class")
    parser.add_argument("--data-dir", type=values.folder_name,
                        help="folder with the dataset's files, or with --dataset images the pictures (else "
                        "$XPCNN_DATA_DIR, then the cache)")
    parser.add_argument("--no-download", action="store_true", help=f"never download ({without})")


def _add_train_parser(commands: Any) -> None:
    from ..optim import OPTIMIZERS, SCHEDULES

    train = _command(commands, "train", help="train a model and write a run folder", description="Train "
                     "a preset; the run folder gets the checkpoint, metrics.jsonl, summary.json and PNG plots.")
    flag = train.add_argument
    _add_network_flags(train)
    _add_backend_flags(train)
    flag("--dtype", choices=backend.DTYPES, help="(default: float32)")
    flag(
        "--epochs",
        type=values.checked(int, lambda value: 1 <= value <= MAX_EPOCHS, f"in [1, {MAX_EPOCHS:,}]"),
        help=f"total epochs ({_by_preset('epochs')})",
    )
    flag("--batch-size", type=values.positive_int, help=f"({_by_preset('batch_size')})")
    flag("--optimizer", choices=sorted(OPTIMIZERS), help=f"({_by_preset('optimizer')})")
    flag("--lr", type=values.positive_float, help=f"peak learning rate ({_by_preset('lr')})")
    flag("--momentum", type=values.checked(float, lambda value: 0 <= value < 1, "in [0, 1)"), help=_momentum_help())
    flag("--nesterov", action=argparse.BooleanOptionalAction, help=f"Nesterov momentum, SGD only "
         f"({_by_preset('nesterov')})")
    flag("--weight-decay", type=values.checked(float, lambda value: 0 <= value < math.inf, ">= 0 and finite"),
         help=f"({_by_preset('weight_decay')})")
    flag("--schedule", choices=sorted(SCHEDULES), help=f"learning-rate schedule ({_by_preset('schedule')})")
    flag("--warmup", type=values.count, help="linear warm-up steps of the cosine schedule (lenet: 100, at most a "
         "tenth of the run; the others: 0)")
    flag("--label-smoothing", type=values.fraction, metavar="EPS", help="train towards 1 - EPS on the label, EPS "
         f"spread over all classes; evaluation's loss stays plain ({_by_preset('label_smoothing')})")
    _add_augment_flags(train)
    flag("--seed", type=values.seed, help="seed of weights, batch order and dropout (default: 0)")
    _add_data_flags(train, "mnist", "without --data-dir or --dataset: the bundled MNIST subset")
    flag("--val-split", type=values.fraction, help="fraction of the training set held out for validation (default: 0)")
    flag("--early-stopping", type=values.positive_int, metavar="PATIENCE", help="end the run once the validation loss "
         "has not improved for PATIENCE epochs (needs --val-split)")
    flag("--keep-best", action="store_const", const=True, help="also keep the epoch of the lowest validation loss "
         "as RUN/best.npz (needs --val-split)")
    flag("--limit", type=values.positive_int, help="use only this many training (and test) images, for quick runs")
    _add_folder_flags(train)
    flag("--out", type=values.written_path, help="run folder (default: runs/<model>-<time>)")
    flag("--resume", action="store_true", help="continue the run in --out with its saved settings and data; "
         "--epochs beyond the saved total extends it")
    flag("--checkpoint-every", type=values.positive_int, help="also checkpoint every K optimizer steps")
    flag("--workers", type=values.positive_int, help="threads sharing each batch, each with a replica of the model "
         "(default: 2 on NumPy for steps of 1 GFLOP or more, with two cores and threadpoolctl; else 1; "
         "1 under mpirun)")
    flag("--detect-anomaly", action="store_true", help="check every layer for NaN/Inf and name the first (slower)")
    flag("--cuda-graphs", action=argparse.BooleanOptionalAction, help="replay each training step as recorded CUDA "
         "graphs, faster on a GPU (default: on torch with CUDA, not CuPy; refused on NumPy); a resume keeps the run's")
    _add_output_flags(train)


def _add_output_flags(parser: argparse.ArgumentParser) -> None:
    flag = parser.add_argument
    flag("--no-progress", action="store_true", help="no progress bar")
    flag("--no-plots", action="store_true", help="do not draw PNG plots")
    flag("--find-lr", action="store_true", help="instead of training, run the learning-rate range test on the run's "
         "network, recipe and data: up to 100 steps, the rate rising from 1e-7 to 10; print the suggested --lr and "
         "write RUN/lr-range.json and, with matplotlib, lr-range.png")


def _add_network_flags(parser: argparse.ArgumentParser) -> None:
    flag = parser.add_argument
    flag("--model", choices=PRESET_CHOICES, help=f"{PRESET_HELP} (default: tutorial for the MNIST family, compact "
         "for other data)")
    flag("--width", type=values.width, help=f"scale the channels of {' and '.join(presets.SCALABLE)} (default: 1; 0.25 "
         "trains on a laptop); a new run only")


def _add_augment_flags(parser: argparse.ArgumentParser) -> None:
    flag = parser.add_argument
    flag("--augment", type=values.checked(int, lambda value: 0 <= value <= MAX_AUGMENT, f"in [0, {MAX_AUGMENT}]"),
         help=f"shift training images by up to N pixels (below the image side): crop them at random out of themselves "
         f"padded by N ({_by_preset('augment')})")
    flag("--pad", choices=PADS, help="what the shifts bring in at the edges: zeros, or the image mirrored "
         f"(reflect, for photos) (default: zero; {_presets_with('pad', 'reflect')})")
    flag("--flip", action=argparse.BooleanOptionalAction, help="mirror half the training images left to right "
         f"(for photos; a mirrored digit is no digit) (default: off; {_presets_with('flip', True)})")


def _add_folder_flags(parser: argparse.ArgumentParser) -> None:
    flag = parser.add_argument
    flag("--image-size", type=values.checked(int, lambda value: 4 <= value <= 1024, "in [4, 1024]"),
         help="with --dataset images: each picture's shorter side scaled to N pixels and the middle NxN cut out "
         "(default: 32)")
    flag("--channels", type=int, choices=(1, 3), help="with --dataset images: 1 grey, 3 colour (default: 3 when "
         "any picture has colour)")
    flag("--test-split", type=values.checked(float, lambda value: 0.0 < value < 1.0, "in (0, 1)"),
         help="with --dataset images and no train/ and test/ subfolders: the fraction of each class held out for "
         "testing (default: 0.2)")
    flag("--skip-bad-images", action="store_const", const=True, help="with --dataset images: skip pictures that "
         "cannot be read and stray files, listing them (default: refuse them, naming the first)")
    flag("--digits", action="store_const", const=True, help="with --dataset images: pictures of digits, each "
         "brought into MNIST's form (grey, light ink on black, centred by mass) as predict reads one (default: photos)")


def _add_use_parsers(commands: Any) -> None:
    evaluate = _command(commands, "evaluate", help="test accuracy of a checkpoint")
    evaluate.add_argument("checkpoint", type=values.a_path)
    _add_backend_flags(evaluate)
    _add_data_flags(evaluate, "the one the model was trained on", "data not found is an error")
    evaluate.add_argument("--batch-size", type=values.positive_int, default=1000,
                          help="images a forward pass (default: 1000)")
    evaluate.add_argument("--full-test-set", action="store_true", help="score every test image, not only the "
                          "sample a --limit run scored")
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON")
    evaluate.add_argument("--skip-bad-images", action="store_true", help="with --data-dir, another folder of "
                          "pictures: skip pictures that cannot be read and stray files (default: as the run did)")

    predict = _command(commands, "predict", help="classify images (PNG/JPEG with Pillow, or .npy)")
    predict.add_argument("checkpoint", type=values.a_path)
    predict.add_argument("images", nargs="+", type=values.a_path, metavar="IMAGE")
    _add_backend_flags(predict)
    predict.add_argument("--invert", action=argparse.BooleanOptionalAction, help="digit models: dark ink on light "
                         "paper: invert (--invert) or not (--no-invert); default: decided from each picture's border")
    predict.add_argument("--top", type=values.positive_int, default=1,
                         help="show the K most likely classes (default: 1)")
    predict.add_argument("--json", action="store_true", help="one JSON object per image: its classes with their "
                         "probabilities, or its error")


def _add_explain_parser(commands: Any) -> None:
    explain = _command(commands, "explain", help="draw what a model sees in images: its first filters, where each "
                       "answer comes from (occlusion) and feature maps (needs matplotlib)")
    explain.add_argument("checkpoint", type=values.a_path)
    explain.add_argument("images", nargs="+", type=values.a_path, metavar="IMAGE")
    explain.add_argument("--out", type=values.written_path, default=Path("explained"),
                         help="the folder the pictures go into (default: explained)")
    explain.add_argument("--class", dest="target", metavar="NAME", help="the class whose probability the occlusion "
                         "map follows (default: each image's most likely)")
    explain.add_argument("--at", type=values.positions, help="comma-separated layer positions whose feature maps to "
                         "draw, e.g. 3,7 or 3.body.2 (default: the first activation and the last at each size)")
    _add_backend_flags(explain)
    explain.add_argument("--invert", action=argparse.BooleanOptionalAction, help="as predict's")
    explain.add_argument("--top", type=values.positive_int, default=3, help="the K most likely classes (default: 3)")
    explain.add_argument("--json", action="store_true", help="one JSON object per image: its classes, the class "
                         "followed and its picture, or its error")


def _add_parity_parser(commands: Any) -> None:
    from ..optim import OPTIMIZERS

    parity = _command(commands, "parity", help="compare backends layer by layer on the same weights and "
                      "batch", description="Exit status 0 when every judged difference is within tolerance, 1 when "
                      "not, 2 on bad usage or a backend not usable here.")
    flag = parity.add_argument
    flag("--backends", default="numpy,torch", help="comma-separated, first is the reference; NAME or NAME:DEVICE, "
         "e.g. numpy,cupy or numpy,torch:cuda (default: numpy,torch)")
    flag("--model", default="tutorial", help=f"{PRESET_HELP}, or a checkpoint file or run folder (default: tutorial)")
    flag("--dtype", default="float64", choices=backend.DTYPES, help="(default: float64, where rounding hides "
         "least)")
    flag("--batch-size", type=values.positive_int, default=32, help="images to use: bundled MNIST's test images for "
         "digit models (2,000 at most), else random ones of the model's shape (default: 32)")
    flag("--steps", type=values.count, default=0, help="also train K steps on each backend, follow the drift "
         "(default: 0)")
    flag("--optimizer", choices=sorted(OPTIMIZERS), help="optimizer of --steps (default: sgd)")
    flag("--seed", type=values.seed, default=0, help="seed of a preset's weights, of random images and of the batches "
         "--steps draws (default: 0)")
    flag("--width", type=values.width,
         help=f"scale the channels of a preset {' or '.join(presets.SCALABLE)} (default: 1)")
    flag("--json", action="store_true", help="print the report as JSON")


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The parsed arguments. A flag the command does not take is refused under the
    command's usage (argparse's own refusal shows the top level's)."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        args.refuse(f"unrecognized arguments: {' '.join(unknown)}")
    return args


# Flags of `train` that its checkpoint does not keep: where it runs, what it reports.
# (The worker threads and CUDA graphs a run used are kept, and a resume takes them.)
NOT_KEPT = ("backend", "device", "checkpoint_every", "detect_anomaly", "no_progress", "no_plots")


def continue_command(args: argparse.Namespace, out: Path) -> str:
    """The command that continues the interrupted run in `out` as `args` ran it: --resume
    brings the kept settings, the flags of NOT_KEPT are given again."""
    words = ["xpcnn", "train", "--out", str(out), "--resume"]
    for name in NOT_KEPT:
        value, flag = getattr(args, name), "--" + name.replace("_", "-")
        if value is True:
            words.append(flag)
        elif value is not None and value is not False and (name, value) != ("backend", DEFAULT_BACKEND):
            words += [flag, str(value)]
    return shlex.join(words)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xpcnn", description="Train and use CNNs written once for NumPy, CuPy, "
                                     "PyTorch and array-api-strict.")
    parser.add_argument("--version", action="version", version=f"xpcnn {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train_parser(commands)
    _add_use_parsers(commands)
    _add_explain_parser(commands)
    _add_parity_parser(commands)
    export = _command(commands, "export", help="write a checkpoint's model as ONNX (needs the onnx package)")
    export.add_argument("checkpoint", type=values.a_path)
    export.add_argument("output", type=values.written_path, help="the .onnx file to write")
    export.add_argument("--softmax", action="store_true", help="output probabilities instead of logits")
    export.add_argument("--opset", type=values.checked(int, lambda value: value >= 17, ">= 17"), default=17,
                        help="ONNX operator set (default: 17)")
    _command(commands, "info", help="version, usable backends, devices, BLAS")
    download = _command(commands, "download", help="download and verify a dataset into the cache")
    download.add_argument("dataset", nargs="?", default="mnist", choices=sorted(datasets.DATASETS),
                          help="(default: mnist)")
    download.add_argument("--data-dir", type=values.folder_name, default=None,
                          help="download into this folder instead of the cache")
    return parser
