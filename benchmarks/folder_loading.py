"""A folder of pictures, from files to training: load_dataset("images", ...) the first
time, which decodes every picture and writes the cache, and again, from the cache, until
the Dataset is ready to train on; then the share of a training epoch that its batches
take (shuffling, reflected crops and flips, normalising, moving to the backend).

    python benchmarks/folder_loading.py [--count 50000] [--folder DIR] [--save]

Generates `--count` random 32x32 RGB PNGs in 10 class folders once (into `--folder`, by
default a new temporary folder; a folder generated before is reused), then times the
loads with a fresh, empty XDG_CACHE_HOME and a second time from that cache. The pictures
were just written (or read), so the system's page cache holds them either way: the times
are xpcnn's work, not the disk's. The epoch is the `compact` preset's on 2,000 of the
pictures with `--augment 4 --pad reflect --flip` (its recipe, the default worker
threads), against iterating its batches alone. Prints a markdown report with the machine
and its load average before and after, and exits 1 if over a target (30 s the first
time, 2 s from the cache for 50,000 pictures on 2 cores; batches under 5 % of an epoch).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import release_openblas  # noqa: E402  (before NumPy is imported)

OPENBLAS_WAS = release_openblas()

import numpy as np  # noqa: E402
from common import emit, machine  # noqa: E402

from xpcnn import presets  # noqa: E402
from xpcnn.datasets import Augment, batches, load_dataset  # noqa: E402
from xpcnn.train import Trainer  # noqa: E402

CLASSES = 10
SIZE = 32
TARGETS = {"first": 30.0, "cached": 2.0}  # seconds, for 50,000 pictures on 2 cores
EPOCH_IMAGES = 2_000
AUGMENT = Augment(4, "reflect", flip=True)
DATA_SHARE = 0.05  # of an epoch, at most
DONE = ".generated"  # marks a complete folder; load_folder ignores names starting with "."


def generate(folder: Path, count: int) -> float:
    """Write `count` random SIZExSIZE RGB PNGs into CLASSES class folders of `folder`,
    unless a complete set of that count is there; returns the seconds it took."""
    from PIL import Image

    marker = folder / DONE
    if marker.is_file() and marker.read_text().strip() == str(count):
        return 0.0
    start, rng = time.perf_counter(), np.random.default_rng(0)
    for label in range(CLASSES):
        (folder / f"class{label}").mkdir(parents=True, exist_ok=True)
    for index in range(count):
        pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"class{index % CLASSES}" / f"{index:06d}.png")
    marker.write_text(f"{count}\n")
    return time.perf_counter() - start


def timed_loads(folder: Path) -> tuple[dict[str, float], object]:
    """Seconds of load_dataset until the Dataset is ready, with an empty cache, then from
    it; and the training split."""
    seconds, said = {}, []
    with tempfile.TemporaryDirectory(prefix="xpcnn-cache-") as cache:
        os.environ["XDG_CACHE_HOME"] = cache
        for name in ("first", "cached"):
            said.clear()
            start = time.perf_counter()
            data = load_dataset("images", folder, image_size=SIZE, log=said.append)
            seconds[name] = time.perf_counter() - start
            assert any("read from the cache" in line for line in said) == (name == "cached"), said
    return seconds, data.train


def epoch_share(train: object) -> tuple[float, float]:
    """(seconds of one training epoch of `compact` on EPOCH_IMAGES pictures, seconds of
    iterating its batches alone): the best of three of each."""
    part = train.sample(EPOCH_IMAGES)
    recipe = presets.recipe("compact").replace(augment=AUGMENT.pixels, pad=AUGMENT.pad, flip=AUGMENT.flip)
    trainer = Trainer.for_preset("compact", recipe, len(part), input_shape=part.input_shape,
                                 classes=len(part.spec.classes), progress=False, log=lambda line: None)
    epochs, feeding = [], []
    for _ in range(3):
        trainer.fit(part, trainer.state.epoch + 1)
        epochs.append(trainer.history[-1]["seconds"])
        start = time.perf_counter()
        for _ in batches(part, trainer.batch_size, seed=0, epoch=len(epochs), augment=AUGMENT):
            pass
        feeding.append(time.perf_counter() - start)
    return min(epochs), min(feeding)


def report(count: int, folder: Path, seconds: dict[str, float], loads: tuple[float, float], made: float,
           epoch: tuple[float, float]) -> str:
    rows = [f"| {what} | {seconds[name]:.2f} | {TARGETS[name]:.0f} | {count / seconds[name]:,.0f} |"
            for name, what in (("first", "first time: decode, cache written"), ("cached", "from the cache"))]
    generated = f"generated in {made:.1f} s" if made else "generated before"
    return "\n".join([
        "# Loading a folder of pictures (benchmarks/folder_loading.py)", "",
        f"- machine: {machine()}",
        f"- pictures: {count:,} random {SIZE}x{SIZE} RGB PNGs in {CLASSES} class folders, {folder} ({generated})",
        f"- load average (1 min) before / after: {loads[0]:.2f} / {loads[1]:.2f}", "",
        "| load_dataset(\"images\", ...) until the Dataset is ready | seconds | target (s) | pictures/s |",
        "|---|---|---|---|", *rows, "",
        f"One epoch of `compact` on {EPOCH_IMAGES:,} of them ({AUGMENT}), best of 3: {epoch[0]:.2f} s; its "
        f"batches alone: {epoch[1]:.3f} s, {epoch[1] / epoch[0]:.1%} of the epoch (target: under {DATA_SHARE:.0%})."])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000, help="pictures to generate and read (50,000)")
    parser.add_argument("--folder", type=Path, help="where the pictures are (generated there once)")
    parser.add_argument("--save", action="store_true", help="also write the report under benchmarks/results/")
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="xpcnn-folder-bench-"))
    made = generate(folder, args.count)
    before = os.getloadavg()[0]
    seconds, train = timed_loads(folder)
    epoch = epoch_share(train)
    text = report(args.count, folder, seconds, (before, os.getloadavg()[0]), made, epoch)
    emit(text, "folder-loading", args.save)
    over = [name for name in TARGETS if seconds[name] > TARGETS[name]]
    over += ["batches' share of an epoch"] * (epoch[1] / epoch[0] > DATA_SHARE)
    if over:
        print(f"over the target: {', '.join(over)}", file=sys.stderr)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
