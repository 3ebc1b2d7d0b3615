"""Coverage-guided fuzzing (atheris, bounded) of the readers of untrusted files: IDX,
checkpoints and .npy images, through the fuzz target tests/fuzz_readers.py run in a
subprocess."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .helpers import good_idx, small_checkpoint

FUZZ_TARGET = Path(__file__).resolve().with_name("fuzz_readers.py")


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
    result = subprocess.run([sys.executable, str(FUZZ_TARGET), str(corpus), f"-runs={runs}",
                             "-rss_limit_mb=4096", "-timeout=20", f"-artifact_prefix={tmp_path}/"],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    done = re.search(r"Done (\d+) runs", result.stderr)
    assert done and int(done.group(1)) == runs
    print(f"atheris: {done.group(0)}")
