"""CIFAR's binary versions (xpcnn/datasets/cifar.py): format-exact synthetic archives and
folders of 10 records per file, hostile archives and folders (one clear error each), and a
download through a local HTTP server."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.server
import io
import os
import tarfile
import threading

import numpy as np
import pytest

from xpcnn.datasets import ChecksumError, DownloadError, download_file
from xpcnn.datasets.cifar import (
    ARCHIVE_SLACK,
    LAYOUTS,
    MAX_MEMBERS,
    CIFARError,
    find_cifar,
    incomplete_cifar,
    read_cifar,
    verify_archive,
)
from xpcnn.datasets.sources import CIFAR10, CIFAR100

RECORDS = 10
SPECS = {"cifar10": CIFAR10, "cifar100": CIFAR100}


def pixel(k: int, c: int, y: int, x: int, seed: int) -> int:
    """The value written at (record k, channel c, row y, column x) of a file."""
    return (seed * 31 + k * 7 + c * 85 + y * 5 + x * 3) % 256


def bin_file(layout, seed: int, bad_label_at: int | None = None) -> tuple[bytes, np.ndarray]:
    """RECORDS records written byte by byte as CIFAR lays them out, and their used labels."""
    out, used = bytearray(), []
    for k in range(RECORDS):
        labels = [(seed + k * (i + 3)) % count for i, (_, count) in enumerate(layout.labels)]
        if k == bad_label_at:
            labels[-1] = layout.labels[-1][1]
        out += bytes(labels)
        for c in range(3):  # red, green, blue planes, each row by row
            out += bytes(pixel(k, c, y, x, seed) for y in range(32) for x in range(32))
        used.append(labels[-1])
    return bytes(out), np.array(used)


def dataset(name: str, bad_label_in: str | None = None):
    """(spec, layout with 10 records per file and their digests, file contents, labels)."""
    layout = dataclasses.replace(LAYOUTS[name], records={file: RECORDS for file in LAYOUTS[name].records})
    contents, labels = {}, {}
    for seed, file in enumerate(layout.records):
        contents[file], labels[file] = bin_file(layout, seed, 3 if file == bad_label_in else None)
    digests = {file: hashlib.md5(data).hexdigest() for file, data in contents.items()}
    return SPECS[name], dataclasses.replace(layout, digests=digests), contents, labels


def member(name: str, data: bytes = b"", **fields) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data


def tar_gz(members, fmt=tarfile.GNU_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return gzip.compress(buffer.getvalue(), mtime=0)


def genuine_members(spec, layout, contents):
    """The members of the published archive, in its order, with these contents."""
    names = "\n".join(spec.classes) + "\n\n"
    return [member(layout.folder, type=tarfile.DIRTYPE), member(f"{layout.folder}/readme.html", b"<html/>"),
            member(f"{layout.folder}/{layout.names_file}", names.encode()),
            *(member(f"{layout.folder}/{file}", data) for file, data in contents.items())]


def with_archive(spec, data: bytes):
    """`spec` whose archive is `data`: its size and MD5 published."""
    file = dataclasses.replace(spec.files["archive"], size=len(data), digest=hashlib.md5(data).hexdigest())
    return dataclasses.replace(spec, files={"archive": file})


def installed_cifar10(folder, monkeypatch):
    """A synthetic CIFAR-10 archive written to `folder`, its size and MD5 made the published
    ones (for this test) so that load_dataset("cifar10", folder) reads it; its spec."""
    import hashlib

    from xpcnn.datasets import DATASETS, cifar

    spec, layout, contents, _ = dataset("cifar10")
    archive = tar_gz(genuine_members(spec, layout, contents))
    (folder / spec.files["archive"].name).write_bytes(archive)
    published = dataclasses.replace(spec.files["archive"], size=len(archive), digest=hashlib.md5(archive).hexdigest())
    monkeypatch.setitem(DATASETS, "cifar10", dataclasses.replace(spec, files={"archive": published}))
    monkeypatch.setitem(cifar.LAYOUTS, "cifar10", layout)
    return spec


def write_archive(tmp_path, spec, data: bytes):
    path = tmp_path / spec.files["archive"].name
    path.write_bytes(data)
    return with_archive(spec, data), path


def expect_pixels(images: np.ndarray, seeds: list[int]) -> None:
    """images[k, c] is the plane written for record k of file `seeds[k // RECORDS]`."""
    y, x = np.mgrid[:32, :32]
    for k in range(len(images)):
        for c in range(3):
            np.testing.assert_array_equal(images[k, c], pixel(k % RECORDS, c, y, x, seeds[k // RECORDS]))


# -- genuine data -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_archive_gives_each_part_in_cifar_layout(tmp_path, name):
    spec, layout, contents, labels = dataset(name)
    spec, path = write_archive(tmp_path, spec, tar_gz(genuine_members(spec, layout, contents)))
    parts = read_cifar(spec, path, layout=layout)
    files = list(layout.records)
    for part, (images, got) in parts.items():
        seeds = [files.index(file) for file in layout.parts[part]]
        assert images.dtype == np.uint8 and images.shape == (RECORDS * len(seeds), 3, 32, 32)
        assert got.dtype == np.int64
        expect_pixels(images, seeds)
        np.testing.assert_array_equal(got, np.concatenate([labels[file] for file in layout.parts[part]]))
    assert sorted(os.listdir(tmp_path)) == [path.name]  # nothing extracted


def test_cifar100_uses_the_fine_label(tmp_path):
    spec, layout, contents, _ = dataset("cifar100")
    spec, path = write_archive(tmp_path, spec, tar_gz(genuine_members(spec, layout, contents)))
    _, labels = read_cifar(spec, path, ("test",), layout=layout)["test"]
    records = np.frombuffer(contents["test.bin"], np.uint8).reshape(RECORDS, 3074)
    np.testing.assert_array_equal(labels, records[:, 1])
    assert not np.array_equal(labels, records[:, 0])


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("inner", [True, False], ids=["top-folder", "bin-folder"])
def test_extracted_folders_of_both_layouts_read_like_the_archive(tmp_path, name, inner):
    spec, layout, contents, _ = dataset(name)
    archive_spec, archive = write_archive(tmp_path, spec, tar_gz(genuine_members(spec, layout, contents)))
    folder = tmp_path / "data" / layout.folder
    folder.mkdir(parents=True)
    for file, data in contents.items():
        (folder / file).write_bytes(data)
    (folder / layout.names_file).write_text("\n".join(spec.classes))
    given = folder.parent if inner else folder
    assert find_cifar(spec, [tmp_path / "nowhere", given]) == folder
    from_folder, from_archive = read_cifar(spec, given, layout=layout), read_cifar(archive_spec, archive, layout=layout)
    for part in layout.parts:
        for a, b in zip(from_folder[part], from_archive[part]):
            np.testing.assert_array_equal(a, b)


def test_a_symlinked_bin_file_is_followed_and_checked_like_any_other(tmp_path):
    spec, layout, contents, _ = dataset("cifar10")
    (tmp_path / "elsewhere.bin").write_bytes(contents["test_batch.bin"])
    (tmp_path / "test_batch.bin").symlink_to(tmp_path / "elsewhere.bin")
    assert read_cifar(spec, tmp_path, ("test",), layout=layout)["test"][0].shape == (RECORDS, 3, 32, 32)
    (tmp_path / "elsewhere.bin").write_bytes(contents["data_batch_1.bin"])
    with pytest.raises(ChecksumError, match="test_batch.bin: md5 is"):
        read_cifar(spec, tmp_path, ("test",), layout=layout)


def test_only_the_parts_asked_for_are_read(tmp_path):
    spec, layout, contents, _ = dataset("cifar10", bad_label_in="data_batch_2.bin")
    spec, path = write_archive(tmp_path, spec, tar_gz(genuine_members(spec, layout, contents)))
    assert list(read_cifar(spec, path, ("test",), layout=layout)) == ["test"]
    with pytest.raises(CIFARError, match="data_batch_2.bin: record 3"):
        read_cifar(spec, path, layout=layout)
    (tmp_path / "test_batch.bin").write_bytes(contents["test_batch.bin"])  # a folder of the test file alone
    assert read_cifar(spec, tmp_path, ("test",), layout=layout)["test"][1].shape == (RECORDS,)
    with pytest.raises(CIFARError, match="has no part 'validation'"):
        read_cifar(spec, path, ("validation",), layout=layout)


def test_find_prefers_the_archive_then_folders_in_order(tmp_path):
    spec, layout, contents, _ = dataset("cifar10")
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        folder.mkdir()
    assert find_cifar(spec, [first, second]) is None
    for file, data in contents.items():
        (second / file).write_bytes(data)
    assert find_cifar(spec, [first, second]) == second
    (second / spec.files["archive"].name).write_bytes(b"unverified")
    assert find_cifar(spec, [first, second]) == second / spec.files["archive"].name
    (second / "test_batch.bin").unlink()
    (second / spec.files["archive"].name).unlink()
    assert find_cifar(spec, [first, second]) is None  # a folder counts only with every file


def test_an_extracted_folder_lacking_files_is_named_where_the_data_is_not_found(tmp_path):
    from xpcnn.datasets.loading import DataNotFound, load_dataset

    spec, layout, contents, _ = dataset("cifar10")
    inner = tmp_path / layout.folder
    inner.mkdir()
    assert incomplete_cifar(spec, [tmp_path]) == f"{inner} lacks 6 of cifar10's .bin files (data_batch_1.bin, " \
                                                 "data_batch_2.bin, data_batch_3.bin, data_batch_4.bin, " \
                                                 "data_batch_5.bin, test_batch.bin)"
    assert incomplete_cifar(spec, [inner]).startswith(f"{inner} lacks 6")  # --data-dir names the folder itself
    (inner / "data_batch_1.bin").write_bytes(contents["data_batch_1.bin"])
    with pytest.raises(DataNotFound, match=f"not found in {tmp_path}.*; {inner} lacks 5 of cifar10's .bin files"):
        load_dataset("cifar10", tmp_path, download=False)
    assert incomplete_cifar(spec, [tmp_path / "elsewhere"]) is None


@pytest.mark.parametrize("name, other, version", [
    ("cifar10", "cifar-10-python.tar.gz", "Python version (pickles"),
    ("cifar10", "cifar-10-batches-py", "Python version (pickles"),
    ("cifar100", "cifar-100-python", "Python version (pickles"),
    ("cifar10", "cifar-10-matlab.tar.gz", "MATLAB version"),
])
def test_a_copy_of_another_version_is_named_where_the_data_is_not_found(tmp_path, name, other, version):
    from xpcnn.datasets.loading import DataNotFound, load_dataset

    spec = dataset(name)[0]
    (tmp_path / other).mkdir()  # an archive or its extracted folder: either is named
    expected = f"{tmp_path / other} is {name}'s {version}"
    assert incomplete_cifar(spec, [tmp_path]).startswith(expected)
    assert incomplete_cifar(spec, [tmp_path / other]).startswith(expected)  # --data-dir names it
    with pytest.raises(DataNotFound, match=rf"; xpcnn reads the binary version, {spec.files['archive'].name}; "):
        load_dataset(name, tmp_path, download=False)


def test_verify_archive_checks_size_and_digest(tmp_path):
    spec, _ = write_archive(tmp_path, CIFAR10, b"some bytes")
    file, path = spec.files["archive"], tmp_path / spec.files["archive"].name
    verify_archive(path, file)
    with pytest.raises(ChecksumError, match=r"md5 is .*, expected 0{32} \(the published md5 of cifar-10"):
        verify_archive(path, dataclasses.replace(file, digest="0" * 32))
    verify_archive(path, dataclasses.replace(file, size=9))  # the digest decides; the size is others' record
    with pytest.raises(ChecksumError, match=r"more than 9 bytes, expected -1,048,567 \(the size of"):
        verify_archive(path, dataclasses.replace(file, size=9 - ARCHIVE_SLACK))  # 10 bytes: more than size + slack
    with pytest.raises(CIFARError, match="missing.tar.gz: cannot read it"):
        verify_archive(tmp_path / "missing.tar.gz", file)


# -- hostile archives -----------------------------------------------------------------------


def _gnu_longname_chain(spec, layout, contents) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        archive.addfile(member("x" * 200)[0])
    raw = buffer.getvalue()
    return gzip.compress(raw[:1024] * 2000 + raw[1024:])  # long-name headers, each naming the next


def _replace_member(file, new):
    def build(spec, layout, contents):
        members = genuine_members(spec, layout, contents)
        return tar_gz([new(spec, layout, contents) if info.name.endswith("/" + file) else (info, data)
                       for info, data in members])
    return build


def _add(*extra):
    return lambda spec, layout, contents: tar_gz(genuine_members(spec, layout, contents)
                                                 + [item(layout, contents) for item in extra])


def _many(spec, layout, contents):
    return tar_gz(genuine_members(spec, layout, contents) + [member(f"junk/{i}") for i in range(MAX_MEMBERS)])


def _corrupt_crc(spec, layout, contents):
    data = bytearray(tar_gz(genuine_members(spec, layout, contents)))
    data[-8] ^= 1
    return bytes(data)


def _cut(spec, layout, contents):
    data = tar_gz(genuine_members(spec, layout, contents))
    return data[: len(data) // 2]


HOSTILE = {
    "truncated gzip": (_cut, "not a complete gzip-compressed tar archive"),
    "not a gzip": (lambda *a: b"just some text, no archive" * 20, "Not a gzipped file"),
    "a plain tar": (lambda *a: gzip.decompress(tar_gz([member("a", b"x")])), "Not a gzipped file"),
    "gzip of garbage": (lambda *a: gzip.compress(b"\x01" * 4096), "not a complete gzip-compressed tar archive"),
    "bad gzip CRC": (_corrupt_crc, "CRC check failed"),
    "symlink member": (_replace_member("data_batch_1.bin", lambda s, lay, c: member(
        f"{lay.folder}/data_batch_1.bin", type=tarfile.SYMTYPE, linkname="/etc/passwd")),
        r"member cifar-10-batches-bin/data_batch_1.bin: not a regular file \(tar type b'2'\)"),
    "hardlink member": (_replace_member("test_batch.bin", lambda s, lay, c: member(
        f"{lay.folder}/test_batch.bin", type=tarfile.LNKTYPE, linkname=f"{lay.folder}/data_batch_1.bin")),
        r"test_batch.bin: not a regular file \(tar type b'1'\)"),
    "directory member": (_replace_member("test_batch.bin", lambda s, lay, c: member(
        f"{lay.folder}/test_batch.bin", type=tarfile.DIRTYPE)), "test_batch.bin: not a regular file"),
    "member listed twice": (_add(lambda lay, c: member(f"{lay.folder}/data_batch_3.bin", c["data_batch_3.bin"])),
                            "member cifar-10-batches-bin/data_batch_3.bin: listed twice"),
    "oversized data member": (_replace_member("data_batch_2.bin", lambda s, lay, c: member(
        f"{lay.folder}/data_batch_2.bin", c["data_batch_2.bin"] + b"\0")),
        "data_batch_2.bin: 30,731 bytes, expected 10 records of 3,073 bytes = 30,730 bytes"),
    "oversized other member": (_add(lambda lay, c: member("readme2.html", bytes(5 << 20))),
                               r"member 'readme2.html' declares 5,242,880 bytes, past the [\d,]+ the published"),
    "too many members": (_many, "more than 256 members, far more than the published archive's"),
    "wrong record size": (_replace_member("test_batch.bin", lambda s, lay, c: member(
        f"{lay.folder}/test_batch.bin", bytes(RECORDS * 3074))), "test_batch.bin: 30,740 bytes, expected 10 records"),
    "label out of range": (_replace_member("data_batch_4.bin", lambda s, lay, c: member(
        f"{lay.folder}/data_batch_4.bin", bin_file(lay, 0, bad_label_at=7)[0])),
        r"member cifar-10-batches-bin/data_batch_4.bin: record 7 \(counting from 0\) has label 10, expected 0 to 9"),
    "missing member": (_replace_member("test_batch.bin", lambda s, lay, c: member(f"{lay.folder}/test_batch.bak")),
                       "no member cifar-10-batches-bin/test_batch.bin, expected in the archive of cifar10"),
    "other class names": (_replace_member("batches.meta.txt", lambda s, lay, c: member(
        f"{lay.folder}/batches.meta.txt", b"cat\ndog\n")), "class name 0 is 'cat', expected 'airplane'"),
    "class names not text": (_replace_member("batches.meta.txt", lambda s, lay, c: member(
        f"{lay.folder}/batches.meta.txt", b"\xff\xfe")), "class names that are not ASCII text"),
    "chain of long-name headers": (_gnu_longname_chain, "a chain of tar extended headers too long"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_archives_are_refused_with_one_clear_line(tmp_path, case):
    build, message = HOSTILE[case]
    spec, layout, contents, _ = dataset("cifar10")
    spec, path = write_archive(tmp_path, spec, build(spec, layout, contents))
    with pytest.raises(CIFARError, match=message) as info:
        read_cifar(spec, path, layout=layout)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert sorted(os.listdir(tmp_path)) == [path.name]


def test_path_traversal_names_are_ignored_never_written(tmp_path):
    spec, layout, contents, _ = dataset("cifar10")
    traversal = [member("../x", b"payload"), member("/tmp/xpcnn-absolute", b"payload"),
                 member(f"{layout.folder}/../{layout.folder}/test_batch.bin", bytes(RECORDS * 3073))]
    folder = tmp_path / "in"
    folder.mkdir()
    spec, path = write_archive(folder, spec, tar_gz(traversal + genuine_members(spec, layout, contents)))
    assert read_cifar(spec, path, layout=layout)["test"][0].shape == (RECORDS, 3, 32, 32)
    assert sorted(os.listdir(tmp_path)) == ["in"] and sorted(os.listdir(folder)) == [path.name]


def test_a_wrong_archive_digest_or_size_is_a_checksum_error_before_parsing(tmp_path):
    spec, layout, contents, _ = dataset("cifar10")
    spec, path = write_archive(tmp_path, spec, tar_gz(genuine_members(spec, layout, contents)))
    file = spec.files["archive"]
    with pytest.raises(ChecksumError, match=f"{path}: md5 is {file.digest}, expected f{{32}}"):
        read_cifar(dataclasses.replace(spec, files={"archive": dataclasses.replace(file, digest="f" * 32)}), path,
                   layout=layout)
    with pytest.raises(ChecksumError, match=f"{file.size:,} bytes, expected {file.size + 1:,}; md5 is"):
        other = dataclasses.replace(file, size=file.size + 1, digest="f" * 32)
        read_cifar(dataclasses.replace(spec, files={"archive": other}), path, layout=layout)
    read_cifar(dataclasses.replace(spec, files={"archive": dataclasses.replace(file, size=file.size + 1)}), path,
               layout=layout)  # a byte count recorded wrong: the published digest decides


# -- hostile folders ------------------------------------------------------------------------


def test_a_folder_with_another_digest_points_to_the_archive(tmp_path):
    spec, layout, contents, _ = dataset("cifar10")
    for file, data in contents.items():
        (tmp_path / file).write_bytes(data)
    with pytest.raises(ChecksumError, match="data_batch_1.bin: md5 is .* the archive cifar-10-binary.tar.gz, "
                                            "verified against its published MD5, can be given instead"):
        read_cifar(spec, tmp_path, layout=dataclasses.replace(layout, digests={**layout.digests,
                                                                               "data_batch_1.bin": "0" * 32}))


def test_hostile_folders(tmp_path):
    spec, layout, contents, _ = dataset("cifar10", bad_label_in="test_batch.bin")
    (tmp_path / "test_batch.bin").write_bytes(contents["test_batch.bin"])
    with pytest.raises(CIFARError, match=r"test_batch.bin: record 3 \(counting from 0\) has label 10"):
        read_cifar(spec, tmp_path, ("test",), layout=layout)
    (tmp_path / "test_batch.bin").write_bytes(contents["test_batch.bin"] * 2)
    with pytest.raises(CIFARError, match="test_batch.bin: more than 30,730 bytes, expected 10 records"):
        read_cifar(spec, tmp_path, ("test",), layout=layout)
    (tmp_path / "test_batch.bin").unlink()
    with pytest.raises(CIFARError, match="test_batch.bin: cannot read it"):
        read_cifar(spec, tmp_path, ("test",), layout=layout)
    (tmp_path / "test_batch.bin").symlink_to(tmp_path / "test_batch.bin")
    with pytest.raises(CIFARError, match="test_batch.bin: cannot read it .*symbolic links"):
        read_cifar(spec, tmp_path, ("test",), layout=layout)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_named_like_a_data_file_is_refused_without_blocking(tmp_path):
    spec, layout, _, _ = dataset("cifar10")
    os.mkfifo(tmp_path / "test_batch.bin")
    with pytest.raises(CIFARError, match="test_batch.bin: not a regular file"):
        read_cifar(spec, tmp_path, ("test",), layout=layout)
    os.mkfifo(tmp_path / "archive.tar.gz")
    with pytest.raises(CIFARError, match="archive.tar.gz: not a regular file"):
        read_cifar(spec, tmp_path / "archive.tar.gz", layout=layout)


def test_a_spec_that_is_not_cifar_is_refused(tmp_path):
    from xpcnn.datasets import MNIST
    with pytest.raises(CIFARError, match="mnist is not a CIFAR dataset"):
        read_cifar(MNIST, tmp_path)


# -- download ---------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, bytes] = {}

    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = self.routes.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_archive_download_is_verified_then_renamed_into_place(tmp_path):
    spec, layout, contents, _ = dataset("cifar10")
    data = tar_gz(genuine_members(spec, layout, contents))
    spec = with_archive(spec, data)
    name = spec.files["archive"].name
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 1
    _Handler.routes = {f"/bad/{name}": bytes(bad), f"/huge/{name}": data + bytes(ARCHIVE_SLACK + 1),
                       f"/good/{name}": data}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        with pytest.raises(DownloadError, match="refusing the rest.*md5 is"):
            download_file(spec.files["archive"], [f"{url}/huge/", f"{url}/bad/"], tmp_path / "cache", tries=1,
                          backoff=0, verify=verify_archive)
        assert not (tmp_path / "cache").exists()  # nor a part of the archive in the folder made for it
        path = download_file(spec.files["archive"], [f"{url}/bad/", f"{url}/good/"], tmp_path / "cache", tries=1,
                             backoff=0, verify=verify_archive)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert path == tmp_path / "cache" / name and os.listdir(tmp_path / "cache") == [name]
    assert read_cifar(spec, path, ("test",), layout=layout)["test"][0].shape == (RECORDS, 3, 32, 32)


def test_a_bin_file_that_is_a_fifo_is_named_as_such_not_as_missing(tmp_path):
    import os

    from xpcnn.datasets.loading import load_dataset

    spec, layout, contents, _ = dataset("cifar10")
    inner = tmp_path / layout.folder
    inner.mkdir()
    for name in layout.records:
        os.mkfifo(inner / name)
    assert find_cifar(spec, [tmp_path]) == inner
    with pytest.raises(CIFARError, match="data_batch_1.bin: not a regular file"):
        load_dataset("cifar10", tmp_path, download=False)
