"""Datasets: checksums, search order, the bundled subset, downloads from a local server,
and the batch iterator."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from xpcnn import backend
from xpcnn.datasets import (
    MNIST,
    ChecksumError,
    DataFile,
    DataNotFound,
    Dataset,
    DatasetSpec,
    DownloadError,
    batches,
    download_file,
    epoch_order,
    load_bundled,
    load_dataset,
    load_verified,
    num_batches,
)
from xpcnn.datasets.idx import write_idx
from xpcnn.datasets.loading import BUNDLED_CHECKSUMS, bundled_path

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def idx_bytes(array: np.ndarray, tmp_path: Path) -> bytes:
    write_idx(tmp_path / "tmp.idx", array)
    return (tmp_path / "tmp.idx").read_bytes()


def tiny_spec(tmp_path: Path, n_train: int = 50, n_test: int = 20) -> tuple[DatasetSpec, dict[str, bytes]]:
    """A dataset of random 28x28 images with real checksums, and its file contents."""
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    names = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
    contents = {key: idx_bytes(value, tmp_path) for key, value in arrays.items()}
    files = {key: DataFile(names[key], len(contents[key]), "sha256", hashlib.sha256(contents[key]).hexdigest()) for key in arrays}
    spec = DatasetSpec("tiny", files, ("http://127.0.0.1:1/",), 0.5, 0.25, tuple("0123456789"))
    return spec, {names[k]: v for k, v in contents.items()}


def test_verified_load_accepts_raw_and_gzip_and_rejects_changes(tmp_path):
    spec, contents = tiny_spec(tmp_path)
    file = spec.files["test_labels"]
    raw, packed = tmp_path / file.name, tmp_path / f"{file.name}.gz"
    raw.write_bytes(contents[file.name])
    packed.write_bytes(gzip.compress(contents[file.name]))
    np.testing.assert_array_equal(load_verified(raw, file), load_verified(packed, file))
    changed = bytearray(contents[file.name])
    changed[-1] ^= 1
    raw.write_bytes(bytes(changed))
    with pytest.raises(ChecksumError, match="sha256 of the uncompressed content"):
        load_verified(raw, file)


def test_gzip_only_checksums_refuse_raw_files(tmp_path):
    content = idx_bytes(np.zeros(4, np.uint8), tmp_path)
    packed = gzip.compress(content, mtime=0)
    file = DataFile("x", len(content), "md5", hashlib.md5(packed).hexdigest(), "gzip")
    (tmp_path / "x.gz").write_bytes(packed)
    np.testing.assert_array_equal(load_verified(tmp_path / "x.gz", file), np.zeros(4))
    (tmp_path / "x").write_bytes(content)
    with pytest.raises(ChecksumError, match="only the published gzip file"):
        load_verified(tmp_path / "x", file)


def test_bundled_subset_checksums_and_stratification():
    loaded = load_bundled()
    assert len(loaded.train) == 10_000 and len(loaded.test) == 2_000
    assert bundled_path().stat().st_size <= 4 * 2**20
    assert (bundled_path().parent / BUNDLED_CHECKSUMS).exists()
    shares = np.bincount(loaded.train.labels, minlength=10) / len(loaded.train)
    # MNIST's training shares run from 9.0 % (digit 5) to 11.2 % (digit 1).
    assert shares.min() > 0.085 and shares.max() < 0.115 and shares.argmax() == 1


def test_damaged_bundled_subset_is_refused(tmp_path, monkeypatch):
    copy = tmp_path / "mnist-subset.npz"
    data = bytearray(bundled_path().read_bytes())
    data[1000] ^= 0xFF
    copy.write_bytes(bytes(data))
    (tmp_path / BUNDLED_CHECKSUMS).write_bytes((bundled_path().parent / BUNDLED_CHECKSUMS).read_bytes())
    monkeypatch.setattr("xpcnn.datasets.loading.bundled_path", lambda: copy)
    with pytest.raises(ChecksumError, match="installation is damaged"):
        load_bundled()


def test_search_order_and_fallback(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("XPCNN_DATA_DIR", raising=False)
    messages = []
    loaded = load_dataset("mnist", tmp_path / "empty", download=False, log=messages.append)
    assert "bundled" in loaded.source and len(messages) == 1 and "bundled" in messages[0]
    with pytest.raises(DataNotFound, match="fashion-mnist"):
        load_dataset("fashion-mnist", tmp_path / "empty", download=False)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("cifar")


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="full MNIST not in ../shared/data/mnist")
def test_full_mnist_from_the_environment_variable(monkeypatch):
    monkeypatch.setenv("XPCNN_DATA_DIR", str(SHARED_MNIST))
    loaded = load_dataset("mnist", download=False)
    assert loaded.source.startswith("full mnist") and len(loaded.train) == 60_000 and len(loaded.test) == 10_000
    pixels = loaded.train.images.astype(np.float64) / 255
    assert abs(pixels.mean() - MNIST.mean) < 1e-4 and abs(pixels.std() - MNIST.std) < 1e-4


def test_a_corrupt_file_in_the_data_dir_is_an_error_not_a_fallback(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + np.asarray([3], ">u4").tobytes() + bytes(3))
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        (tmp_path / "data" / name).write_bytes(b"junk")
    with pytest.raises((ChecksumError, ValueError), match="data"):
        load_dataset("mnist", tmp_path / "data", download=False)


# -- downloads against a local server ---------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, bytes] = {}
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.hits.append(self.path)
        body = self.routes.get(self.path)
        if body is None:
            self.send_error(404)
            return
        declared, payload = body if isinstance(body, tuple) else (len(body), body)
        self.send_response(200)
        self.send_header("Content-Length", str(declared))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Handler.routes, _Handler.hits = {}, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler
    httpd.shutdown()
    httpd.server_close()


def test_download_good_file(tmp_path, server):
    url, handler = server
    spec, contents = tiny_spec(tmp_path)
    file = spec.files["train_labels"]
    handler.routes[f"/good/{file.name}.gz"] = gzip.compress(contents[file.name])
    path = download_file(file, [f"{url}/good/"], tmp_path / "cache", backoff=0)
    assert path == tmp_path / "cache" / f"{file.name}.gz"
    np.testing.assert_array_equal(load_verified(path, file), np.frombuffer(contents[file.name][8:], np.uint8))
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [path.name]


def test_truncated_and_corrupted_downloads_leave_nothing_and_next_mirror_wins(tmp_path, server):
    url, handler = server
    spec, contents = tiny_spec(tmp_path)
    file = spec.files["train_images"]
    packed = gzip.compress(contents[file.name])
    corrupted = gzip.compress(contents[file.name][:-1] + b"\x01")
    handler.routes[f"/short/{file.name}.gz"] = (len(packed), packed[: len(packed) // 2])  # connection drops
    handler.routes[f"/cut/{file.name}.gz"] = packed[: len(packed) // 2]  # complete response, truncated file
    handler.routes[f"/bad/{file.name}.gz"] = corrupted
    handler.routes[f"/good/{file.name}.gz"] = packed
    mirrors = [f"{url}/short/", f"{url}/cut/", f"{url}/bad/", f"{url}/missing/", f"{url}/good/"]
    path = download_file(file, mirrors, tmp_path / "cache", tries=2, backoff=0)
    assert load_verified(path, file).shape == (50, 28, 28)
    assert len(handler.hits) == 8  # two tries at each failing mirror but one at the 404, one at the good one
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [path.name]


def test_download_failure_lists_attempts_and_leaves_no_file(tmp_path, server):
    url, handler = server
    spec, contents = tiny_spec(tmp_path)
    file = spec.files["test_labels"]
    handler.routes[f"/bad/{file.name}.gz"] = gzip.compress(contents[file.name] + b"extra")
    with pytest.raises(DownloadError) as info:
        download_file(file, [f"{url}/bad/", f"{url}/none/"], tmp_path / "cache", tries=1, backoff=0)
    assert "trailing data" in str(info.value) and "404" in str(info.value)
    assert list((tmp_path / "cache").iterdir()) == []


def test_oversized_download_is_cut_off(tmp_path, server):
    url, handler = server
    spec, contents = tiny_spec(tmp_path)
    file = spec.files["test_labels"]
    handler.routes[f"/huge/{file.name}.gz"] = bytes(file.size + (1 << 20) + 10)
    with pytest.raises(DownloadError, match="refusing the rest"):
        download_file(file, [f"{url}/huge/"], tmp_path / "cache", tries=1, backoff=0)
    assert list((tmp_path / "cache").iterdir()) == []


# -- batches -------------------------------------------------------------------------------


def small_dataset(n: int = 10) -> Dataset:
    rng = np.random.default_rng(1)
    return Dataset(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n), MNIST)


def test_batches_keep_the_last_partial_batch_and_normalise(target):
    data = small_dataset(10)
    got = list(batches(data, 4, shuffle=False, backend_name=target[0], device=target[1]))
    assert [int(y.shape[0]) for _, y in got] == [4, 4, 2] == [4, 4, 2][: num_batches(10, 4)]
    x0 = backend.to_numpy(got[0][0])
    assert x0.shape == (4, 1, 28, 28) and x0.dtype == np.float32
    expected = (data.images[:4].astype(np.float32) / 255 - np.float32(0.1307)) / np.float32(0.3081)
    np.testing.assert_allclose(x0[:, 0], expected, rtol=1e-6)
    assert backend.dtype_name(got[0][1].dtype) == "int64"


def test_batch_order_is_a_function_of_seed_and_epoch():
    data = small_dataset(10)

    def labels(**kw):
        return np.concatenate([y for _, y in batches(data, 3, **kw)])

    assert np.array_equal(labels(seed=1, epoch=2), labels(seed=1, epoch=2))
    assert not np.array_equal(epoch_order(10, 1, 2), epoch_order(10, 1, 3))
    # Starting at batch 2 yields exactly the tail of the same epoch.
    assert np.array_equal(labels(seed=1, epoch=2, start=2), labels(seed=1, epoch=2)[6:])
    assert sorted(epoch_order(10, 1, 2)) == list(range(10))


def test_dataset_validation_and_split():
    with pytest.raises(ValueError, match="labels must be in"):
        Dataset(np.zeros((2, 28, 28), np.uint8), np.array([0, 10]), MNIST)
    with pytest.raises(ValueError, match="uint8"):
        Dataset(np.zeros((2, 28, 28), np.float32), np.array([0, 1]), MNIST)
    rest, held = small_dataset(10).split(0.3, seed=0)
    assert len(rest) == 7 and len(held) == 3


def test_random_shifts_move_pixels_and_are_reproducible():
    from xpcnn.datasets.batches import random_shifts

    image = np.zeros((1, 28, 28), np.uint8)
    image[0, 10:18, 12:16] = 255
    shifted = random_shifts(np.repeat(image, 50, axis=0), 2, np.random.default_rng(0))
    assert shifted.shape == (50, 28, 28) and shifted.dtype == np.uint8
    assert np.all(shifted.reshape(50, -1).sum(axis=1) == image.sum())  # nothing falls off the edge here
    moves = {tuple(np.argwhere(s)[0] - (10, 12)) for s in shifted}
    assert moves <= {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)} and len(moves) > 10
    again = random_shifts(np.repeat(image, 50, axis=0), 2, np.random.default_rng(0))
    np.testing.assert_array_equal(shifted, again)
    data = small_dataset(10)
    first = [backend.to_numpy(x) for x, _ in batches(data, 4, seed=3, epoch=1, augment=2)]
    resumed = [backend.to_numpy(x) for x, _ in batches(data, 4, seed=3, epoch=1, augment=2, start=1)]
    np.testing.assert_array_equal(first[1], resumed[0])  # a resumed epoch sees the same shifts
