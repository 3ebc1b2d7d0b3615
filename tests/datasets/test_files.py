"""Data files (xpcnn/datasets/files.py): verified loads, and downloads from a local HTTP
server: bad mirrors, truncation, oversized responses, and SIGKILL mid-download."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from xpcnn.datasets import ChecksumError, DataFile, DatasetSpec, DownloadError, download_file, load_verified
from xpcnn.datasets.files import find_file
from xpcnn.datasets.idx import write_idx


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
    files = {key: DataFile(names[key], len(contents[key]), "sha256", hashlib.sha256(contents[key]).hexdigest())
             for key in arrays}
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


@pytest.mark.parametrize("of", ["gzip", "raw"])
def test_a_data_file_that_is_a_fifo_is_refused_at_once_not_waited_on(tmp_path, of):
    import os

    from xpcnn.datasets import IDXError

    os.mkfifo(tmp_path / "x")
    file = DataFile("x", 16, "md5", "0" * 32, of)
    with pytest.raises(IDXError, match="x: not a regular file"):
        load_verified(tmp_path / "x", file)


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


def test_a_download_folder_that_cannot_be_made_is_a_download_error_naming_it(tmp_path):
    spec, _ = tiny_spec(tmp_path)
    (tmp_path / "home").write_text("a file where the cache's parent should be")
    with pytest.raises(DownloadError, match=f"cannot make the download folder {tmp_path / 'home' / 'cache'} .*"
                                            "--data-dir, XPCNN_DATA_DIR or XDG_CACHE_HOME can name another"):
        download_file(spec.files["train_labels"], ["http://127.0.0.1:9/"], tmp_path / "home" / "cache", backoff=0)


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
        download_file(file, [f"{url}/bad/", f"{url}/none/"], tmp_path / "cache" / "mnist", tries=1, backoff=0)
    assert "trailing data" in str(info.value) and "404" in str(info.value)
    assert not (tmp_path / "cache").exists()  # the folders it made for the file, gone with it
    (tmp_path / "mine").mkdir()
    with pytest.raises(DownloadError):
        download_file(file, [f"{url}/none/"], tmp_path / "mine", tries=1, backoff=0)
    assert list((tmp_path / "mine").iterdir()) == []  # a folder that was there stays


def test_a_download_interrupted_leaves_no_folder_of_its_making(tmp_path, monkeypatch):
    from xpcnn.datasets import files

    spec, _ = tiny_spec(tmp_path)

    def ctrl_c(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(files, "_fetch", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        download_file(spec.files["test_labels"], ["http://127.0.0.1:9/"], tmp_path / "new" / "mnist", tries=1)
    assert not (tmp_path / "new").exists()


def test_oversized_download_is_cut_off(tmp_path, server):
    url, handler = server
    spec, contents = tiny_spec(tmp_path)
    file = spec.files["test_labels"]
    handler.routes[f"/huge/{file.name}.gz"] = bytes(file.size + (1 << 20) + 10)
    with pytest.raises(DownloadError, match="refusing the rest"):
        download_file(file, [f"{url}/huge/"], tmp_path / "cache", tries=1, backoff=0)
    assert not (tmp_path / "cache").exists()  # nor a part of the file in the folder made for it


# -- SIGKILL during a download ----------------------------------------------------------


class _Slow(http.server.BaseHTTPRequestHandler):
    """Serves `body` in chunks of 4 KiB; with `pause_after` set, stops after that many,
    sets `paused` and waits for `resume`: a client killed meanwhile is killed in the middle
    of its download, however slowly it started."""

    body = b""
    pause_after: int | None = None
    paused, resume = threading.Event(), threading.Event()

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        for index, start in enumerate(range(0, len(self.body), 4096)):  # ~40 chunks
            if index == self.pause_after:
                self.paused.set()
                self.resume.wait(120)
            self.wfile.write(self.body[start : start + 4096])
            self.wfile.flush()

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
    content = (np.arange(8 + 200 * 784) % 256).astype(np.uint8).tobytes()
    content = bytes([0, 0, 8, 3]) + struct.pack(">III", 200, 28, 28) + content[: 200 * 784]
    _Slow.body = gzip.compress(content, compresslevel=0)
    httpd = _QuietServer(("127.0.0.1", 0), _Slow)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/"
        folder = tmp_path / "cache"
        file = DataFile("t10k-images-idx3-ubyte", len(content), "sha256", hashlib.sha256(content).hexdigest())
        for killed, pause_after in enumerate((1, 20, 38), start=1):  # chunks sent when the client is killed
            _Slow.pause_after = pause_after
            _Slow.paused.clear()
            _Slow.resume.clear()
            process = subprocess.Popen([sys.executable, "-c", DOWNLOADER, url, str(file.size), file.digest,
                                        str(folder)])
            try:
                assert _Slow.paused.wait(120), "the download never reached the server"
                process.send_signal(signal.SIGKILL)
                process.wait()
            finally:
                _Slow.resume.set()
            assert find_file(file, [folder]) is None  # only .part files, never the real name
            assert len(list(folder.glob("*.part"))) == killed  # each killed in the middle of its download
        _Slow.pause_after = None
        path = download_file(file, [url], folder, tries=1)
        assert load_verified(path, file).shape == (200, 28, 28)
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_tries_that_all_fail_alike_are_told_once(tmp_path, server):
    url, _ = server
    spec, _ = tiny_spec(tmp_path)
    file = spec.files["test_labels"]
    with pytest.raises(DownloadError) as info:
        download_file(file, [f"{url}/none/", f"{url}/gone/"], tmp_path / "cache", tries=1, backoff=0)
    assert str(info.value).count("404") == 1 and "each of 2 tries failed: HTTP Error 404" in str(info.value)
