"""Coverage-guided fuzzing (atheris, bounded) of the readers of untrusted files: IDX,
checkpoints, .npy images and CIFAR archives, through the fuzz target tests/fuzz_readers.py
run in a subprocess."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from xpcnn.datasets.sources import CIFAR10, CIFAR100

from .helpers import good_idx, small_checkpoint

FUZZ_TARGET = Path(__file__).resolve().with_name("fuzz_readers.py")


def cifar_tar() -> bytes:
    """A tar of the test parts of CIFAR-10 and CIFAR-100 as the fuzz target reads them: one
    record each, and their class names (the fuzz target gzips it, and tries it as it is)."""
    members = {"cifar-10-batches-bin/batches.meta.txt": "\n".join(CIFAR10.classes).encode(),
               "cifar-10-batches-bin/test_batch.bin": bytes([3]) + bytes(range(256)) * 12,
               "cifar-100-binary/fine_label_names.txt": "\n".join(CIFAR100.classes).encode(),
               "cifar-100-binary/test.bin": bytes([7, 42]) + bytes(range(256)) * 12}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


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
    (corpus / "cifar").write_bytes(cifar_tar())
    runs = 4000 if os.environ.get("CI") else 20000
    result = subprocess.run([sys.executable, str(FUZZ_TARGET), str(corpus), f"-runs={runs}",
                             "-rss_limit_mb=4096", "-timeout=20", f"-artifact_prefix={tmp_path}/"],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    done = re.search(r"Done (\d+) runs", result.stderr)
    assert done and int(done.group(1)) == runs
    print(f"atheris: {done.group(0)}")
