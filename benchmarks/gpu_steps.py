"""The steps of the GPU check (benchmarks/gpu_check.sh runs them in order), each writing
its results under OUT:

    python benchmarks/gpu_steps.py preflight OUT   exit 3, saying why, when CUDA is not usable
    python benchmarks/gpu_steps.py parity OUT      numpy vs cupy vs torch:cuda, both presets and dtypes
    python benchmarks/gpu_steps.py train OUT       one epoch of lenet on cupy and on torch:cuda
    python benchmarks/gpu_steps.py products OUT    CuPy's product kernel (recorded steps) against cuBLAS
    python benchmarks/gpu_steps.py summary OUT     OUT/summary.md from the files the others wrote
    python benchmarks/gpu_steps.py pack WORK OUT   WORK's summary, its env.txt and all its files as one
                                                   archive, into OUT: what a device run brings back
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import sys
import tarfile
import time
import traceback
from pathlib import Path

# What is compared and trained on; tests/test_gpu_check.py runs the steps with CPU stand-ins.
PAIRS = [("numpy", "cupy"), ("numpy", "torch:cuda"), ("cupy", "torch:cuda")]
GPU_BACKENDS = [("cupy", None), ("torch", "cuda")]
# A device run brings back at most 8 files of its $OUT, and leaves out the rest: the check
# writes 11, so they are packed (pack) into ARCHIVE beside summary.md and env.txt.
FILES_BACK = 8
ARCHIVE = "results.tar.gz"
KERNELS_FAILED = "kernels-failed.txt"  # the preflight's mark: xpcnn's CUDA kernels did not compile


def preflight(out: Path) -> int:
    """Every piece the check needs, tried for real: xpcnn imports, a CuPy reduction on the
    GPU, torch sees CUDA, an array crosses cupy -> torch -> cupy by DLPack."""
    problems, facts = [], []
    try:
        import xpcnn

        facts.append(f"xpcnn {xpcnn.__version__} from {Path(xpcnn.__file__).parent}")
    except Exception as exc:  # noqa: BLE001  (whatever stops the import is the finding)
        problems.append(f"import xpcnn failed: {exc!r} (are array-api-compat and array-api-strict carried in .whl?)")
    try:
        import cupy

        total = float(cupy.arange(1000, dtype=cupy.float32).sum())
        facts.append(f"CuPy {cupy.__version__}: sum on {cupy.cuda.runtime.getDeviceProperties(0)['name'].decode()}"
                     f" = {total:g}; CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}")
    except Exception as exc:  # noqa: BLE001
        problems.append(f"CuPy cannot compute on a CUDA device: {exc!r}")
    try:
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("torch.cuda.is_available() is False")
        facts.append(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}")
        import cupy

        there = torch.from_dlpack(cupy.arange(5, dtype=cupy.float32))
        back = cupy.from_dlpack(there * 2)
        facts.append(f"DLPack cupy -> torch -> cupy: {back.get().tolist()}")
    except Exception as exc:  # noqa: BLE001
        problems.append(f"torch on CUDA (or DLPack with CuPy) does not work: {exc!r}")
    if not problems:
        facts.append(compile_kernels(out))
    (out / "env.txt").write_text("\n".join(facts + [f"PROBLEM: {p}" for p in problems]) + "\n")
    if problems:
        print("gpu_check: no usable CUDA device here, stopping before the checks:\n  " + "\n  ".join(problems),
              file=sys.stderr)
        return 3
    print("\n".join(facts))
    return 0


def compile_kernels(out: Path) -> str:
    """Compile xpcnn's CUDA kernels once, up front, and say how long it took. Where they do
    not compile, say why and leave KERNELS_FAILED in `out`: gpu_check.sh then skips their
    tests and runs the rest on CuPy's standard path (XPCNN_CUPY=0), where each test and
    step would fail on the same error after seconds of compiling."""
    start = time.perf_counter()
    try:
        from xpcnn.kernels import cupy as kernels

        names = kernels._names()
        kernels._module().get_function(names[0])  # one NVRTC program: every instance compiles at the first lookup
    except Exception as exc:  # noqa: BLE001  (the compiler's error is the finding)
        (out / KERNELS_FAILED).write_text(f"{exc!r}\n")
        return f"PROBLEM (the check goes on without them): xpcnn's CUDA kernels do not compile: {exc!r}"
    return f"xpcnn's CUDA kernels: {len(names)} instances compiled in {time.perf_counter() - start:.1f} s"


def parity(out: Path) -> int:
    """Layer by layer, both presets, float32 and float64, plus a 5-step trajectory; a
    configuration that fails says why in both files, and the next runs."""
    passed = True
    with open(out / "parity.txt", "w") as text, open(out / "parity.jsonl", "w") as lines:
        for pair in PAIRS:
            for preset in ("tutorial", "lenet"):
                for dtype in ("float32", "float64"):
                    report, row = _parity_of(pair, preset, dtype)
                    text.write(report)
                    lines.write(json.dumps(row) + "\n")
                    for done in (text, lines):  # whole: a step cut by its time-out keeps what it finished
                        done.flush()
                    passed = passed and row["passed"]
    return 0 if passed else 1


def _parity_of(pair: tuple[str, str], preset: str, dtype: str) -> tuple[str, dict]:
    """parity's text and JSON row for one pair of backends, preset and dtype."""
    from xpcnn import presets
    from xpcnn.diagnostics import parity as check

    started, title = time.perf_counter(), f"{' vs '.join(pair)}, {preset}, {dtype}"
    row = {"pair": pair, "preset": preset, "dtype": dtype}
    try:
        result = check.check(presets.build(preset), check.usable_targets(",".join(pair)), dtype, steps=5,
                             name=preset)
    except Exception as exc:  # noqa: BLE001  (the other configurations still tell something)
        return f"== {title}: failed\n{traceback.format_exc()}\n", {**row, "passed": False, "error": repr(exc)}
    report = f"== {title} ({time.perf_counter() - started:.1f} s)\n{result.to_text()}\n\n"
    return report, {**row, **result.to_dict()}


