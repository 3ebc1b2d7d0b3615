"""Coverage-guided fuzz target (atheris) for the readers of untrusted files.

    python tests/fuzz_readers.py -runs=20000            # bounded, as the test suite runs it
    python tests/fuzz_readers.py -max_total_time=600    # longer, by hand

Each input is tried as an IDX file (raw, then gzip-wrapped), a checkpoint (loaded, then
read as evaluate, predict and a resume read it) and a .npy image. Only the project's own
documented errors may come out; anything else (a crash, a
MemoryError, another exception) stops the fuzzer with the input that caused it.
"""

from __future__ import annotations

import gzip
import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    from xpcnn.datasets.idx import IDXError, read_idx
    from xpcnn.datasets.images import ImageError, read_image
    from xpcnn.io.checkpoint import CheckpointError, load_checkpoint
    from xpcnn.train import record

FOLDER = tempfile.mkdtemp(prefix="xpcnn-fuzz-")
LIMIT = 1 << 24  # 16 MiB: a header asking for more is refused before allocation


def write(name: str, data: bytes) -> str:
    path = os.path.join(FOLDER, name)
    with open(path, "wb") as handle:
        handle.write(data)
    return path


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


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
