"""Time to a test accuracy on full MNIST: xpcnn (NumPy) and PyTorch, same recipe.

    python benchmarks/time_to_accuracy.py [--data-dir ../shared/data/mnist] [--target 0.99]

Both train the `lenet` preset from the same initial weights on the same batch order
(Adam, lr 2e-3, cosine over --epochs epochs, batch 128, same threads) and are evaluated
on the 10,000 test images every quarter epoch; the clock counts training only, not the
evaluations. The two run one after the other in this process.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import release_openblas  # noqa: E402  (before NumPy is imported)

OPENBLAS_WAS = release_openblas()


from common import blas_description, machine, torch_twin  # noqa: E402

import xpcnn  # noqa: E402
from xpcnn import presets  # noqa: E402
from xpcnn.datasets import batches, load_dataset, num_batches  # noqa: E402
from xpcnn.evaluation import evaluate  # noqa: E402
from xpcnn.optim import Adam, Cosine  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def run(library, data, epochs, batch_size, target, eval_every, threads):
    import torch

    model = presets.build("lenet")
    steps_per_epoch = num_batches(len(data.train), batch_size)
    total = epochs * steps_per_epoch
    if library == "xpcnn":
        optimizer = Adam(model, 2e-3, schedule=Cosine(total))
        loss_fn = xpcnn.SoftmaxCrossEntropy()

        def step(x, y):
            loss_fn.forward(model.forward(x), y)
            model.backward(loss_fn.backward(), input_grad=False)
            optimizer.step()

        def accuracy():
            return evaluate(model, data.test)["accuracy"]
    else:
        torch.manual_seed(0)
        net = torch_twin(model)
        optimizer = torch.optim.Adam(net.parameters(), 2e-3)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: Cosine(total)(s))
        test_x = torch.from_numpy(data.test.normalize(data.test.images))
        test_y = torch.from_numpy(data.test.labels)

        def step(x, y):
            net.train()
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y)).backward()
            optimizer.step()
            schedule.step()

        def accuracy():
            net.eval()
            with torch.no_grad():
                return float((net(test_x).argmax(1) == test_y).float().mean())

    clock, steps, history = 0.0, 0, []
    for epoch in range(epochs):
        for x, y in batches(data.train, batch_size, seed=0, epoch=epoch):
            start = time.perf_counter()
            step(x, y)
            clock += time.perf_counter() - start
            steps += 1
            if steps % eval_every == 0 or steps == total:
                acc = accuracy()
                history.append((steps / steps_per_epoch, clock, acc))
                if acc >= target:
                    return history
    return history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("XPCNN_DATA_DIR", str(DEFAULT_DATA)))
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()

    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    data = load_dataset("mnist", args.data_dir, download=False, allow_bundled=False)
    eval_every = max(1, num_batches(len(data.train), args.batch_size) // 4)
    print(f"# Time to {args.target:.1%} MNIST test accuracy, lenet, {time.strftime('%Y-%m-%d')}\n")
    print(f"- machine: {machine()}; threads {args.threads}; BLAS: {blas_description()}")
    overrides = ", ".join(f"{k}={v}" for k, v in OPENBLAS_WAS.items() if v) or "none"
    print(f"- OpenBLAS overrides before this run: {overrides} (unset here)")
    print(f"- data: {data.source}; recipe: Adam lr 2e-3, cosine over {args.epochs} epochs, "
          f"batch {args.batch_size}, seed 0\n")
    print("| library | reached | after epochs | training time | test accuracy then |")
    print("|---|---|---|---|---|")
    trails = []
    for library in ("xpcnn", "torch"):
        history = run(library, data, args.epochs, args.batch_size, args.target, eval_every, args.threads)
        epochs, clock, acc = history[-1]
        name = "xpcnn (NumPy)" if library == "xpcnn" else f"PyTorch {torch.__version__}"
        print(
            f"| {name} | {'yes' if acc >= args.target else 'no'} | {epochs:.2f} | {clock:.0f} s | {acc:.2%} |",
            flush=True,
        )
        trails.append(f"- {name}: " + ", ".join(f"{e:.2f} epochs {a:.2%} ({c:.0f} s)" for e, c, a in history))
    print("\nTest accuracy at each evaluation:\n")
    print("\n".join(trails))


if __name__ == "__main__":
    main()
