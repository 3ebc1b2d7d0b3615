"""Hostile inputs, crashes and numerical faults: nothing bad gets in, nothing is lost.

Fuzzing uses hypothesis here and atheris (coverage-guided, bounded) in a subprocess;
crash tests SIGKILL real `xpcnn` processes at random points.
"""

from __future__ import annotations

import gzip
import http.server
import io
import json
import os
import random
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import xpcnn
from xpcnn import presets
from xpcnn.anomaly import AnomalyHook, NonFiniteError
from xpcnn.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from xpcnn.datasets import DataFile, download_file, load_verified
from xpcnn.datasets.files import find_file
from xpcnn.datasets.idx import IDXError, read_idx
from xpcnn.images import ImageError, read_image
from xpcnn.optim import SGD
from xpcnn.training import Trainer, TrainingDiverged

ROOT = Path(__file__).resolve().parents[1]
FUZZ_LIMIT = 1 << 24


def good_idx() -> bytes:
    buffer = io.BytesIO()
    array = (np.arange(2 * 5 * 4) % 251).astype(np.uint8).reshape(2, 5, 4)
    buffer.write(bytes([0, 0, 8, 3]) + np.asarray(array.shape, ">u4").tobytes() + array.tobytes())
    return buffer.getvalue()


def small_checkpoint(tmp_path: Path) -> bytes:
    net = xpcnn.Sequential([xpcnn.Conv2D(1, 2, 3, rng=0), xpcnn.ReLU(), xpcnn.Flatten(), xpcnn.Dense(2 * 4 * 4, 3, rng=0)])
    save_checkpoint(tmp_path / "seed.npz", net, trainer={"epoch": 0})
    return (tmp_path / "seed.npz").read_bytes()


def mutate(data: bytes, rng: random.Random, edits: int) -> bytes:
    """Flip, insert, delete bytes, or cut the tail."""
    data = bytearray(data)
    for _ in range(edits):
        choice = rng.randrange(4)
        if choice == 0 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif choice == 1:
            data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
        elif choice == 2 and data:
            del data[rng.randrange(len(data))]
        elif data:
            del data[rng.randrange(len(data)):]
    return bytes(data)


# -- readers under hypothesis ---------------------------------------------------------------


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_idx_random_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("idx") / "f"
    for content in (data, gzip.compress(data)):
        path.write_bytes(content)
        try:
            array = read_idx(path, max_bytes=FUZZ_LIMIT)
        except IDXError:
            continue
        # Accepted: the array is exactly what the header announced.
        assert array.size * array.itemsize == len(content if content is data else data) - 4 - 4 * array.ndim


@settings(max_examples=300)
@given(st.randoms(use_true_random=False), st.integers(1, 8))
def test_idx_mutations_and_lying_headers(tmp_path_factory, rng, edits):
    path = tmp_path_factory.mktemp("idx") / "f"
    data = mutate(good_idx(), rng, edits)
    if rng.random() < 0.3 and len(data) >= 8:  # a dimension that overflows or asks for terabytes
        data = data[:4] + struct.pack(">I", rng.choice([2**32 - 1, 2**31, 10**9])) + data[8:]
    path.write_bytes(data)
    try:
        read_idx(path, max_bytes=FUZZ_LIMIT)
    except IDXError:
        pass


@settings(max_examples=150)
@given(st.randoms(use_true_random=False), st.integers(1, 6))
def test_checkpoint_mutations(tmp_path_factory, rng, edits):
    folder = tmp_path_factory.mktemp("ckpt")
    data = mutate(small_checkpoint(folder), rng, edits)
    (folder / "m.npz").write_bytes(data)
    try:
        checkpoint = load_checkpoint(folder / "m.npz")
    except CheckpointError:
        return
    x = np.zeros((1, 1, 6, 6), np.float32)
    assert checkpoint.model.forward(x).shape == (1, 3)  # accepted means usable


@settings(max_examples=150)
@given(st.randoms(use_true_random=False), st.integers(1, 6))
def test_npy_image_mutations(tmp_path_factory, rng, edits):
    folder = tmp_path_factory.mktemp("npy")
    buffer = io.BytesIO()
    np.save(buffer, np.arange(784, dtype=np.uint8).reshape(28, 28))
    (folder / "m.npy").write_bytes(mutate(buffer.getvalue(), rng, edits))
    try:
        pixels = read_image(folder / "m.npy")
    except ImageError:
        return
    assert pixels.shape == (28, 28) and pixels.dtype == np.uint8


@pytest.mark.skipif(sys.platform != "linux", reason="atheris is built for Linux")
def test_atheris_fuzzes_the_readers(tmp_path):
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "idx").write_bytes(good_idx())
    (corpus / "checkpoint").write_bytes(small_checkpoint(tmp_path))
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((28, 28), np.uint8))
    (corpus / "npy").write_bytes(buffer.getvalue())
    runs = 4000 if os.environ.get("CI") else 20000
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "fuzz_readers.py"), str(corpus), f"-runs={runs}",
                             "-rss_limit_mb=4096", "-timeout=20", f"-artifact_prefix={tmp_path}/"],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    done = re.search(r"Done (\d+) runs", result.stderr)
    assert done and int(done.group(1)) == runs
    print(f"atheris: {done.group(0)}")


