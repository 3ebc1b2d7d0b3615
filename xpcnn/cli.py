"""The `xpcnn` command: train, evaluate, predict, info, download.

Exit status: 0 success, 1 failure (one line on stderr; --debug shows the traceback),
2 bad usage, 130 interrupted (after saving a checkpoint).
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

from . import backend
from ._version import __version__

# Per-preset defaults, used where a flag is not given.
RECIPES: dict[str, dict[str, Any]] = {
    "seed": {"epochs": 3, "batch_size": 64, "optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "schedule": "cosine", "weight_decay": 0.0, "augment": 0},
    "lenet": {"epochs": 5, "batch_size": 64, "optimizer": "adam", "lr": 2e-3, "momentum": 0.0, "schedule": "cosine", "weight_decay": 0.0, "augment": 1},
}


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


def _add_backend_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="numpy", choices=backend.BACKENDS, help="array library to run on (default: numpy)")
    parser.add_argument("--device", default=None, help="device of the backend, e.g. cpu, cuda:0 (default: the backend's default)")


def _add_data_flags(parser: argparse.ArgumentParser) -> None:
    from .datasets import DATASETS

    parser.add_argument("--dataset", default="mnist", choices=sorted(DATASETS), help="dataset (default: mnist)")
    parser.add_argument("--data-dir", default=None, help="folder with the IDX files (else $XPCNN_DATA_DIR, then the cache)")
    parser.add_argument("--no-download", action="store_true", help="never download; fall back to the bundled MNIST subset")


def build_parser() -> argparse.ArgumentParser:
    from .models import PRESETS
    from .optim import OPTIMIZERS, SCHEDULES

    parser = argparse.ArgumentParser(prog="xpcnn", description="Train and use CNNs written once for NumPy, CuPy, PyTorch and array-api-strict.")
    parser.add_argument("--version", action="version", version=f"xpcnn {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a model and write a run folder", description="Train a preset on MNIST or Fashion-MNIST. Writes the checkpoint, metrics.jsonl, summary.json and (with matplotlib) plots into the run folder.")
    train.add_argument("--model", default="seed", choices=sorted(PRESETS), help="preset (default: seed)")
    _add_backend_flags(train)
    train.add_argument("--dtype", default="float32", choices=backend.DTYPES)
    train.add_argument("--epochs", type=_positive_int, help="total epochs (seed: 3, lenet: 5)")
    train.add_argument("--batch-size", type=_positive_int, help="(seed: 64, lenet: 64)")
    train.add_argument("--optimizer", choices=sorted(OPTIMIZERS), help="(seed: sgd, lenet: adam)")
    train.add_argument("--lr", type=_positive_float, help="peak learning rate (seed: 0.01, lenet: 0.002)")
    train.add_argument("--momentum", type=float, help="SGD momentum (seed: 0.9)")
    train.add_argument("--weight-decay", type=float, help="(default: 0)")
    train.add_argument("--schedule", choices=sorted(SCHEDULES), help="learning-rate schedule (default: cosine)")
    train.add_argument("--warmup", type=int, default=0, help="warm-up steps of the cosine schedule")
    train.add_argument("--augment", type=int, help="shift training images randomly by up to N pixels (seed: 0, lenet: 1)")
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

    parity = commands.add_parser("parity", help="compare backends layer by layer on the same weights and batch",
                                 description="Exit status 0 when every judged difference is within tolerance, 1 when not, 2 on bad usage or a backend not usable here.")
    parity.add_argument("--backends", default="numpy,torch", help="comma-separated, first is the reference; NAME or NAME:DEVICE, e.g. numpy,cupy or numpy,torch:cuda (default: numpy,torch)")
    parity.add_argument("--model", default="seed", help="preset (seed, lenet) or a checkpoint file (default: seed)")
    parity.add_argument("--dtype", default="float64", choices=backend.DTYPES)
    parity.add_argument("--batch-size", type=_positive_int, default=32, help="images of the bundled MNIST subset to use (default: 32)")
    parity.add_argument("--steps", type=int, default=0, help="also train K steps on each backend and follow the drift (default: 0)")
    parity.add_argument("--optimizer", default="sgd", choices=sorted(OPTIMIZERS), help="optimizer of --steps (default: sgd)")
    parity.add_argument("--seed", type=int, default=0, help="seed of a preset's weights (default: 0)")
    parity.add_argument("--json", action="store_true", help="print the report as JSON")

    commands.add_parser("info", help="version, usable backends, devices, BLAS")

    download = commands.add_parser("download", help="download and verify a dataset into the cache")
    download.add_argument("dataset", nargs="?", default="mnist", choices=["mnist", "fashion-mnist"])
    download.add_argument("--data-dir", default=None, help="download into this folder instead of the cache")
    return parser


# -- train -----------------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    recipe = dict(RECIPES[args.model])
    for key in ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule", "augment"):
        if getattr(args, key) is not None:
            recipe[key] = getattr(args, key)
    return recipe


def _make_optimizer(model: Any, settings: dict[str, Any], steps_per_epoch: int, warmup: int) -> Any:
    from .optim import SGD, Adam, AdamW, Cosine, Schedule, StepDecay

    total = settings["epochs"] * steps_per_epoch
    if settings["schedule"] == "cosine":
        if warmup >= total:
            raise UsageError(f"--warmup {warmup} must be below the total number of steps ({total})")
        schedule: Schedule = Cosine(total, warmup)
    elif settings["schedule"] == "step":
        schedule = StepDecay(max(1, total // 3), 0.1)
    else:
        schedule = Schedule()
    lr, decay = settings["lr"], settings["weight_decay"]
    if settings["optimizer"] == "sgd":
        return SGD(model, lr, momentum=settings["momentum"], weight_decay=decay, schedule=schedule)
    optimizer_class = Adam if settings["optimizer"] == "adam" else AdamW
    return optimizer_class(model, lr, weight_decay=decay, schedule=schedule)


def _limit(dataset: Any, count: int | None, seed: int) -> Any:
    if count is None or count >= len(dataset):
        return dataset
    return dataset.subset(np.sort(np.random.default_rng(seed).permutation(len(dataset))[:count]))


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def cmd_train(args: argparse.Namespace) -> int:
    from .datasets import load_dataset, num_batches
    from .models import build
    from .training import CHECKPOINT_NAME, Trainer, TrainingInterrupted, evaluate

    if args.val_split and args.limit and args.limit < 10:
        raise UsageError("--limit is too small to hold out a validation split")
    if args.momentum is not None and (args.optimizer or RECIPES[args.model]["optimizer"]) != "sgd":
        raise UsageError("--momentum applies to --optimizer sgd only")
    out = args.out or Path("runs") / f"{args.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    checkpoint = out / CHECKPOINT_NAME
    if args.resume and not checkpoint.exists():
        raise UsageError(f"--resume: no checkpoint in {out}")
    if not args.resume and checkpoint.exists():
        raise UsageError(f"{out} already holds a checkpoint; pass --resume to continue it, or choose another --out")
    loaded = load_dataset(args.dataset, args.data_dir, download=not args.no_download, log=_say)
    _say(f"data: {loaded.source}")
    train_set, test_set = _limit(loaded.train, args.limit, args.seed), _limit(loaded.test, args.limit, args.seed + 1)
    val_set = None
    if args.val_split:
        train_set, val_set = train_set.split(args.val_split, args.seed)
    progress = not args.no_progress
    if args.resume:
        trainer = Trainer.resume(checkpoint, args.backend, args.device, progress=progress, log=_say, anomaly=args.detect_anomaly)
        settings = trainer.info["settings"]
        epochs = args.epochs or settings["epochs"]
        _say(f"resuming {out} at epoch {trainer.state.epoch + 1}, batch {trainer.state.batch}")
    else:
        settings = _settings(args)
        epochs = settings["epochs"]
        model = build(args.model, args.seed).to(args.backend, args.device, args.dtype)
        optimizer = _make_optimizer(model, settings, num_batches(len(train_set), settings["batch_size"]), args.warmup)
        spec = loaded.train.spec
        info = {"model": args.model, "settings": settings, "data": {"name": spec.name, "mean": spec.mean, "std": spec.std, "classes": list(spec.classes)}}
        trainer = Trainer(model, optimizer, batch_size=settings["batch_size"], seed=args.seed, run_dir=out,
                          checkpoint_every=args.checkpoint_every, progress=progress, log=_say, info=info,
                          anomaly=args.detect_anomaly, augment=settings["augment"])
    if args.checkpoint_every:
        trainer.checkpoint_every = args.checkpoint_every
    model = trainer.model
    _say(f"training {trainer.info['model']} ({model.num_params():,} parameters) on {model.backend} "
         f"({model.device}, {model.dtype}) for {epochs} epoch{'s' if epochs != 1 else ''}, {settings['optimizer']} lr {settings['lr']:g}, "
         f"batch {settings['batch_size']}; run folder {out}")
    try:
        trainer.fit(train_set, epochs, val_set)
    except TrainingInterrupted as stop:
        _say(f"{stop}; checkpoint saved to {stop.checkpoint}; continue with: xpcnn train --out {out} --resume")
        return 130
    result = evaluate(model, test_set)
    _say(f"test accuracy {result['accuracy']:.2%} (loss {result['loss']:.4f}) on {len(test_set):,} images; "
         f"training took {sum(row['seconds'] for row in trainer.history):.1f} s")
    _write_summary(out, trainer, result, test_set.labels, loaded.source, len(train_set), not args.no_plots)
    return 0


def _write_summary(out: Path, trainer: Any, result: dict[str, Any], test_labels: np.ndarray, source: str,
                   n_train: int, plots: bool) -> None:
    """summary.json and, with matplotlib, curves.png and confusion.png in the run folder."""
    from . import plots as plotting
    from .atomic import atomic_write_text
    from .training import confusion_matrix

    model, info = trainer.model, trainer.info
    classes = info["data"]["classes"]
    summary = {
        "model": info["model"], "settings": info["settings"], "data": source,
        "train_images": n_train, "test_images": int(test_labels.shape[0]), "epochs": len(trainer.history),
        "test_accuracy": result["accuracy"], "test_loss": result["loss"],
        "train_seconds": sum(row["seconds"] for row in trainer.history),
        "backend": model.backend, "device": str(model.device), "dtype": model.dtype,
        "machine": machine_description(), "xpcnn": __version__, "date": time.strftime("%Y-%m-%d"),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    if not plots:
        return
    if not plotting.available():
        _say("plots skipped: matplotlib is not installed (pip install 'xpcnn[plot]')")
        return
    title = f"{info['model']} on {info['data']['name']}"
    plotting.learning_curves(trainer.history, out / "curves.png", title)
    counts = confusion_matrix(test_labels, result["predictions"], len(classes))
    plotting.confusion(counts, classes, out / "confusion.png", f"{title}: test accuracy {result['accuracy']:.2%}")
    _say(f"plots: {out / 'curves.png'}, {out / 'confusion.png'}")


# -- evaluate, predict, info, download ---------------------------------------------------


def _load_for_use(path: Path, args: argparse.Namespace) -> Any:
    from .checkpoint import load_checkpoint

    checkpoint = load_checkpoint(path, args.backend, args.device)
    data = checkpoint.trainer.get("info", {}).get("data")
    if not data:
        raise ValueError(f"{path}: no data statistics in the checkpoint (was it written by xpcnn train?)")
    return checkpoint, data


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .datasets import load_dataset
    from .training import evaluate

    checkpoint, data = _load_for_use(args.checkpoint, args)
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
    from .images import read_image
    from .training import predict

    checkpoint, data = _load_for_use(args.checkpoint, args)
    images = np.stack([read_image(path, invert=args.invert) for path in args.images])
    probabilities = predict(checkpoint.model, images, data["mean"], data["std"])
    classes = data["classes"]
    for path, row in zip(args.images, probabilities):
        best = np.argsort(row)[::-1][: args.top]
        print(f"{path}: " + ", ".join(f"{classes[k]} ({row[k]:.1%})" for k in best))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    print(f"xpcnn {__version__}, Python {platform.python_version()}, NumPy {np.__version__}")
    print(f"machine: {machine_description()}")
    for name in backend.BACKENDS:
        reason = backend.unavailable_reason(name)
        if reason is None:
            print(f"backend {name}: usable; devices {', '.join(backend.devices(name))}; dtypes {', '.join(backend.DTYPES)}")
        else:
            print(f"backend {name}: not usable: {reason}")
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        print("BLAS: unknown (install threadpoolctl to see it)")
    else:
        for pool in threadpool_info():
            print(f"BLAS: {pool.get('internal_api')} {pool.get('version')} ({pool.get('architecture', '?')} kernel, {pool.get('num_threads')} threads)")
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from .datasets import DATASETS, cache_dir, download_file, load_verified

    spec = DATASETS[args.dataset]
    folder = Path(args.data_dir) if args.data_dir else cache_dir() / spec.name
    for file in spec.files.values():
        existing = next((p for p in (folder / file.name, folder / f"{file.name}.gz") if p.is_file()), None)
        if existing is not None:
            load_verified(existing, file)
            _say(f"{existing}: present and verified")
            continue
        path = download_file(file, spec.mirrors, folder, log=_say)
        _say(f"{path}: downloaded and verified")
    return 0


def cmd_parity(args: argparse.Namespace) -> int:
    from . import parity
    from .checkpoint import load_checkpoint
    from .datasets import batches, load_bundled
    from .models import PRESETS, build

    targets = [parity.parse_target(spec.strip()) for spec in args.backends.split(",") if spec.strip()]
    if len(targets) < 2:
        raise UsageError("--backends needs at least two backends, e.g. numpy,torch")
    for name, device in targets:
        if name not in backend.BACKENDS:
            raise UsageError(f"unknown backend {name!r}; expected one of {', '.join(backend.BACKENDS)}")
        reason = backend.unavailable_reason(name)
        if reason is None and device is not None:
            try:
                backend.device(name, device)
                backend.to_backend(np.zeros(1), name, device)
            except Exception as exc:  # each library reports a missing device its own way
                reason = f"device {device!r} not usable: {exc}"
        if reason is not None:
            raise UsageError(f"backend {name}{':' + device if device else ''} is not usable here: {reason}")
    if args.steps < 0:
        raise UsageError("--steps must be >= 0")
    if args.model in PRESETS:
        model = build(args.model, args.seed)
    elif Path(args.model).is_file():
        model = load_checkpoint(args.model).model
    else:
        raise UsageError(f"--model {args.model!r} is neither a preset ({', '.join(PRESETS)}) nor a checkpoint file")
    data = load_bundled()
    x, y = next(batches(data.test, args.batch_size, shuffle=False))
    report = parity.compare(model, x, y, targets, args.dtype)
    result: dict[str, Any] = {"model": args.model, "batch_size": args.batch_size, "compare": report.to_dict()}
    passed = report.passed
    steps_report = None
    if args.steps:
        train_batches = list(batches(data.train, args.batch_size, seed=args.seed))[: args.steps]
        steps_report = parity.trajectory(model, train_batches, targets, args.dtype, args.optimizer)
        result["trajectory"] = steps_report.to_dict()
        passed = passed and steps_report.passed
    result["passed"] = passed
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"parity of {args.model} ({model.num_params():,} parameters), batch of {args.batch_size} bundled MNIST images, {args.dtype}")
        print(report.to_table())
        if steps_report is not None:
            print(f"\ntraining {args.steps} steps with {args.optimizer}:")
            print(steps_report.to_table())
        print("PASS" if passed else "FAIL")
    return 0 if passed else 1


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
