"""A dataset in memory (xpcnn/datasets/dataset.py): validation of images and labels,
your own arrays (from_arrays), per-channel statistics, digests, samples and splits."""

from __future__ import annotations

import numpy as np
import pytest

from xpcnn.datasets import MNIST, Dataset, DatasetSpec, normalize
from xpcnn.datasets.dataset import channel_statistics

from ..helpers import small_dataset


def test_dataset_validation_and_split():
    with pytest.raises(ValueError, match="labels must be class indices in"):
        Dataset(np.zeros((2, 28, 28), np.uint8), np.array([0, 10]), MNIST)
    with pytest.raises(TypeError, match="images must be a NumPy array of uint8, got float32"):
        Dataset(np.zeros((2, 28, 28), np.float32), np.array([0, 1]), MNIST)
    with pytest.raises(TypeError, match="images must be a NumPy array of uint8, got list"):
        Dataset([[0]], np.array([0]), MNIST)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) with C 1 or 3, or grey \(N, H, W\); got shape \(2, 28\)"):
        Dataset(np.zeros((2, 28), np.uint8), np.array([0, 1]), MNIST)
    rest, held = small_dataset(10).split(0.3, seed=0)
    assert len(rest) == 7 and len(held) == 3


@pytest.mark.parametrize("labels, message", [
    (np.array([0, 1.7]), r"labels must be integers \(class indices\), got float64; the label at index 1 is 1.7"),
    (np.array([0.0, 1.0]), r"labels must be integers \(class indices\), got float64"),
    (np.array(["0", "1"]), r"labels must be integers \(class indices\), got <U1; the label at index 0 is '0'"),
    (np.array([True, False]), r"labels must be integers \(class indices\), got bool"),
    (np.array([0, np.nan]), r"got float64; the label at index 1 is nan"),
    (np.array([3, -1]), r"labels must be class indices in \[0, 10\); the label at index 1 is -1"),
    ([0, 1], r"labels must be a NumPy array of class indices, got list \(Dataset.from_arrays takes lists too\)"),
])
def test_labels_are_class_indices_and_nothing_is_cast(labels, message):
    with pytest.raises((TypeError, ValueError), match=message):
        Dataset(np.zeros((2, 28, 28), np.uint8), labels, MNIST)


def test_a_dataset_prints_in_one_line_and_its_spec_is_checked():
    data = small_dataset(10)
    assert repr(data) == "Dataset(mnist: 10 images 28x28 grey, 10 classes)"
    with pytest.raises(ValueError, match="DatasetSpec std must be > 0"):
        DatasetSpec("mine", {}, (), 0.5, 0.0, ("a", "b"))
    with pytest.raises(TypeError, match="DatasetSpec classes must be a non-empty list of names"):
        DatasetSpec("mine", {}, (), 0.5, 0.2, ())
    with pytest.raises(TypeError, match="DatasetSpec mean must be a finite number"):
        DatasetSpec("mine", {}, (), float("nan"), 0.2, ("a",))


def test_dataset_labels_out_of_range_never_reach_the_loss():
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 10\); the label at index 0 is 12"):
        Dataset(np.zeros((1, 28, 28), np.uint8), np.array([12]), MNIST)


def test_own_arrays_may_be_tensors_that_require_grad():
    # np.asarray of such a tensor raised torch's "Can't call numpy() on Tensor that requires grad"
    torch = pytest.importorskip("torch")
    images = torch.rand(4, 8, 8, requires_grad=True)
    data = Dataset.from_arrays(images, torch.tensor([1, 2, 3, 0]))
    np.testing.assert_array_equal(data.images, Dataset.from_arrays(images.detach().numpy(), [1, 2, 3, 0]).images)


