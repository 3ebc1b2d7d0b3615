"""Loading datasets (xpcnn/datasets/loading.py): the bundled subset, the search order and
its fallback, full MNIST from XPCNN_DATA_DIR, corrupt files, Dataset validation and split."""

from __future__ import annotations

import numpy as np
import pytest

from xpcnn.datasets import MNIST, ChecksumError, DataNotFound, Dataset, DatasetSpec, load_bundled, load_dataset
from xpcnn.datasets.loading import BUNDLED_CHECKSUMS, Selection, bundled_path

from ..helpers import SHARED_MNIST, small_dataset


def test_bundled_subset_checksums_and_stratification():
    loaded = load_bundled()
    assert len(loaded.train) == 10_000 and len(loaded.test) == 2_000
    assert bundled_path().stat().st_size <= 4 * 2**20
    assert (bundled_path().parent / BUNDLED_CHECKSUMS).exists()
    shares = np.bincount(loaded.train.labels, minlength=10) / len(loaded.train)
    # MNIST's training shares run from 9.0 % (digit 5) to 11.2 % (digit 1).
    assert shares.min() > 0.085 and shares.max() < 0.115 and shares.argmax() == 1


def test_whole_splits_say_how_to_read_them_again_and_their_parts_do_not():
    loaded = load_bundled()
    for part in (loaded.train, loaded.test):
        assert part.selection == Selection("mnist", None)  # a run trained on it records its data
        train, _, test = part.selection.load()
        np.testing.assert_array_equal(train.images, loaded.train.images)
        np.testing.assert_array_equal(test.labels, loaded.test.labels)
    assert loaded.train.subset(np.arange(10)).selection is None  # a custom part: not readable again


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="full MNIST not in ../shared/data/mnist")
def test_full_splits_record_the_folder_they_were_read_from():
    loaded = load_dataset("mnist", SHARED_MNIST, download=False)
    assert loaded.train.selection == Selection("mnist", (str(SHARED_MNIST.resolve()),))


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
    loaded = load_dataset("mnist", download=False, log=messages.append)  # nothing asked for: the subset, said
    assert "bundled" in loaded.source and len(messages) == 1 and "bundled" in messages[0]
    with pytest.raises(DataNotFound, match="mnist: .*not found in .*cache"):
        load_dataset("mnist", download=False, allow_bundled=False)
    with pytest.raises(DataNotFound, match="fashion-mnist"):
        load_dataset("fashion-mnist", download=False)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("cifar")


def test_the_bundled_subset_when_there_is_nowhere_to_download_to(tmp_path, monkeypatch):
    (tmp_path / "home").write_text("a file where the cache's parent should be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XPCNN_DATA_DIR", raising=False)
    messages = []
    assert "bundled" in load_dataset("mnist", log=messages.append).source
    assert "bundled" in messages[-1]


def test_an_explicit_data_folder_is_the_only_place_looked_in(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(DataNotFound, match=f"data folder {tmp_path / 'typo'} does not exist"):
        load_dataset("mnist", tmp_path / "typo")
    (tmp_path / "notes.txt").write_text("not a folder")
    with pytest.raises(DataNotFound, match=f"data folder {tmp_path / 'notes.txt'} is a file, not a folder"):
        load_dataset("mnist", tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFound, match=r"mnist: train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                                           r"t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte not found in"):
        load_dataset("mnist", tmp_path / "empty")
    with pytest.raises(DataNotFound, match=r"mnist: t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte not found"):
        load_dataset("mnist", tmp_path / "empty", parts=("test",))  # what evaluate asks for


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
    labels = b"\x00\x00\x08\x01" + np.asarray([3], ">u4").tobytes() + bytes(3)
    (tmp_path / "data" / "t10k-labels-idx1-ubyte").write_bytes(labels)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        (tmp_path / "data" / name).write_bytes(b"junk")
    with pytest.raises((ChecksumError, ValueError), match="data"):
        load_dataset("mnist", tmp_path / "data", download=False)


def test_dataset_validation_and_split():
    with pytest.raises(ValueError, match="labels must be class indices in"):
        Dataset(np.zeros((2, 28, 28), np.uint8), np.array([0, 10]), MNIST)
    with pytest.raises(TypeError, match="images must be a NumPy array of uint8, got float32"):
        Dataset(np.zeros((2, 28, 28), np.float32), np.array([0, 1]), MNIST)
    with pytest.raises(TypeError, match="images must be a NumPy array of uint8, got list"):
        Dataset([[0]], np.array([0]), MNIST)
    with pytest.raises(ValueError, match=r"images must be \(N, H, W\), got shape \(2, 28\)"):
        Dataset(np.zeros((2, 28), np.uint8), np.array([0, 1]), MNIST)
    rest, held = small_dataset(10).split(0.3, seed=0)
    assert len(rest) == 7 and len(held) == 3


@pytest.mark.parametrize("labels, message", [
    (np.array([0, 1.7]), r"labels must be integers \(class indices\), got float64; label 1 is 1.7"),
    (np.array([0.0, 1.0]), r"labels must be integers \(class indices\), got float64"),
    (np.array(["0", "1"]), r"labels must be integers \(class indices\), got <U1; label 0 is '0'"),
    (np.array([True, False]), r"labels must be integers \(class indices\), got bool"),
    (np.array([0, np.nan]), r"got float64; label 1 is nan"),
    (np.array([3, -1]), r"labels must be class indices in \[0, 10\); label 1 is -1"),
    ([0, 1], r"2 images need labels of shape \(2,\), got list"),
])
def test_labels_are_class_indices_and_nothing_is_cast(labels, message):
    with pytest.raises((TypeError, ValueError), match=message):
        Dataset(np.zeros((2, 28, 28), np.uint8), labels, MNIST)


def test_a_dataset_prints_in_one_line_and_its_spec_is_checked():
    data = small_dataset(10)
    assert repr(data) == "Dataset(mnist: 10 images 28x28, 10 classes)"
    with pytest.raises(ValueError, match="DatasetSpec std must be > 0"):
        DatasetSpec("mine", {}, (), 0.5, 0.0, ("a", "b"))
    with pytest.raises(TypeError, match="DatasetSpec classes must be a non-empty list of names"):
        DatasetSpec("mine", {}, (), 0.5, 0.2, ())
    with pytest.raises(TypeError, match="DatasetSpec mean must be a finite number"):
        DatasetSpec("mine", {}, (), float("nan"), 0.2, ("a",))


def test_dataset_labels_out_of_range_never_reach_the_loss():
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 10\); label 0 is 12"):
        Dataset(np.zeros((1, 28, 28), np.uint8), np.array([12]), MNIST)


def test_the_fall_back_to_the_subset_is_a_logged_warning_from_python(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("XPCNN_DATA_DIR", raising=False)
    with caplog.at_level("INFO", logger="xpcnn"):
        loaded = load_dataset("mnist", download=False)
    assert "bundled" in loaded.source
    assert [(record.name, record.levelname) for record in caplog.records] == [("xpcnn", "WARNING")]
    assert "using the bundled MNIST subset" in caplog.records[0].getMessage()