# -- untrusted checkpoints and images ------------------------------------------------------------


def test_archive_member_paths_cannot_escape(tmp_path):
    good = tmp_path / "good.npz"
    good.write_bytes(small_checkpoint(tmp_path))
    evil = tmp_path / "evil.npz"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(evil, "w") as target:
        for item in source.infolist():
            target.writestr(item.filename, source.read(item))
        target.writestr("../../escaped.npy", source.read("param/0.weight.npy"))
    before = set(tmp_path.parent.rglob("escaped*"))
    with pytest.raises(CheckpointError):
        load_checkpoint(evil)
    assert set(tmp_path.parent.rglob("escaped*")) == before  # nothing is ever extracted


@pytest.mark.parametrize("config", [
    [{"type": "Dense", "config": {"in_features": 10**9, "out_features": 10**6}}],
    [{"type": "Conv2D", "config": {"in_channels": 2**40, "out_channels": 2**40, "kernel_size": 3}}],
    [{"type": "Conv2D", "config": {"in_channels": -3, "out_channels": 8, "kernel_size": 3}}],
    [{"type": "Dense", "config": {"in_features": 3, "out_features": 2, "rng": {"__class__": "x"}}}],
    [{"type": "Dense"}],
    {"not": "a list"},
])
def test_hostile_architectures_are_refused_before_allocating(tmp_path, config):
    path = tmp_path / "c.npz"
    path.write_bytes(small_checkpoint(tmp_path))
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(arrays["__meta__"].tobytes())
    meta["architecture"] = config
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(path, **arrays)
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="bad architecture"):
        load_checkpoint(path)
    assert time.perf_counter() - start < 5


def test_deeply_nested_json_is_refused(tmp_path):
    path = tmp_path / "c.npz"
    np.savez(path, __meta__=np.frombuffer(b"[" * 100_000 + b"]" * 100_000, np.uint8))
    with pytest.raises(CheckpointError, match="JSON"):
        load_checkpoint(path)