def test_own_arrays_of_any_shape_come_in_with_their_statistics():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 3, 12, 10), dtype=np.uint8)
    labels = rng.integers(0, 4, 40)
    data = Dataset.from_arrays(images, labels, ["a", "b", "c", "d"])
    assert repr(data) == "Dataset(arrays: 40 images 12x10 3 channels, 4 classes, arrays (40 images))"
    assert data.input_shape == (3, 12, 10) and data.spec.classes == ("a", "b", "c", "d")
    scaled = images.astype(np.float64) / 255
    np.testing.assert_allclose(data.spec.mean, scaled.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(data.spec.std, scaled.std(axis=(0, 2, 3)), rtol=1e-9)
    assert data.statistics()["input_shape"] == [3, 12, 10] and data.statistics()["pictures"] == "resize"
    floats = Dataset.from_arrays(images / 255.0, labels, 4)  # floats in [0, 1] are rounded to uint8
    np.testing.assert_array_equal(floats.images, images)
    assert Dataset.from_arrays(images[:, 0], labels).spec.classes == tuple(str(k) for k in range(labels.max() + 1))
    test = Dataset.from_arrays(images[:5], labels[:5], like=data)  # the training split's statistics and classes
    assert test.spec is data.spec


@pytest.mark.parametrize("images, labels, kind, message", [
    (np.zeros((4, 8, 8, 3), np.uint8), [0, 1, 0, 1], ValueError, r"channels last\? pass images.transpose\(0, 3, 1,"),
    (np.zeros((4, 2, 8, 8), np.uint8), [0, 1, 0, 1], ValueError, r"\(N, C, H, W\) with C 1 or 3"),
    (np.zeros((4, 8, 8), np.int32), [0, 1, 0, 1], TypeError, "uint8, or floating in \\[0, 1\\]; got int32"),
    (np.full((4, 8, 8), 2.0), [0, 1, 0, 1], ValueError, "must be in \\[0, 1\\] and finite"),
    (np.full((4, 8, 8), np.nan), [0, 1, 0, 1], ValueError, "must be in \\[0, 1\\] and finite"),
    (np.zeros((0, 8, 8), np.uint8), [], ValueError, "no images"),
    (np.zeros((4, 8, 8), np.uint8), [0, 1, 0], ValueError, r"4 images need labels of shape \(4,\)"),
    (np.zeros((4, 8, 8), np.uint8), [0, 1.5, 0, 1], TypeError, "the label at index 1 is 1.5"),
    (np.zeros((4, 8, 8), np.uint8), [0, -1, 0, 1], ValueError, "the label at index 1 is -1"),
])
def test_own_arrays_get_one_clear_error_per_problem(images, labels, kind, message):
    with pytest.raises(kind, match=message):
        Dataset.from_arrays(images, np.asarray(labels), 2 if len(labels) else None)


@pytest.mark.parametrize("labels", [1, None, "abc"])
def test_labels_that_are_no_row_are_refused_by_their_shape(labels):
    """A scalar has no len(): from_arrays counted the labels for its source and raised
    Python's "len() of unsized object" before the check of their shape."""
    images = np.zeros((4, 8, 8), np.uint8)
    data = Dataset.from_arrays(images, [0, 1, 0, 1])
    for options in ({"classes": 2}, {"like": data}):
        with pytest.raises(ValueError, match=r"^arrays: 4 images need labels of shape \(4,\), got \(\)$"):
            Dataset.from_arrays(images, labels, **options)


def test_class_names_must_be_a_count_or_distinct_names():
    images, labels = np.zeros((2, 4, 4), np.uint8), np.array([0, 1])
    for classes, kind, message in ((["a", "a"], ValueError, "must differ"), (["a", " "], ValueError, "not be blank"),
                                   ([1, 2], TypeError, "a count or a list"),
                                   (0, ValueError, ">= 2"), (1, ValueError, ">= 2"),
                                   (["a"], ValueError, "at least 2 classes apart")):
        with pytest.raises(kind, match=message):
            Dataset.from_arrays(images, labels, classes)
    with pytest.raises(TypeError, match="like must be a Dataset or a trained network"):
        Dataset.from_arrays(images, labels, like="mnist")


def test_new_arrays_like_a_loaded_checkpoint_s_model_are_scored_as_its_training_data(tmp_path):
    import xpcnn

    rng = np.random.default_rng(0)
    train = Dataset.from_arrays(rng.integers(0, 256, (20, 3, 8, 8), dtype=np.uint8), np.arange(20) % 3,
                                ["red", "green", "blue"])
    model = xpcnn.Sequential([xpcnn.Flatten(), xpcnn.Dense(3 * 8 * 8, 3)])
    xpcnn.save_checkpoint(tmp_path / "c.npz", model, data=train)
    loaded = xpcnn.load_checkpoint(tmp_path / "c.npz").model
    new = Dataset.from_arrays(rng.integers(0, 256, (5, 3, 8, 8), dtype=np.uint8), [0, 1, 2, 2, 1], like=loaded)
    assert new.spec.mean == train.spec.mean and new.spec.classes == ("red", "green", "blue")
    like_train = Dataset.from_arrays(new.images, new.labels, like=train)
    scored, as_train = xpcnn.evaluate(loaded, new), xpcnn.evaluate(loaded, like_train)
    assert scored["loss"] == as_train["loss"] and list(scored["predictions"]) == list(as_train["predictions"])
    with pytest.raises(ValueError, match=r"or like=model\)"):
        xpcnn.evaluate(loaded, Dataset.from_arrays(new.images, new.labels, ["red", "green", "blue"]))
    with pytest.raises(TypeError, match="got a Sequential that does not know its training data"):
        Dataset.from_arrays(new.images, new.labels, like=xpcnn.Sequential([xpcnn.Flatten()]))
    # taken, another size or channel count (then told "the spec has a mean and std for 3")
    with pytest.raises(ValueError, match=r"images 3x6x6 \(C x H x W\), but the images like's network was trained on "
                                         r"are 3x8x8"):
        Dataset.from_arrays(new.images[:, :, :6, :6], new.labels, like=loaded)
    with pytest.raises(ValueError, match=r"images 1x8x8 \(C x H x W\), but the images of like \(arrays\) are 3x8x8"):
        Dataset.from_arrays(new.images[:, 0], new.labels, like=train)


def test_channel_statistics_are_exact_and_a_constant_channel_stays_finite():
    images = np.zeros((3, 2, 4, 4), np.uint8)
    images[:, 1] = np.arange(16, dtype=np.uint8).reshape(4, 4) * 16
    mean, std = channel_statistics(images)
    assert mean[0] == 0.0 and std[0] == 1.0  # constant: std 1, not a division by zero
    values = np.arange(16) * 16 / 255
    assert mean[1] == pytest.approx(values.mean(), abs=1e-15) and std[1] == pytest.approx(values.std(), rel=1e-12)


def test_normalize_takes_a_mean_and_std_per_channel_and_grey_images_without_their_axis():
    images = np.full((2, 3, 2, 2), 255, np.uint8)
    out = normalize(images, [0.5, 0.0, 1.0], [0.5, 1.0, 2.0])
    assert out.shape == (2, 3, 2, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0, :, 0, 0], [1.0, 1.0, 0.0])
    assert normalize(images[:, 0], 0.0, 1.0).shape == (2, 1, 2, 2)
    with pytest.raises(ValueError, match="3-channel images need a mean and std per channel, got 1 and 1"):
        normalize(images, 0.5, 0.5)


