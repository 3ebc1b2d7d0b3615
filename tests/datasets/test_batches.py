"""The batch iterator (xpcnn/datasets/batches.py): partial batches, normalisation, order
as a function of seed and epoch, random shifts."""

from __future__ import annotations

import numpy as np

from xpcnn import backend
from xpcnn.datasets import batches, epoch_order, num_batches

from ..helpers import small_dataset


def test_batches_keep_the_last_partial_batch_and_normalise(target):
    data = small_dataset(10)
    got = list(batches(data, 4, shuffle=False, backend_name=target[0], device=target[1]))
    assert [int(y.shape[0]) for _, y in got] == [4, 4, 2] == [4, 4, 2][: num_batches(10, 4)]
    x0 = backend.to_numpy(got[0][0])
    assert x0.shape == (4, 1, 28, 28) and x0.dtype == np.float32
    expected = (data.images[:4].astype(np.float32) / 255 - np.float32(0.1307)) / np.float32(0.3081)
    np.testing.assert_allclose(x0[:, 0], expected, rtol=1e-6)
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


def test_random_shifts_move_pixels_and_are_reproducible():
    from xpcnn.datasets.batches import random_shifts

    image = np.zeros((1, 28, 28), np.uint8)
    image[0, 10:18, 12:16] = 255
    shifted = random_shifts(np.repeat(image, 50, axis=0), 2, np.random.default_rng(0))
    assert shifted.shape == (50, 28, 28) and shifted.dtype == np.uint8
    assert np.all(shifted.reshape(50, -1).sum(axis=1) == image.sum())  # nothing falls off the edge here
    moves = {tuple(np.argwhere(s)[0] - (10, 12)) for s in shifted}
    assert moves <= {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)} and len(moves) > 10
    again = random_shifts(np.repeat(image, 50, axis=0), 2, np.random.default_rng(0))
    np.testing.assert_array_equal(shifted, again)
    data = small_dataset(10)
    first = [backend.to_numpy(x) for x, _ in batches(data, 4, seed=3, epoch=1, augment=2)]
    resumed = [backend.to_numpy(x) for x, _ in batches(data, 4, seed=3, epoch=1, augment=2, start=1)]
    np.testing.assert_array_equal(first[1], resumed[0])  # a resumed epoch sees the same shifts
