"""xpcnn against PyTorch on the same machine, same network, same threads, side by side.

    python benchmarks/bench.py [--repeats 7] [--threads N] [--gpu] [--save]

Prints one markdown report: training throughput (forward, loss, backward, update) at
batch 64 and 256 (128 and 512 for the CIFAR-sized nets) and inference throughput at
batch 1000 for the `tutorial`, `lenet` and `fast` presets (--presets: any preset, and
`cifar-shaped`, five 3x3 convolutions of 32 to 128 channels with batch norm on 3x32x32
images), xpcnn, xpcnn on torch tensors and PyTorch timed alternately
within each repeat so that their ratio holds on a noisy machine (medians, with min and
max); the share of the machine's own
float32 matmul peak that the training step reaches; peak resident memory of a lenet
batch-256 training process for each library; on the CPU, the training loop as `xpcnn
train` runs it, with worker threads (benchmarks/workers.py's table: the rows above time
one model's bare step); a per-layer time breakdown of xpcnn's step;
threads, BLAS and kernel. OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are unset for this
process (their old values are reported). --save writes the report under
benchmarks/results/. --gpu compares CuPy with PyTorch on CUDA (batch 64, 256 and 1024) and
counts the kernels and launch calls of each contender's training step for every preset at
batch 256 (xpcnn on CuPy also on its standard path, its fast paths off).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import release_openblas  # noqa: E402  (must run before NumPy is imported)

OPENBLAS_WAS = release_openblas()

import numpy as np  # noqa: E402
from common import blas_description, keep_freed_memory, machine, timed, torch_twin  # noqa: E402

import xpcnn  # noqa: E402
from xpcnn import backend, presets  # noqa: E402
from xpcnn.hooks import TimerHook  # noqa: E402
from xpcnn.optim import SGD, Adam  # noqa: E402
from xpcnn.train.step import TrainingStep  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def xpcnn_step(model, optimizer, x, y, sync):
    loss = xpcnn.SoftmaxCrossEntropy(check_labels=False)  # as in the training loop

    def step():
        loss.forward(model.forward(x), y)
        model.backward(loss.backward(), input_grad=False)  # as torch: no gradient for the data
        optimizer.step()
        sync()  # a GPU call returns before its kernels finish: time the work, not the launches

    return step


def xpcnn_graph_step(model, optimizer, x, y, sync):
    """xpcnn's step as the trainer runs it on a GPU: both halves replayed as CUDA graphs,
    the loss brought to the host between them (to check it is finite)."""
    steps = TrainingStep(model, optimizer, xpcnn.SoftmaxCrossEntropy(check_labels=False), graphs=True, log=print)

    def step():
        backend.to_numpy(steps.compute(x, y))
        steps.update()
        sync()

    return step


def torch_step(net, optimizer, x, y, sync):
    import torch

    def step():
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
        sync()

    return step


def make_optimizers(preset, model, net):
    """The preset's recipe optimizer in both libraries (SGD with its momentum, Nesterov and
    weight decay), or Adam at 1e-3."""
    import torch

    recipe = presets.recipe(preset) if preset in presets.PRESETS else presets.recipe("resnet20")
    if recipe.optimizer == "sgd":
        settings = {"momentum": recipe.momentum, "nesterov": recipe.nesterov, "weight_decay": recipe.weight_decay}
        return SGD(model, recipe.lr, **settings), torch.optim.SGD(net.parameters(), recipe.lr, **settings)
    return Adam(model, 1e-3), torch.optim.Adam(net.parameters(), 1e-3)


def cifar_shaped(seed: int = 0) -> xpcnn.Sequential:
    """The CIFAR-shaped net of the residual issue: five 3x3 convolutions of 32 to 128
    channels with batch norm and ReLU, three max pools, global pooling, 10 classes."""
    rng = np.random.default_rng(seed)

    def block(inputs, outputs):
        return [xpcnn.Conv2D(inputs, outputs, 3, padding=1, bias=False, rng=rng), xpcnn.BatchNorm2D(outputs),
                xpcnn.ReLU()]

    return xpcnn.Sequential([*block(3, 32), *block(32, 32), xpcnn.MaxPool2D(2), *block(32, 64), xpcnn.MaxPool2D(2),
                             *block(64, 128), xpcnn.MaxPool2D(2), *block(128, 128), xpcnn.GlobalAvgPool2D(),
                             xpcnn.Dense(128, 10, rng=rng)])


def build(preset):
    return cifar_shaped() if preset == "cifar-shaped" else presets.build(preset)


def input_shape(preset):
    return (3, 32, 32) if preset == "cifar-shaped" else presets.DEFAULT_SHAPES[preset]


def batch_sizes_for(preset, gpu_sizes):
    if gpu_sizes:
        return gpu_sizes
    return (128, 512) if input_shape(preset)[1:] == (32, 32) else (64, 256)


def side_by_side(contenders, images, repeats, steps):
    """Throughputs (images/s) of each contender (name -> step function), alternating
    within each repeat so that a noisy machine slows all of them alike."""
    for _ in range(2):  # warm-up: allocations, kernels, caches
        for step in contenders.values():
            step()
    speeds = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, step in contenders.items():
            speeds[name].append(images * steps / timed(step, steps))
    return speeds


def ratios(speeds, mine, theirs="PyTorch"):
    return [a / b for a, b in zip(speeds[mine], speeds[theirs])]


def fmt(values):
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def matmul_peak(xp, device, sync, size=2048, repeats=5):
    a = backend.to_backend(np.random.default_rng(0).standard_normal((size, size)), device[0], device[1], "float32")
    b = backend.to_backend(np.random.default_rng(1).standard_normal((size, size)), device[0], device[1], "float32")

    def product():
        a @ b
        sync()

    product()
    best = min(timed(product, 1) for _ in range(repeats))
    return 2.0 * size**3 / best


def layer_breakdown(step, model, repeats, sync):
    """Median milliseconds of each layer's forward and backward within the training step
    `step` (the one timed above), measured by a TimerHook; the first call is warm-up.
    With a hook attached every layer runs alone: a fused block's three layers show what
    they cost unfused."""
    timer = TimerHook(sync)
    with model.hooked(timer):
        for _ in range(repeats + 1):
            step()
    return timer.medians(skip=1)


MEMORY_CHILD = """
import json, sys
sys.path.insert(0, {bench!r})
from common import release_openblas
release_openblas()
def resident_mib():
    import os
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
import numpy as np
from threadpoolctl import threadpool_limits
threadpool_limits({threads})
import xpcnn
from xpcnn import presets
if {library!r} == "torch":  # only the library measured is imported
    import torch
    torch.set_num_threads({threads})
    from common import torch_twin
