"""The checks of a checkpoint's metadata (most go through load_checkpoint: tests/io/test_checkpoint.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xpcnn.io.schema import CheckpointError, check_meta

from ..helpers import small_checkpoint


@pytest.mark.parametrize("index", ["²", "9" * 5000, "4", "-1"])  # digits int() refuses; past the 4 layers
def test_extra_state_of_no_layer_s_index_names_the_field(tmp_path, index):
    (tmp_path / "run.npz").write_bytes(small_checkpoint(tmp_path))
    with np.load(tmp_path / "run.npz") as archive:
        meta = json.loads(archive["__meta__"].tobytes())
    check_meta(meta, "run.npz")
    meta["extra_state"][index] = {}
    with pytest.raises(CheckpointError, match=r"run.npz: field extra_state\.\S+: expected the index of a layer"):
        check_meta(meta, "run.npz")


def test_a_way_of_reading_pictures_no_version_knows_names_the_field(tmp_path):
    (tmp_path / "run.npz").write_bytes(small_checkpoint(tmp_path))
    with np.load(tmp_path / "run.npz") as archive:
        meta = json.loads(archive["__meta__"].tobytes())
    meta["trainer"]["info"]["data"]["pictures"] = "photos"
    with pytest.raises(CheckpointError, match=r"run.npz: field trainer.info.data.pictures: expected resize or digits"):
        check_meta(meta, "run.npz")