def test_normalize_in_float64_rounds_once_to_float64():
    """A float64 network read inputs computed in float32 and then widened: errors of 1e-7."""
    images = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
    exact = (images.astype(np.float64) / 255 - MNIST.mean) / MNIST.std
    wide = normalize(images, MNIST.mean, MNIST.std, "float64")
    assert wide.dtype == np.float64 and np.max(np.abs(wide - exact)) < 1e-15
    assert np.max(np.abs(normalize(images, MNIST.mean, MNIST.std) - exact)) > 1e-8  # float32's rounding
    assert normalize(images, MNIST.mean, MNIST.std, np.float64).dtype == np.float64
    with pytest.raises(ValueError, match="unsupported dtype 'int8'"):
        normalize(images, MNIST.mean, MNIST.std, "int8")


def test_the_digest_follows_images_labels_and_classes():
    data = small_dataset(10)
    same = Dataset(data.images.copy(), data.labels.copy(), MNIST)
    assert data.digest() == same.digest() and len(data.digest()) == 64
    changed = data.images.copy()
    changed[0, 0, 0, 0] ^= 1
    assert Dataset(changed, data.labels, MNIST).digest() != data.digest()
    relabelled = Dataset(data.images, (data.labels + 1) % 10, MNIST)
    assert relabelled.digest() != data.digest()


def test_samples_are_counted_in_whole_images():
    data = small_dataset(10)
    for bad in (-1, 0, 2.5, True):
        with pytest.raises(ValueError, match="count must be an integer >= 1"):
            data.sample(bad)
    assert len(data.sample(None)) == 10 and len(data.sample(3)) == 3


def test_a_sample_or_split_of_a_whole_split_reads_again_as_the_same_images():
    from xpcnn.datasets.loading import load_bundled

    train = load_bundled().train
    drawn = train.sample(50, seed=3)
    assert (drawn.selection.limit, drawn.selection.seed) == (50, 3)
    again = drawn.selection.load()[0]
    assert np.array_equal(again.images, drawn.images) and np.array_equal(again.labels, drawn.labels)
    rest, held_out = drawn.split(0.2, seed=3)
    again_rest, again_held_out, _ = rest.selection.load()
    assert np.array_equal(again_rest.images, rest.images) and np.array_equal(again_held_out.images, held_out.images)