def png_claiming(width: int, height: int) -> bytes:
    """A tiny real PNG whose header claims width x height (CRC fixed), data for 1x1."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    return bytes(data)


def test_decompression_bomb_images_are_refused_from_the_header(tmp_path):
    pytest.importorskip("PIL")
    (tmp_path / "bomb.png").write_bytes(png_claiming(60_000, 60_000))
    start = time.perf_counter()
    with pytest.raises(ImageError, match="over the limit"):
        read_image(tmp_path / "bomb.png")
    assert time.perf_counter() - start < 2
    (tmp_path / "cut.png").write_bytes(png_claiming(28, 28)[:40])
    with pytest.raises(ImageError, match="cut.png"):
        read_image(tmp_path / "cut.png")
    (tmp_path / "lying.npy").write_bytes(b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (100000, 100000), }".ljust(128, b" ") + b"\n")
    with pytest.raises(ImageError, match=r"shape \(28, 28\)"):
        read_image(tmp_path / "lying.npy")


# -- crashes ---------------------------------------------------------------------------------


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "xpcnn.cli", *args]


def train_args(out: Path) -> list[str]:
    return ["train", "--no-download", "--limit", "1280", "--epochs", "2", "--out", str(out), "--no-progress",
            "--no-plots", "--checkpoint-every", "1", "--model", "lenet", "--batch-size", "128", "--augment", "1"]


STEPS = 2 * 1280 // 128


@pytest.fixture
def quiet_env(tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), PYTHONWARNINGS="ignore")
    env.pop("XPCNN_DATA_DIR", None)
    return env


def saved_steps(run: Path) -> int:
    try:
        return load_checkpoint(run / "checkpoint.npz").optimizer["steps"]
    except FileNotFoundError:
        return 0


def check_run_folder(run: Path) -> None:
    """The checkpoint loads, and the metrics file is its history or one epoch behind."""
    if not (run / "checkpoint.npz").exists():
        return
    history = load_checkpoint(run / "checkpoint.npz").trainer["history"]
    metrics = run / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    assert rows == history[: len(rows)] and len(rows) >= len(history) - 1


def test_sigkill_during_training_and_resume_equals_an_uninterrupted_run(tmp_path, quiet_env):
    """Kill a real run at random moments (after a random number of steps, plus a random
    fraction of a step: inside steps and inside checkpoint writes), resume each time."""
    reference = tmp_path / "reference"
    subprocess.run(cli(*train_args(reference)), env=quiet_env, check=True, capture_output=True, timeout=600)
    run = tmp_path / "run"
    rng = random.Random(0)
    targets = sorted(rng.sample(range(1, STEPS), 6))
    for target in targets:
        resume = ["--resume"] if (run / "checkpoint.npz").exists() else []
        process = subprocess.Popen(cli(*train_args(run), *resume), env=quiet_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while saved_steps(run) < target and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))
        process.send_signal(signal.SIGKILL)
        process.wait()
        check_run_folder(run)
    finish = subprocess.run(cli(*train_args(run), "--resume"), env=quiet_env, capture_output=True, text=True, timeout=600)
    assert finish.returncode == 0, finish.stderr[-2000:]
    check_run_folder(run)
    final, expected = load_checkpoint(run / "checkpoint.npz"), load_checkpoint(reference / "checkpoint.npz")
    for name, value in expected.model.params.items():
        np.testing.assert_array_equal(final.model.params[name], value, err_msg=name)
    for name, value in expected.model.buffers.items():
        np.testing.assert_array_equal(final.model.buffers[name], value, err_msg=name)
    assert final.optimizer["steps"] == expected.optimizer["steps"] == STEPS
    print(f"{len(targets)} SIGKILLs after steps {targets}, resumed to identical weights")


class _Slow(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        for start in range(0, len(self.body), 4096):  # ~40 chunks: two seconds in all
            self.wfile.write(self.body[start : start + 4096])
            self.wfile.flush()
            time.sleep(0.05)

    def log_message(self, *args):
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # the client is killed on purpose: a broken pipe here is expected


DOWNLOADER = """
import sys
from pathlib import Path
from xpcnn.datasets import DataFile, download_file
file = DataFile("t10k-images-idx3-ubyte", int(sys.argv[2]), "sha256", sys.argv[3])
download_file(file, [sys.argv[1]], Path(sys.argv[4]), tries=1)
"""


def test_sigkill_during_download_never_leaves_a_valid_looking_file(tmp_path):
    import hashlib

    content = (np.arange(8 + 200 * 784) % 256).astype(np.uint8).tobytes()
    content = bytes([0, 0, 8, 3]) + struct.pack(">III", 200, 28, 28) + content[: 200 * 784]
    _Slow.body = gzip.compress(content, compresslevel=0)
    server = _QuietServer(("127.0.0.1", 0), _Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        folder = tmp_path / "cache"
        file = DataFile("t10k-images-idx3-ubyte", len(content), "sha256", hashlib.sha256(content).hexdigest())
        for delay in (0.1, 0.3, 0.6):
            process = subprocess.Popen([sys.executable, "-c", DOWNLOADER, url, str(file.size), file.digest, str(folder)])
            time.sleep(delay)
            process.send_signal(signal.SIGKILL)
            process.wait()
            assert find_file(file, [folder]) is None  # only .part files, never the real name
        path = download_file(file, [url], folder, tries=1)
        assert load_verified(path, file).shape == (200, 28, 28)
    finally:
        server.shutdown()
        server.server_close()


# -- numerical faults ---------------------------------------------------------------------------


def test_anomaly_mode_names_the_input(tmp_path):
    data = xpcnn.datasets.load_bundled().train.subset(np.arange(64))
    model = presets.build("tutorial")
    trainer = Trainer(model, SGD(model, 0.01), batch_size=32, progress=False, log=lambda m: None, anomaly=True)
    x = np.zeros((2, 1, 28, 28), np.float32)
    x[1, 0, 3, 3] = np.nan
    with pytest.raises(NonFiniteError, match=r"step 1: the input batch: 1 NaN and 0 Inf among 1,568 values"):
        with model.hooked(AnomalyHook("step 1")):
            model.forward(x, training=True)
    assert model.hooks == []  # the hook leaves with the block, also on an error
    model.params["4.weight"][0, 0] = np.inf  # a weight gone bad
    with pytest.raises(NonFiniteError, match=r"step 1 \(epoch 1, batch 1\): output of layer 4 \(Dense\) in forward"):
        trainer.fit(data, 1)


def test_divergence_keeps_the_last_good_checkpoint(tmp_path):
    data = xpcnn.datasets.load_bundled().train.subset(np.arange(256))
    model = presets.build("tutorial")
    optimizer = SGD(model, 0.01)
    trainer = Trainer(model, optimizer, batch_size=64, run_dir=tmp_path, progress=False, log=lambda m: None, anomaly=True)
    trainer.fit(data, 1)
    good = load_checkpoint(tmp_path / "checkpoint.npz")
    optimizer.lr = 1e30
    with pytest.raises((TrainingDiverged, NonFiniteError), match="last good checkpoint") as info:
        trainer.fit(data, 3)
    assert "layer" in str(info.value) or "loss is" in str(info.value)
    kept = load_checkpoint(tmp_path / "checkpoint.npz")
    assert kept.trainer["epoch"] >= good.trainer["epoch"]
    for value in kept.model.params.values():
        assert np.all(np.isfinite(value))


def test_float16_input_is_named(target, to_target):
    if target[0] == "array_api_strict":
        pytest.skip("array_api_strict has no float16")
    model = presets.build("tutorial").to(*target)
    with pytest.raises(TypeError, match=r"Conv2D.*input dtype .*float16 does not match parameter dtype .*float32"):
        model.forward(to_target(np.zeros((1, 1, 28, 28), np.float16)))