rng = np.random.default_rng(0)
x = rng.standard_normal((256, 1, 28, 28)).astype(np.float32); y = rng.integers(0, 10, 256)
model = presets.build("lenet")
# A forward and backward of 2 images first, for both libraries: what each builds on its
# first step (numba's compiled kernels, oneDNN's primitives) is setup, not training memory.
if {library!r} == "xpcnn":
    from xpcnn.optim import Adam
    loss = xpcnn.SoftmaxCrossEntropy()
    loss.forward(model.forward(x[:2]), y[:2]); model.backward(loss.backward(), input_grad=False)
    before = resident_mib()
    opt = Adam(model, 1e-3)
    for _ in range(5):
        loss.forward(model.forward(x), y); model.backward(loss.backward(), input_grad=False); opt.step()
else:
    net = torch_twin(model)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    torch.nn.functional.cross_entropy(net(xt[:2]), yt[:2]).backward()
    before = resident_mib()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(5):
        opt.zero_grad(); torch.nn.functional.cross_entropy(net(xt), yt).backward(); opt.step()
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the (large) parent across fork and exec.
with open("/proc/self/status") as status:
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
print(json.dumps({{"before_mib": before, "peak_mib": peak}}))
"""


def peak_memory(library, threads):
    """(resident MiB after imports and setup, peak MiB) of a fresh process training lenet at batch 256."""
    code = MEMORY_CHILD.format(bench=str(Path(__file__).resolve().parent), threads=threads, library=library)
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["before_mib"], result["peak_mib"]


def device_setup(gpu: bool):
    """(xpcnn target, torch device, training batch sizes, sync, device description). On a
    GPU, PyTorch's TF32 is turned off: CuPy computes in full float32, and so must the
    reference."""
    import torch

    if not gpu:
        return ("numpy", None), "cpu", None, lambda: None, "CPU"
    import cupy

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    def sync():
        cupy.cuda.Device().synchronize()
        torch.cuda.synchronize()

    versions = (f"CuPy {cupy.__version__}, torch {torch.__version__}, CUDA {torch.version.cuda}; TF32 off "
                f"(matmul {torch.backends.cuda.matmul.allow_tf32}, cuDNN {torch.backends.cudnn.allow_tf32})")
    return ("cupy", None), "cuda", (64, 256, 1024), sync, f"{torch.cuda.get_device_name()} ({versions})"


CONTENDERS = ("xpcnn", "xpcnn on torch", "PyTorch")
GRAPH = "xpcnn on torch, CUDA graphs"  # on a GPU: the trainer's step there
CUPY_GRAPH = "xpcnn, CUDA graphs"  # on CuPy, as `xpcnn train --cuda-graphs` runs it
RECORDED = {GRAPH: ("torch", "cuda"), CUPY_GRAPH: ("cupy", None)}  # the recorded contenders, and where


def columns(gpu):
    return (*CONTENDERS, *RECORDED) if gpu else CONTENDERS


def ratio_row(preset, batch, mode, speeds, gpu, share=""):
    cells = " | ".join(fmt(speeds[name]) if name in speeds else "" for name in columns(gpu))
    ratio = ""
    for name in ("xpcnn", *RECORDED) if gpu else ("xpcnn",):
        mine = ratios(speeds, name) if name in speeds else []
        ratio += f"{statistics.median(mine):.2f} ({min(mine):.2f}-{max(mine):.2f}) | " if mine else " | "
    return f"| {preset} | {batch} | {mode} | {cells} | {ratio}{share} |"


def header_lines(args, device_name):
    import torch

    overrides = ", ".join(f"{k}={v}" for k, v in OPENBLAS_WAS.items() if v) or "none"
    return [
        f"# xpcnn vs PyTorch, {'GPU' if args.gpu else 'CPU'}, {time.strftime('%Y-%m-%d')}",
        "",
        f"- machine: {machine()}; device: {device_name}",
        f"- threads: {args.threads} (torch.set_num_threads and threadpoolctl); BLAS: {blas_description()}",
        f"- OpenBLAS overrides before this run: {overrides} (unset for this process)",
        keep_freed_memory(),
        f"- xpcnn {xpcnn.__version__}, NumPy {np.__version__}, PyTorch {torch.__version__}; float32; "
        f"{args.repeats} alternating repeats, median (min-max); every timed step ends in a device synchronisation",
        "- xpcnn runs on NumPy (CuPy with --gpu); 'xpcnn on torch' is the same xpcnn code on PyTorch tensors",
        "",
        "## Throughput (images/s)",
        "",
        f"| preset | batch | mode | {' | '.join(columns(args.gpu))} | xpcnn / PyTorch | "
        + ("on torch with CUDA graphs / PyTorch | with CUDA graphs / PyTorch | " if args.gpu else "")
        + "share of matmul peak (xpcnn / torch) |",
        "|---|---|---|" + "---|" * (len(columns(args.gpu)) + (4 if args.gpu else 2)),
    ]


def training_contenders(preset, models, net, batch, setup, rng):
    """name -> one training step at `batch`, all three on the same images and labels."""
    import torch

    ours_target, torch_device, _, sync, _ = setup
    x_host, y_host = rng.standard_normal((batch, *input_shape(preset))).astype(np.float32), rng.integers(0, 10, batch)
    steps = {}
    for name, target in (("xpcnn", ours_target), ("xpcnn on torch", ("torch", torch_device))):
        x, y = backend.to_backend(x_host, *target), backend.to_backend(y_host, *target)
        steps[name] = xpcnn_step(models[name], make_optimizers(preset, models[name], net)[0], x, y, sync)
    for name, target in RECORDED.items():
        if name in models:
            x, y = backend.to_backend(x_host, *target), backend.to_backend(y_host, *target)
            steps[name] = xpcnn_graph_step(models[name], make_optimizers(preset, models[name], net)[0], x, y, sync)
    xt, yt = torch.from_numpy(x_host).to(torch_device), torch.from_numpy(y_host).to(torch_device)
    steps["PyTorch"] = torch_step(net, make_optimizers(preset, models["xpcnn"], net)[1], xt, yt, sync)
    return steps


def inference_contenders(preset, models, net, size, setup, rng):
    import torch

    ours_target, torch_device, _, sync, _ = setup
    x_host = rng.standard_normal((size, *input_shape(preset))).astype(np.float32)
    inputs = {"xpcnn": backend.to_backend(x_host, *ours_target),
              "xpcnn on torch": backend.to_backend(x_host, "torch", torch_device)}
    xt = torch.from_numpy(x_host).to(torch_device)
    net.eval()

    def ours(name):
        def infer():
            models[name].forward(inputs[name], training=False)
            sync()
        return infer

    def theirs():
        with torch.no_grad():
            net(xt)
        sync()

    return {"xpcnn": ours("xpcnn"), "xpcnn on torch": ours("xpcnn on torch"), "PyTorch": theirs}


def preset_rows(preset, args, setup, peak, rng, breakdowns, kernels):
    """Training rows at each batch size and one inference row; fills breakdowns[preset]
    and, on a GPU, kernels[preset] (each contender's kernels per step at batch 256)."""
    ours_target, torch_device, gpu_sizes, sync, _ = setup
    batch_sizes = batch_sizes_for(preset, gpu_sizes)
    models = {"xpcnn": build(preset).to(*ours_target), "xpcnn on torch": build(preset).to("torch", torch_device)}
    if args.gpu:
        models.update({name: build(preset).to(*target) for name, target in RECORDED.items()})
    net = torch_twin(models["xpcnn"], torch_device)
    flops = models["xpcnn"].training_flops(input_shape(preset))
    rows = []
    for batch in batch_sizes:
        steps = training_contenders(preset, models, net, batch, setup, rng)
        speeds = side_by_side(steps, batch, args.repeats, max(2, 2048 // batch))
        share = " / ".join(f"{statistics.median(speeds[name]) * flops / peak:.0%}" for name in ("xpcnn", "PyTorch"))
        rows.append(ratio_row(preset, batch, "train", speeds, args.gpu, share))
        if args.gpu and batch == KERNELS_BATCH:
            kernels[preset] = step_kernels(steps)
        if batch == batch_sizes[-1]:
            breakdowns[preset] = batch, layer_breakdown(steps["xpcnn"], models["xpcnn"], args.repeats, sync)
    size = 4096 if args.gpu else 1000
    speeds = side_by_side(inference_contenders(preset, models, net, size, setup, rng), size, args.repeats, 2)
    rows.append(ratio_row(preset, size, "inference", speeds, args.gpu))
    return rows


def gpu_memory_lines(setup, rng):
    """Peak GPU memory of a lenet batch-256 training step: CuPy's pool (what xpcnn holds)
    and torch's peak allocation (xpcnn on torch with its CUDA graphs, and PyTorch), each
    measured alone."""
    import cupy
    import torch

    pool = cupy.get_default_memory_pool()
    pool.free_all_blocks()
    models = {"xpcnn": presets.build("lenet").to(*setup[0])}
    models.update({name: presets.build("lenet").to("torch", "cuda") for name in ("xpcnn on torch", GRAPH)})
    net = torch_twin(models["xpcnn"], "cuda")
    steps = training_contenders("lenet", models, net, 256, setup, rng)
    peaks = {}
    for name in ("xpcnn", "PyTorch", GRAPH):  # torch's peaks also count the other's weights: a few MiB
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        for _ in range(3):  # the recorded step records at its second call and replays at its third
            steps[name]()
        peaks[name] = (pool.total_bytes() if name == "xpcnn" else torch.cuda.max_memory_allocated()) / 2**20
    return ["## Peak GPU memory, lenet, batch 256, 3 training steps", "",
            "| | xpcnn (CuPy memory pool) | xpcnn on torch, CUDA graphs (max allocated) | PyTorch (max allocated) |",
            "|---|---|---|---|", f"| MiB | {peaks['xpcnn']:,.0f} | {peaks[GRAPH]:,.0f} | {peaks['PyTorch']:,.0f} |", ""]


KERNELS_BATCH = 256


def kernel_counts(step):
    """(kernels run, launch calls) of one call of `step`, read by PyTorch's profiler
    (CUPTI), which sees CuPy's kernels too; memory copies and sets count as kernels run. A
    replayed CUDA graph runs its kernels with one launch call."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiler:
        step()
    events = profiler.events()
    return (sum(1 for e in events if str(e.device_type).endswith("CUDA")),
            sum(1 for e in events if "LaunchKernel" in e.name or "GraphLaunch" in e.name))


def step_kernels(steps):
    """name -> (kernels, launches) of each contender's training step, or why not; xpcnn
    also on its standard path (XPCNN_STANDARD_PATH=1: CuPy's array operations alone)."""
    counts = {}
    for name, step in steps.items():
        try:
            counts[name] = kernel_counts(step)
            if name == "xpcnn":
                os.environ["XPCNN_STANDARD_PATH"] = "1"
                try:
                    step()  # its kernels compiled first
                    counts["xpcnn, standard path"] = kernel_counts(step)
                finally:
                    del os.environ["XPCNN_STANDARD_PATH"]
        except Exception as exc:  # noqa: BLE001  (the profiler is optional to the report)
            counts[name] = f"not measured: {type(exc).__name__}: {exc}"
    return counts


def kernel_lines(kernels):
    """The table of step_kernels' counts, preset by preset."""
    lines = [f"## Kernels per training step, batch {KERNELS_BATCH} (PyTorch profiler, CUPTI)", "",
             "| preset | | kernels run | launch calls (kernel + graph) |", "|---|---|---|---|"]
    for preset, counts in kernels.items():
        for name, count in counts.items():
            cells = f"{count[0]} | {count[1]}" if isinstance(count, tuple) else f"{count} |"
            lines.append(f"| {preset} | {name} | {cells} |")
    return [*lines, ""]


def memory_lines(threads):
    (ours_base, ours_peak), (torch_base, torch_peak) = peak_memory("xpcnn", threads), peak_memory("torch", threads)
    ours_train, torch_train = ours_peak - ours_base, torch_peak - torch_base
    return [
        "## Peak resident memory, lenet, batch 256, 5 Adam steps (a fresh process each, importing only its library)",
        "",
        "| | xpcnn | PyTorch | ratio |",
        "|---|---|---|---|",
        f"| peak of the process | {ours_peak:,.0f} MiB | {torch_peak:,.0f} MiB | {ours_peak / torch_peak:.2f} |",
        f"| training (peak minus resident after imports, setup and a first step of 2 images) "
        f"| {ours_train:,.0f} MiB "
        f"| {torch_train:,.0f} MiB | {ours_train / torch_train:.2f} |",
        "",
    ]


def loop_lines(args):
    """The training loop as `xpcnn train` runs it (benchmarks/workers.py's table): the
    rows above time one model's bare step, whose element-wise work runs on one thread."""
    import workers

    digits = [name for name in args.presets.split(",") if name in presets.PRESETS
              and presets.DEFAULT_SHAPES[name] == presets.DIGITS]  # workers.py trains on digit-shaped data
    if not digits:
        return []
    table = workers.table_lines(digits, [64, 256], 4096, max(3, args.repeats // 2))
    return [
        "## Training loop, as `xpcnn train` runs it (images/s; benchmarks/workers.py)",
        "",
        "xpcnn's Trainer with 1 and 2 worker threads (`xpcnn train` uses 2 for lenet and fast on NumPy, 1 for "
        "tutorial) against a PyTorch loop on the same batches, data included, one epoch of 4,096 images per "
        f"repeat, {max(3, args.repeats // 2)} repeats in rotating order, median (min-max):",
        "",
        *table,
        "",
    ]


def breakdown_lines(preset, batch, rows):
    total = sum(f + b for i, _, f, b in rows if isinstance(i, int))  # a block's time includes its layers'
    rows = [(i, f"{name.split('(')[0]} block (its layers below)" if name.startswith("Residual(") else name, f, b)
            for i, name, f, b in rows]
    lines = [
        f"## xpcnn per-layer time, {preset}, batch {batch} (median ms; total {total:.1f} ms without the update)",
        "",
    ]
    if any(name.startswith("BatchNorm2D") for _, name, _, _ in rows):
        lines += ["Timed with a hook around each layer, which runs every layer alone: batch norm, pooling and ReLU "
                  "show their cost unfused (the step above runs them as one, `xpcnn.layers.fused`).", ""]
    lines += [
        "| # | layer | forward | backward | share |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {i} | `{name}` | {f:.2f} | {b:.2f} | {(f + b) / total:.0%} |" for i, name, f, b in rows]
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--gpu", action="store_true", help="CuPy vs PyTorch on CUDA")
    parser.add_argument("--save", action="store_true", help="write the report to benchmarks/results/")
    parser.add_argument("--presets", default="tutorial,lenet,fast")
    args = parser.parse_args()

    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    setup = device_setup(args.gpu)
    ours_target, _, _, sync, device_name = setup
    lines = []

    def report(more):  # printed as they come: a run cut short by a time-out keeps its rows
        print("\n".join(more), flush=True)
        lines.extend(more)

    report(header_lines(args, device_name))
    peak = matmul_peak(backend.namespace(ours_target[0]), ours_target, sync)
    rng = np.random.default_rng(0)
    breakdowns, kernels = {}, {}
    for preset in args.presets.split(","):
        report(preset_rows(preset, args, setup, peak, rng, breakdowns, kernels))
        if preset in kernels:  # at once too: a run cut short by a time-out keeps the measure
            counts = "; ".join(f"{name} {count[0]} ({count[1]} launch calls)" if isinstance(count, tuple) else
                               f"{name} {count}" for name, count in kernels[preset].items())
            print(f"kernels per {preset} training step, batch {KERNELS_BATCH}: {counts}", file=sys.stderr, flush=True)
    rest = [
        "",
        f"Matmul peak (float32, 2048^3 `xp.matmul`, best of 5): {peak / 1e9:,.1f} GFLOP/s. Share of peak = "
        "training images/s x FLOPs per training image (forward, input and weight gradients of convolutions and "
        "dense layers) / peak.",
        "",
    ]
    rest += gpu_memory_lines(setup, rng) + kernel_lines(kernels) if args.gpu else (
        memory_lines(args.threads) + loop_lines(args))
    for preset, (batch, rows) in breakdowns.items():
        rest += breakdown_lines(preset, batch, rows)
    report(rest)
    if args.save:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"bench-{'gpu' if args.gpu else 'cpu'}-{time.strftime('%Y%m%d')}.md"
        path.write_text("\n".join(lines) + "\n")
        print(f"\nsaved to {path}")

if __name__ == "__main__":
    main()