def test_a_sample_that_no_selection_reads_again_has_none():
    from xpcnn.datasets.loading import load_bundled

    drawn = load_bundled().train.sample(50, seed=3)
    assert drawn.sample(20).selection is None  # a sample of a sample
    assert drawn.split(0.2, seed=4)[0].selection is None  # split with another seed than the draw's
    assert drawn.subset(np.arange(5)).selection is None


def test_only_the_training_split_and_its_draws_read_again_as_training_images():
    from xpcnn.datasets.loading import load_bundled

    loaded = load_bundled()
    assert loaded.train.training_selection() is loaded.train.selection
    assert loaded.test.training_selection() is None  # its selection reads the run's data, whose test part it is
    assert loaded.test.sample(50, seed=3).selection is None
    drawn = loaded.train.sample(50, seed=np.int64(3))
    assert type(drawn.selection.seed) is int and drawn.training_selection() is drawn.selection  # JSON-safe
    assert drawn.split(0.2, seed=3)[1].training_selection() is None  # the held-out part


@pytest.mark.parametrize("seed, error", [(None, TypeError), (-1, ValueError), (3.5, TypeError), (True, TypeError),
                                         ("3", TypeError), (np.int64(-2), ValueError)])
def test_a_seed_is_an_integer_at_least_0(seed, error):
    data = small_dataset(10)
    with pytest.raises(error, match="a seed must be an integer >= 0"):
        data.sample(5, seed=seed)
    with pytest.raises(error, match="a seed must be an integer >= 0"):
        data.split(0.5, seed=seed)


@pytest.mark.parametrize("fraction, message", [("0.1", "a number in"), (True, "a number in"),
                                               (1e-9, "leaves a part empty"), (0.99, "leaves a part empty")])
def test_a_split_that_is_not_a_fraction_or_leaves_a_part_empty_is_refused(fraction, message):
    with pytest.raises(ValueError, match=message):
        small_dataset(10).split(fraction)


def test_one_number_serves_every_channel_and_a_list_must_match_them():
    from xpcnn.datasets.dataset import per_channel

    assert per_channel(0.5, "mean", -1e6, 3) == [0.5] * 3 and per_channel([0.1, 0.2], "mean", -1e6, None) == [0.1, 0.2]
    with pytest.raises(ValueError, match=r"^std needs one value per channel of the network's images \(3\), got 2$"):
        per_channel([0.1, 0.2], "std", 1e-12, 3)
    with pytest.raises(ValueError, match=r"^std must be in \[1e-12, 1000000.0\], got 0.0$"):
        per_channel(0.0, "std", 1e-12, 1)
    # a 0-d array is one number too: it met NumPy's "iteration over a 0-d array"
    assert per_channel(np.asarray(0.5), "mean", -1e6, 3) == [0.5] * 3
    assert per_channel(np.asarray([0.5]), "mean", -1e6, 1) == [0.5]


def test_class_names_that_are_not_printable_are_refused():
    with pytest.raises(ValueError, match=r"class names must be printable, of at most 255 characters \(they are "
                                         r"printed\), got 'a\\nb'"):
        Dataset.from_arrays(np.zeros((2, 4, 4), np.uint8), [0, 1], ["a\nb", "c"])
    for name in ("a\u202eb", "a\x1b[31mb", "a\u2028b", "x" * 256):
        with pytest.raises(ValueError, match="class names must be printable"):
            Dataset.from_arrays(np.zeros((2, 4, 4), np.uint8), [0, 1], [name, "c"])
    names = ["می\u200cخواهم", "\U0001f468\u200d\U0001f469", "New\xa0York"]  # ordinary names, not all isprintable()
    assert Dataset.from_arrays(np.zeros((3, 4, 4), np.uint8), [0, 1, 2], names).spec.classes == tuple(names)


def test_datasets_compare_by_value_not_by_numpy_truth():
    # == raised "The truth value of an array with more than one element is ambiguous"
    images, labels = np.arange(2 * 16, dtype=np.uint8).reshape(2, 1, 4, 4), np.array([0, 1])
    data = Dataset.from_arrays(images, labels)
    assert data == Dataset.from_arrays(images.copy(), labels.copy())
    assert data != Dataset.from_arrays(images, labels[::-1].copy())
    assert data != Dataset.from_arrays(images[:, :, :2], labels)
    assert data != "data" and data != data.subset(np.array([0]))
