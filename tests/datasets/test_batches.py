"""The batch iterator (xpcnn/datasets/batches.py): partial batches, normalisation, order
as a function of seed and epoch, augmentation (shifts, reflected crops, flips)."""

from __future__ import annotations

import numpy as np
import pytest

from xpcnn import backend
from xpcnn.datasets import batches, epoch_order, num_batches
from xpcnn.datasets.batches import Augment, random_crops

from ..helpers import small_dataset


def test_batches_keep_the_last_partial_batch_and_normalise(target):
    data = small_dataset(10)
    got = list(batches(data, 4, shuffle=False, backend_name=target[0], device=target[1]))
    assert [int(y.shape[0]) for _, y in got] == [4, 4, 2] == [4, 4, 2][: num_batches(10, 4)]
    x0 = backend.to_numpy(got[0][0])
    assert x0.shape == (4, 1, 28, 28) and x0.dtype == np.float32
    expected = (data.images[:4].astype(np.float32) / 255 - np.float32(0.1307)) / np.float32(0.3081)
    np.testing.assert_allclose(x0, expected, rtol=1e-6)
    assert backend.dtype_name(got[0][1].dtype) == "int64"


def test_batch_order_is_a_function_of_seed_and_epoch():
    data = small_dataset(10)

    def labels(**kw):
        return np.concatenate([y for _, y in batches(data, 3, **kw)])

    assert np.array_equal(labels(seed=1, epoch=2), labels(seed=1, epoch=2))
    assert not np.array_equal(epoch_order(10, 1, 2), epoch_order(10, 1, 3))
    # Starting at batch 2 yields exactly the tail of the same epoch.
    assert np.array_equal(labels(seed=1, epoch=2, start=2), labels(seed=1, epoch=2)[6:])
    assert sorted(epoch_order(10, 1, 2)) == list(range(10))


@pytest.mark.parametrize("option, value, kind, message", [
    ("seed", -1, ValueError, r"^seed must be >= 0, got -1$"),  # was NumPy's "expected non-negative integer"
    ("epoch", -2, ValueError, r"^epoch must be >= 0, got -2$"),
    ("start", -1, ValueError, r"^start must be >= 0, got -1$"),  # an empty batch came first, then every one
    ("seed", 1.5, TypeError, r"^seed must be an integer, got 1.5$"),
    ("shard", (2, 2), ValueError, r"^shard rank must be below the size, 2, got 2$"),  # gave empty batches
    ("shard", (0, 0), ValueError, r"^shard size must be >= 1, got 0$"),  # ZeroDivisionError
    ("shard", 2, TypeError, r"^shard must be a pair \(rank, size\), got 2$"),
])
def test_seed_epoch_start_and_shard_are_counts(option, value, kind, message):
    with pytest.raises(kind, match=message):
        next(batches(small_dataset(10), 4, **{option: value}))


def test_batches_are_normalised_in_the_dtype_asked_for():
    data = small_dataset(8)
    for dtype in ("float32", "float64"):
        (x, _), = batches(data, 8, shuffle=False, dtype=dtype)
        np.testing.assert_array_equal(x, data.normalize(data.images, dtype))  # computed in it, not widened
        assert x.dtype == np.dtype(dtype)


def test_random_crops_with_zeros_are_shifts_and_are_reproducible():
    image = np.zeros((1, 1, 28, 28), np.uint8)
    image[0, 0, 10:18, 12:16] = 255
    shifted = random_crops(np.repeat(image, 50, axis=0), 2, "zero", np.random.default_rng(0))
    assert shifted.shape == (50, 1, 28, 28) and shifted.dtype == np.uint8
    assert np.all(shifted.reshape(50, -1).sum(axis=1) == image.sum())  # nothing falls off the edge here
    moves = {tuple(np.argwhere(s[0])[0] - (10, 12)) for s in shifted}
    assert moves <= {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)} and len(moves) > 10
    again = random_crops(np.repeat(image, 50, axis=0), 2, "zero", np.random.default_rng(0))
    np.testing.assert_array_equal(shifted, again)
    data = small_dataset(10)
    first = [backend.to_numpy(x) for x, _ in batches(data, 4, seed=3, epoch=1, augment=2)]
    resumed = [backend.to_numpy(x) for x, _ in batches(data, 4, seed=3, epoch=1, augment=2, start=1)]
    np.testing.assert_array_equal(first[1], resumed[0])  # a resumed epoch sees the same shifts


def test_reflected_crops_move_every_channel_alike_and_fill_from_the_image():
    rng = np.random.default_rng(1)
    images = rng.integers(1, 256, (20, 3, 8, 8), dtype=np.uint8)
    cropped = random_crops(images, 3, "reflect", np.random.default_rng(2))
    assert cropped.shape == images.shape and np.all(cropped > 0)  # reflected: no zeros brought in
    offsets = np.random.default_rng(2).integers(0, 7, size=(20, 2))
    padded = np.pad(images, ((0, 0), (0, 0), (3, 3), (3, 3)), mode="reflect")
    for k, (dy, dx) in enumerate(offsets):
        np.testing.assert_array_equal(cropped[k], padded[k, :, dy : dy + 8, dx : dx + 8])


def test_flips_mirror_about_half_the_images_the_same_for_a_resumed_epoch():
    images = np.arange(64 * 3 * 4 * 5, dtype=np.int64).reshape(64, 3, 4, 5).astype(np.uint8)
    flipped = Augment(flip=True).apply(images, seed=0, epoch=1, batch=2)
    mirrored = [bool(np.array_equal(f, i[..., ::-1])) for f, i in zip(flipped, images)]
    kept = [bool(np.array_equal(f, i)) for f, i in zip(flipped, images)]
    assert all(m != k for m, k in zip(mirrored, kept)) and 16 < sum(mirrored) < 48
    np.testing.assert_array_equal(flipped, Augment(flip=True).apply(images, seed=0, epoch=1, batch=2))
    assert not np.array_equal(flipped, Augment(flip=True).apply(images, seed=0, epoch=1, batch=3))


def test_augment_is_checked_and_reads_as_words():
    assert str(Augment(2)) == "shifts of up to 2 px" and str(Augment(4, "reflect", True)) == \
        "reflected crops of up to 4 px and flips"
    assert Augment.of(3) == Augment(3) and not Augment() and str(Augment()) == "none"
    for bad, kind in ((dict(pixels=-1), ValueError), (dict(pixels=1.5), ValueError), (dict(pad="wrap"), ValueError),
                      (dict(flip="yes"), TypeError)):
        with pytest.raises(kind, match="augment"):
            Augment(**bad)
    numpy_made = Augment(np.int64(2), flip=np.True_)  # kept as Python's, which a run's record (JSON) takes
    assert (type(numpy_made.pixels), type(numpy_made.flip)) == (int, bool) and numpy_made == Augment(2, flip=True)
