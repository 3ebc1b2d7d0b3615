"""Loading datasets (xpcnn/datasets/loading.py): the bundled subset, the search order and
its fallback, full MNIST from XPCNN_DATA_DIR, corrupt files, the record of a selection."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from xpcnn.datasets import CIFAR10, MNIST, ChecksumError, DataNotFound, load_bundled, load_dataset
from xpcnn.datasets.loading import BUNDLED_CHECKSUMS, Loaded, Selection, bundled_path

from ..helpers import SHARED_MNIST, colour_folder


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


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero here")
@pytest.mark.parametrize("name", ["cifar10", "mnist"])
def test_a_device_named_like_a_data_file_is_named_not_passed_over(tmp_path, monkeypatch, name):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    spec = CIFAR10 if name == "cifar10" else MNIST
    files = [spec.files["archive"].name] if name == "cifar10" else [file.name for file in spec.files.values()]
    for file in files:
        (tmp_path / file).symlink_to("/dev/zero")  # "not found" would send the user looking elsewhere
    with pytest.raises(ValueError, match=f"{files[0]}: not a regular file"):
        load_dataset(name, tmp_path, download=False)


def test_the_fall_back_to_the_subset_is_a_logged_warning_from_python(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("XPCNN_DATA_DIR", raising=False)
    with caplog.at_level("INFO", logger="xpcnn"):
        loaded = load_dataset("mnist", download=False)
    assert "bundled" in loaded.source
    assert [(record.name, record.levelname) for record in caplog.records] == [("xpcnn", "WARNING")]
    assert "using the bundled MNIST subset" in caplog.records[0].getMessage()


def test_cifar10_comes_through_load_dataset_and_is_read_again_from_where_it_was(tmp_path, monkeypatch):
    from .test_cifar import installed_cifar10

    installed_cifar10(tmp_path, monkeypatch)
    loaded = load_dataset("cifar10", tmp_path)
    assert loaded.train.images.shape == (50, 3, 32, 32) and loaded.test.images.shape == (10, 3, 32, 32)
    assert loaded.train.statistics()["mean"] == list(CIFAR10.mean) and loaded.folders == (str(tmp_path.resolve()),)
    assert repr(loaded.train).startswith("Dataset(cifar10: 50 images 32x32 3 channels, 10 classes")
    train, _, test = Selection.from_dict(loaded.train.selection.to_dict()).load()
    np.testing.assert_array_equal(train.images, loaded.train.images)
    np.testing.assert_array_equal(test.labels, loaded.test.labels)
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(DataNotFound, match="cifar-10-binary.tar.gz \\(or its extracted folder\\) not found"):
        load_dataset("cifar10", tmp_path / "elsewhere")


def test_a_folder_read_with_numpy_numbers_records_python_numbers(tmp_path):
    pytest.importorskip("PIL")
    colour_folder(tmp_path / "pics", per_class=4)
    loaded = load_dataset("images", tmp_path / "pics", image_size=np.int64(8), test_split=np.float64(0.25),
                          split_seed=np.int64(3), log=lambda message: None)
    reader = loaded.train.selection.reader
    assert [type(reader[key]) for key in ("image_size", "test_split", "split_seed")] == [int, float, int]
    assert json.loads(json.dumps(loaded.train.selection.to_dict())) == loaded.train.selection.to_dict()  # a record


def test_a_folder_of_pictures_records_how_it_was_read_and_refuses_changes(tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image

    colour_folder(tmp_path / "pics", per_class=6)
    loaded = load_dataset("images", tmp_path / "pics", image_size=8, log=lambda message: None)
    selection = loaded.train.selection
    assert selection.dataset == "images" and selection.reader == {"image_size": 8, "channels": 3, "test_split": 0.2,
                                                                  "on_bad": "refuse", "split_seed": 0,
                                                                  "pictures": "resize"}
    assert loaded.train.input_shape == (3, 8, 8) and loaded.train.spec.classes == ("blue", "green", "red")
    again = Selection.from_dict(selection.to_dict())
    assert again == selection
    np.testing.assert_array_equal(again.load()[0].images, loaded.train.images)
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(tmp_path / "pics" / "red" / "000.png")
    with pytest.raises(DataNotFound, match="have changed since the run read them"):
        again.load()
    (tmp_path / "pics" / "red" / "notes.txt").write_text("a stray file")
    with pytest.raises(DataNotFound, match=r"have changed since the run read them: .*notes.txt: .*; the run reads its "
                       r"folder as it did: remove the file$"):  # not a hint of on_bad, which a run keeps
        again.load()
    with pytest.raises(TypeError, match="image_size: options of a folder of pictures"):
        load_dataset("mnist", image_size=8)
    with pytest.raises(ValueError, match="needs data_dir"):
        load_dataset("images")


def test_a_selection_of_a_folder_needs_its_reading_options():
    recorded = {"dataset": "images", "folders": ["/pics"], "limit": None, "seed": 0, "val_split": 0.0,
                "reader": {"image_size": 8}, "digest": None}
    with pytest.raises(ValueError, match="selection.reader: unusable value"):
        Selection.from_dict(recorded)
    old = {"dataset": "mnist", "folders": None, "limit": None, "seed": 0, "val_split": 0.0}  # before folders
    assert Selection.from_dict(old) == Selection("mnist")
    photos = {"image_size": 8, "channels": 3, "test_split": 0.2, "on_bad": "refuse", "split_seed": 0}  # no pictures:
    assert Selection.from_dict({**recorded, "reader": photos}).reader == photos  # recorded before folders of digits
    for pictures, channels in (("digits", 3), ("photos", 3)):
        with pytest.raises(ValueError, match="selection.reader: unusable value"):
            Selection.from_dict({**recorded, "reader": {**photos, "channels": channels, "pictures": pictures}})
    digits = {**photos, "channels": 1, "pictures": "digits"}
    assert Selection.from_dict({**recorded, "reader": digits}).reader == digits


@pytest.mark.parametrize("parts", [("val",), "test", ()])
def test_parts_name_the_splits_a_dataset_has(tmp_path, parts):
    """("val",) and "test" met a KeyError ('val', 't'); () read nothing and gave a Loaded without either."""
    with pytest.raises(ValueError, match=r"^parts must name one or both of train, test, as a list, got "):
        load_dataset("mnist", tmp_path, parts=parts)


@pytest.mark.parametrize("missing", ["train", "test"])
def test_splits_of_a_dataset_read_in_part_say_which_part_is_missing(missing):
    """It raised "'NoneType' object has no attribute 'sample'"."""
    bundled = load_bundled()
    kept = "test" if missing == "train" else "train"
    loaded = Loaded(**{missing: None, kept: getattr(bundled, kept)})
    with pytest.raises(ValueError, match=rf"^splits needs .*; this mnist was read without its {missing} split"):
        loaded.splits(100)


def test_splits_take_a_numpy_seed_as_an_int_and_refuse_a_bad_one():
    loaded = load_bundled()
    train, _, _ = loaded.splits(limit=100, seed=np.int64(1))
    assert type(train.selection.seed) is int and train.selection.seed == 1
    with pytest.raises(TypeError, match="a seed must be an integer >= 0"):
        loaded.splits(limit=100, seed=None)
    with pytest.raises(ValueError, match="a seed must be an integer >= 0"):
        loaded.splits(limit=100, seed=-1)


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="the shared MNIST files are not here")
def test_download_finds_files_in_the_dataset_s_subfolder_as_loading_does(tmp_path, monkeypatch):
    from xpcnn.datasets import download

    monkeypatch.setattr("xpcnn.datasets.loading.download_file", lambda *args, **kwargs: pytest.fail("downloaded"))
    (tmp_path / "mnist").mkdir()
    for path in SHARED_MNIST.glob("*.gz"):
        (tmp_path / "mnist" / path.name).write_bytes(path.read_bytes())
    found = download("mnist", tmp_path)
    assert [downloaded for _, downloaded in found] == [False] * 4
    assert all(path.parent == tmp_path / "mnist" for path, _ in found)


@pytest.mark.parametrize("dataset, folders", [("mnist", []), ("mnist", [""]), ("mnist", ["/a"] * 5),
                                              ("images", ["/a", "/b"])])
def test_a_selection_names_one_to_four_folders_one_for_pictures(dataset, folders):
    reader = {"image_size": 8, "channels": 3, "test_split": 0.2, "on_bad": "refuse", "split_seed": 0}
    recorded = {"dataset": dataset, "folders": folders, "limit": None, "seed": 0, "val_split": 0.0,
                "reader": reader if dataset == "images" else {}, "digest": None}
    with pytest.raises(ValueError, match="selection.folders: unusable value"):
        Selection.from_dict(recorded)


def test_the_reader_options_a_selection_records_are_load_images_own():
    """FOLDER_OPTIONS held load_images' defaults too, a copy nothing read."""
    import inspect

    from xpcnn.datasets.loading import FOLDER_OPTIONS, load_images

    assert list(inspect.signature(load_images).parameters)[1:1 + len(FOLDER_OPTIONS)] == list(FOLDER_OPTIONS)
