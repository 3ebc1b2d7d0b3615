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
from typing import Any

from .. import backend, presets
from ..datasets.sources import escaped
from ..diagnostics import machine
from ..metrics import per_class_table
from ..train.workers import quiet
from .arguments import build_parser, parse
from .output import UsageError, say
from .training import cmd_train


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, args.dataset, args.data_dir, download=not args.no_download,
                                 backend_name=args.backend, device=args.device, batch_size=args.batch_size,
                                 full_test_set=args.full_test_set, log=say,
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


def cmd_explain(args: argparse.Namespace) -> int:
    from ..explain import explain_files

    written = explain_files(args.checkpoint, args.images, args.out, target=args.target, at=args.at, top=args.top,
                            invert=args.invert, backend_name=args.backend, device=args.device)
    if written.filters and not args.json:
        print(f"filters: {escaped(str(written.filters))}")
    for result in written.images:  # as predict: the pictures on stdout, an error on stderr (with --json: stdout)
        if args.json:
            print(json.dumps({**result.to_dict(), "filters": written.filters and str(written.filters)}))
        elif result.error is None:
            print(result.to_line())
        else:
            print(f"xpcnn explain: error: {result.to_line()}", file=sys.stderr)
    return 1 if any(result.error for result in written.images) else 0


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

    for path, downloaded in download(args.dataset, args.data_dir, log=say):
        print(f"{path}: {'downloaded' if downloaded else 'present'} and verified")
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "explain": cmd_explain,
            "parity": cmd_parity, "export": cmd_export, "info": cmd_info, "download": cmd_download}


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
            return _main(parse(parser, argv), say)
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