def train(out: Path) -> int:
    """One epoch of lenet on the bundled subset on each GPU backend, with and without CUDA
    graphs: accuracy, images/s, and the first step against the steady state. Each run's
    line is written as it ends, a run that fails says why in its line, and the next runs."""
    failed = False
    with open(out / "train.txt", "w") as report:
        for (name, device), graphs in [(target, graphs) for target in GPU_BACKENDS for graphs in (True, False)]:
            try:
                row = _train_row(name, device, graphs)
            except Exception as exc:  # noqa: BLE001  (the other runs still tell something)
                failed, row = True, f"{name}:{device or 'default'}, CUDA graphs asked {graphs}: failed: {exc!r}"
                traceback.print_exc()
            print(row, flush=True)
            report.write(row + "\n")
            report.flush()
    return 1 if failed else 0


def _train_row(name: str, device: str | None, graphs: bool) -> str:
    """train's line for one epoch of lenet on backend `name`, CUDA graphs asked for or not."""
    from xpcnn import Trainer
    from xpcnn.datasets import load_bundled

    train_set, _, test_set = load_bundled().splits()
    notes: list[str] = []  # why a recording failed, if one did
    trainer = Trainer.for_preset("lenet", train_size=len(train_set), backend_name=name, device=device,
                                 progress=False, log=notes.append, cuda_graphs=graphs)
    steps = []
    original = trainer._step

    def timed_step(x, y, *rest):
        started = time.perf_counter()
        original(x, y, *rest)  # ends with the loss and the correct count on the host: a synchronisation
        steps.append(time.perf_counter() - started)

    trainer._step = timed_step
    trainer.fit(train_set, 1)
    accuracy = trainer.finish(test_set)["accuracy"]
    steady = sorted(steps[5:])[len(steps[5:]) // 2]
    return (f"{name}:{device or 'default'}, CUDA graphs {'on' if trainer.graph_shapes else 'off'}: test "
            f"accuracy {accuracy:.2%}, {len(train_set) / trainer.history[0]['seconds']:,.0f} images/s over "
            f"the epoch, first step {steps[0] * 1e3:.0f} ms, second {steps[1] * 1e3:.0f} ms, median step "
            f"{steady * 1e3:.1f} ms (batch {trainer.batch_size})"
            + "".join(f"; {note}" for note in notes if note.startswith("note:")))


PRODUCT_PRESETS = [("lenet", 256), ("resnet20", 256)]  # the products of their training steps are timed


def product_cases(preset: str, batch: int, target: tuple[str, str | None]) -> list[tuple]:
    """(a, b) of each distinct matrix product (shapes and memory layout) in a training step
    of `preset` at `batch` on `target`, as the layers pass them to layers/product.matmul."""
    import numpy as np

    import xpcnn
    from xpcnn import backend, presets
    from xpcnn.layers import product

    cases, fast_path = {}, backend.fast_path

    def watching(standard, x):
        chosen = fast_path(standard, x)
        if standard is not product.matmul:
            return chosen

        def seen(a, b):
            cases.setdefault((a.shape, a.strides, b.shape, b.strides), (a, b))
            return chosen(a, b)

        return seen

    model = presets.build(preset).to(*target)
    x = backend.to_backend(np.random.default_rng(0).standard_normal((batch, *presets.DEFAULT_SHAPES[preset])),
                           *target, "float32")
    loss = xpcnn.SoftmaxCrossEntropy(check_labels=False)
    backend.fast_path = watching
    try:
        loss.forward(model.forward(x), backend.to_backend(np.arange(batch) % 10, *target))
        model.backward(loss.backward(), input_grad=False)
    finally:
        backend.fast_path = fast_path
    return list(cases.values())


def products(out: Path) -> int:
    """Each matrix product of a lenet and a resnet20 training step on CuPy, float32: the
    product kernel a recorded step takes against cuBLAS (CuPy's @), each timed alone with
    CUDA events, and how far apart their results are."""
    import cupy

    from xpcnn import capture
    from xpcnn.kernels import cupy as fast

    def milliseconds(work, repeats=20):
        work()
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        for _ in range(repeats):
            work()
        end.record()
        end.synchronize()
        return cupy.cuda.get_elapsed_time(start, end) / repeats

    def recorded(a, b):
        with capture.recordable():
            return fast.matmul(a, b)

    with open(out / "products.md", "w") as report:  # row by row: a step cut by its time-out keeps its rows
        def row(line):
            print(line, flush=True)
            report.write(line + "\n")
            report.flush()

        row("| preset | (m, k) @ (k, n) | a, b in C order | our tile | ours ms | in 64x64 tiles ms | cuBLAS ms "
            "| ours / cuBLAS time | ours GFLOP/s | max difference / max value |")
        row("|---|---|---|---|---|---|---|---|---|---|")
        for preset, batch in PRODUCT_PRESETS:
            for a, b in product_cases(preset, batch, ("cupy", None)):
                ours = milliseconds(functools.partial(recorded, a, b))
                tile = fast._tile(a.shape[0], b.shape[1])
                square = "same" if tile == (64, 64) else (
                    f"{milliseconds(functools.partial(fast._product, a, b, (64, 64))):.3f}")  # is the thin tile faster?
                theirs = milliseconds(functools.partial(cupy.matmul, a, b))
                want = a @ b
                gap = float(cupy.max(cupy.abs(recorded(a, b) - want)) / cupy.max(cupy.abs(want)))
                flops = 2 * a.shape[0] * a.shape[1] * b.shape[1]
                row(f"| {preset} | {tuple(a.shape)} @ {tuple(b.shape)} | {a.flags.c_contiguous}, "
                    f"{b.flags.c_contiguous} | {tile[0]}x{tile[1]} | {ours:.3f} | {square} | {theirs:.3f} | "
                    f"{ours / theirs:.2f} | {flops / ours / 1e6:,.0f} | {gap:.1e} |")
    return 0


def _verdict(line: str) -> str:
    """A row of the summary's parity table from a line of parity.jsonl."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return "| (a line cut short: the step was stopped as it wrote) | | | | |"
    if "error" in row:
        return f"| {' vs '.join(row['pair'])} | {row['preset']} | {row['dtype']} | {row['error']} | FAIL |"
    local = [r["max_rel"] for r in row["compare"]["rows"] if r["view"] == "local"]
    worst = math.nan if None in local else max(local, default=0.0)  # None: a NaN or Inf (to_dict)
    return (f"| {' vs '.join(row['pair'])} | {row['preset']} | {row['dtype']} | {worst:.1e} | "
            f"{'PASS' if row['passed'] else 'FAIL'} |")


def summary(out: Path) -> int:
    """One markdown page from the files of the other steps (missing ones said so)."""
    def section(title: str, name: str, lines: int | None = None) -> list[str]:
        path = out / name
        if not path.exists():
            return [f"## {title}", "", f"(no {name}: the step did not run or was cut by the deadline)", ""]
        text = path.read_text(errors="replace").splitlines()  # a step killed as it wrote may end mid-character
        return [f"## {title}", "", "```", *(text[-lines:] if lines else text), "```", ""]

    parity = out / "parity.jsonl"
    verdicts = [_verdict(line) for line in (parity.read_text().splitlines() if parity.exists() else [])]
    page = [f"# GPU check, {time.strftime('%Y-%m-%d')}", ""] + section("Environment", "env.txt")
    page += section("CuPy's kernels (tests/kernels/test_cupy.py, gpu-marked)", "pytest-kernels.txt", lines=25)
    page += section("Recorded steps (tests/train/test_step.py, tests/test_backend.py, gpu-marked)", "pytest-graphs.txt",
                    lines=15)
    page += ["## Parity (worst local relative difference)", "", "| backends | preset | dtype | worst | verdict |",
             "|---|---|---|---|---|", *verdicts, ""]
    page += section("Training, one epoch of lenet", "train.txt") + section("Throughput", "bench.md")
    page += section("CuPy's product kernel (recorded steps) against cuBLAS", "products.md")
    page += section("gpu-marked tests", "pytest-gpu.txt", lines=15)
    page += section("Throughput, residual presets (resnet20, cifar)", "bench-residual.md")
    (out / "summary.md").write_text("\n".join(page))
    return 0


def pack(work: Path, out: Path) -> int:
    """The results so far, written under `work` by the other steps, into `out` as three
    files: summary.md, env.txt and ARCHIVE with every file of `work` (gpu_check.sh packs
    after each step, so that a check cut short still brings back what it had)."""
    try:
        summary(work)
    finally:  # the files themselves, also where the summary of them fails
        for name in ("summary.md", "env.txt"):
            if (work / name).exists():
                shutil.copyfile(work / name, out / name)
        partial = out / f"{ARCHIVE}.part"  # replaced whole: never half an archive, if the run is killed as it writes
        with tarfile.open(partial, "w:gz") as archive:
            for path in sorted(work.iterdir()):
                archive.add(path, arcname=path.name)
        partial.replace(out / ARCHIVE)
    return 0


STEPS = {"preflight": preflight, "parity": parity, "train": train, "products": products, "summary": summary,
         "pack": pack}

if __name__ == "__main__":
    name, folders = (sys.argv[1:2] or [""])[0], [Path(arg) for arg in sys.argv[2:]]
    if name not in STEPS or len(folders) != (2 if name == "pack" else 1):
        sys.exit(f"usage: python {sys.argv[0]} {{{','.join(STEPS)}}} OUT (pack: WORK OUT)")
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    try:
        sys.exit(STEPS[name](*folders))
    except Exception:  # noqa: BLE001  (the check goes on with the next step; the trace is the finding)
        traceback.print_exc()
        sys.exit(1)
