"""Using a network: evaluate, predict; and the same for a saved model."""

from __future__ import annotations

import numpy as np
import pytest

from xpcnn import Trainer, presets
from xpcnn.datasets import MNIST, load_bundled
from xpcnn.evaluation import classify_files, evaluate, evaluate_checkpoint, predict
from xpcnn.io.checkpoint import CheckpointError, save_checkpoint

from .helpers import small_net


@pytest.fixture(scope="module")
def test_set():
    return load_bundled().test.subset(np.arange(300))


def test_evaluate_and_predict_agree(test_set):
    net = small_net()
    result = evaluate(net, test_set, batch_size=128)
    assert result["predictions"].shape == (300,) and 0 <= result["accuracy"] <= 1
    probabilities = predict(net, test_set.images[:5], MNIST.mean, MNIST.std)
    assert probabilities.shape == (5, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(np.argmax(probabilities, axis=1), result["predictions"][:5])


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    train, _, _ = load_bundled().splits(limit=256)  # records that it trained on the bundled subset
    trainer = Trainer.for_preset("tutorial", train_size=len(train), run_dir=folder, progress=False,
                                 log=lambda message: None)
    trainer.fit(train, 1)
    return trainer


def test_a_saved_model_gives_what_the_live_one_gives(saved_run, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("XPCNN_DATA_DIR", raising=False)
    notes = []
    result = evaluate_checkpoint(saved_run.checkpoint_path, download=False, log=notes.append)
    live = evaluate(saved_run.model, load_bundled().test)
    assert result["accuracy"] == live["accuracy"] and result["images"] == 2000
    assert result["data"].startswith("bundled MNIST subset")
    assert not any(note.startswith("note:") for note in notes)

    images = load_bundled().test.images[:3]
    for index, image in enumerate(images):
        np.save(tmp_path / f"{index}.npy", image)
    results = classify_files(saved_run.checkpoint_path, [tmp_path / f"{i}.npy" for i in range(3)], top=2)
    expected = predict(saved_run.model, images, MNIST.mean, MNIST.std)
    for result, probabilities in zip(results, expected):
        assert result.error is None and len(result.classes) == 2
        assert result.classes[0][0] == str(int(np.argmax(probabilities)))
        assert result.classes[0][1] == pytest.approx(float(probabilities.max()))


def test_a_checkpoint_saved_before_training_says_what_it_lacks(tmp_path):
    path = tmp_path / "untrained.npz"
    save_checkpoint(path, presets.build("tutorial"))
    with pytest.raises(CheckpointError, match=r"untrained.npz: no data statistics .*Trainer.fit writes them"):
        evaluate_checkpoint(path, download=False)
