"""Coverage-guided fuzz target (atheris) for the readers of untrusted files.

    python tests/fuzz_readers.py -runs=20000            # bounded, as the test suite runs it
    python tests/fuzz_readers.py -max_total_time=600    # longer, by hand

Each input is tried as an IDX file (raw, then gzip-wrapped), a checkpoint (loaded, then
read as evaluate, predict and a resume read it), a .npy image and a CIFAR archive (as it
is, then as the tar inside a gzip; the test part, of one record, with the archive's
published size and MD5 made the input's own, so that the tar is parsed). Only the
project's own documented errors may come out; anything else (a crash, a MemoryError,
another exception) stops the fuzzer with the input that caused it.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    from xpcnn.datasets.cifar import LAYOUTS, CIFARError, read_cifar
    from xpcnn.datasets.files import ChecksumError
    from xpcnn.datasets.idx import IDXError, read_idx
    from xpcnn.datasets.images import ImageError, read_image
    from xpcnn.datasets.sources import CIFAR10, CIFAR100
    from xpcnn.io.checkpoint import CheckpointError, load_checkpoint
    from xpcnn.train import record

FOLDER = tempfile.mkdtemp(prefix="xpcnn-fuzz-")
LIMIT = 1 << 24  # 16 MiB: a header asking for more is refused before allocation
CIFAR = [(spec, dataclasses.replace(LAYOUTS[spec.name], records=dict.fromkeys(LAYOUTS[spec.name].records, 1)))
         for spec in (CIFAR10, CIFAR100)]


def write(name: str, data: bytes) -> str:
    path = os.path.join(FOLDER, name)
    with open(path, "wb") as handle:
        handle.write(data)
    return path


def cifar_input(data: bytes) -> None:
    spec, layout = CIFAR[len(data) % 2]  # by length: both run the same code, both for each would double the time
    for content in (data, gzip.compress(data, compresslevel=1)):
        archive = dataclasses.replace(spec.files["archive"], size=len(content), digest=hashlib.md5(content).hexdigest())
        try:
            read_cifar(dataclasses.replace(spec, files={"archive": archive}), write("input.tar.gz", content),
                       ("test",), layout=layout)
        except (ChecksumError, CIFARError):
            pass


def one_input(data: bytes) -> None:
    for content in (data, gzip.compress(data, compresslevel=1)):
        try:
            read_idx(write("input.idx", content), max_bytes=LIMIT)
        except IDXError:
            pass
    try:
        checkpoint = load_checkpoint(write("input.npz", data))
        for use in (checkpoint.selection, checkpoint.data_statistics, lambda: record.read(checkpoint)):
            try:
                use()
            except CheckpointError:
                pass
    except CheckpointError:
        pass
    try:
        read_image(write("input.npy", data))
    except ImageError:
        pass
    cifar_input(data)


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
