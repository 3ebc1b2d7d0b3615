"""Using a network: evaluate, predict; and the same for a saved model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import xpcnn
from xpcnn import Trainer, presets
from xpcnn.datasets import MNIST, Dataset, batches, load_bundled, normalize
from xpcnn.datasets.folder import FolderError
from xpcnn.evaluation import NotFiniteOutputs, classify_files, evaluate, evaluate_checkpoint, predict
from xpcnn.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

from .helpers import colour_folder, small_net


@pytest.fixture(scope="module")
def test_set():
    return load_bundled().test.subset(np.arange(300))


def test_evaluate_and_predict_agree(test_set):
    net = small_net()
    result = evaluate(net, test_set, batch_size=128)
    assert result["predictions"].shape == (300,) and 0 <= result["accuracy"] <= 1
    confusion = result["confusion"]  # counts[true, predicted]
    assert confusion.shape == (10, 10) and confusion.sum() == 300
    np.testing.assert_array_equal(confusion.sum(axis=1), np.bincount(test_set.labels, minlength=10))
    np.testing.assert_array_equal(confusion.sum(axis=0), np.bincount(result["predictions"], minlength=10))
    assert np.trace(confusion) == round(result["accuracy"] * 300)
    probabilities = predict(net, test_set.images[:5], MNIST.mean, MNIST.std)
    assert probabilities.shape == (5, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(np.argmax(probabilities, axis=1), result["predictions"][:5])
    np.testing.assert_allclose(result["confidences"][:5], probabilities.max(axis=1), rtol=1e-5)
    assert result["confidences"].shape == (300,) and result["confidences"].dtype == np.float64


def test_a_float64_network_predicts_from_inputs_normalised_in_float64(test_set):
    """It read inputs normalised in float32 and widened: errors of 1e-7 in every input."""
    net, images = small_net().to("numpy", dtype="float64"), test_set.images[:5]
    logits = net.forward(normalize(images, MNIST.mean, MNIST.std, "float64"), training=False)
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_array_equal(predict(net, images, MNIST.mean, MNIST.std),
                                  expected / expected.sum(axis=1, keepdims=True))


def test_one_colour_image_is_taken_by_a_network_that_does_not_know_its_data():
    """(3, 8, 8) was refused as 'expects 3-channel images': only a network with model.data
    knew the shape of one image (occlusion and feature_maps take one image only)."""
    net = xpcnn.Sequential([xpcnn.Conv2D(3, 2, 3, rng=0), xpcnn.Flatten(), xpcnn.Dense(72, 4, rng=1)])
    images = np.random.default_rng(0).integers(0, 256, (2, 3, 8, 8), dtype=np.uint8)
    np.testing.assert_allclose(predict(net, images[1], 0.5, 0.25), predict(net, images, 0.5, 0.25)[1:], rtol=1e-6)
    with pytest.raises(ValueError, match=r"expects 3-channel images .*; got shape \(4, 8, 8\)"):
        predict(net, np.zeros((4, 8, 8), np.uint8), 0.5, 0.25)


def test_predict_says_why_floating_images_are_not_pixels():
    net, images = small_net(), np.full((2, 1, 28, 28), 0.5)
    images[1, 0, 3, 3] = np.nan
    with pytest.raises(TypeError, match=r"floating ones in \[0, 1\]; got float64 with NaN or Inf$"):
        predict(net, images, MNIST.mean, MNIST.std)
    with pytest.raises(TypeError, match=r"floating ones in \[0, 1\]; got float64 outside \[0, 1\]$"):
        predict(net, np.full_like(images, 2.0), MNIST.mean, MNIST.std)


def test_predict_takes_images_of_any_backend_a_tensor_that_requires_grad_too():
    # np.asarray of such a tensor raised torch's "Can't call numpy() on Tensor that requires grad"
    torch = pytest.importorskip("torch")
    net, images = small_net(), np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    expected = predict(net, images, MNIST.mean, MNIST.std)
    given = torch.tensor(images, requires_grad=True)
    np.testing.assert_array_equal(predict(net, given, MNIST.mean, MNIST.std), expected)


def test_predict_and_evaluate_name_what_they_were_given_instead(test_set):
    net = small_net()
    # a Dataset was "got object"; flat images were named by the batch made of them, (1, 1, 3, 784)
    with pytest.raises(TypeError, match=r"predict takes images \(an array\), got a Dataset: pass its .images, or "
                                        r"score it with evaluate\(model, dataset\)"):
        predict(net, test_set, MNIST.mean, MNIST.std)
    flat = test_set.images[:3].reshape(3, -1)
    with pytest.raises(ValueError, match=r"predict: the network does not take 1x3x784 images: layer 2 \(MaxPool2D\)"):
        predict(net, flat, MNIST.mean, MNIST.std)  # read as one grey image 3x784; was MaxPool2D's own error
    net.data = test_set.statistics()
    with pytest.raises(ValueError, match=r"predict expects 1x28x28 images .*; got shape \(3, 784\)$"):
        predict(net, flat)
    with pytest.raises(TypeError, match="evaluate takes a Sequential or a checkpoint's path, got list"):
        evaluate([net], test_set)


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
    result = evaluate_checkpoint(saved_run.checkpoint_path, download=False, full_test_set=True, log=notes.append)
    live = evaluate(saved_run.model, load_bundled().test)
    assert result["accuracy"] == live["accuracy"] and result["images"] == 2000
    scored = evaluate_checkpoint(saved_run.checkpoint_path.parent, download=False)  # the run folder: its own sample
    assert scored["images"] == 256
    assert "256 of its 2,000 test images, drawn as for a run limited to 256 images" in scored["data"]
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
    globbed = classify_files(saved_run.checkpoint_path, (tmp_path / f"{i}.npy" for i in range(3)), top=2)
    assert [result.classes for result in globbed] == [result.classes for result in results]  # any iterable
    one = str(tmp_path / "0.npy")
    for wrong, error, message in [({"images": one}, TypeError, "takes a list of image files, got str"),
                                  ({"top": 0}, ValueError, "classify_files top must be >= 1, got 0"),
                                  ({"top": "2"}, TypeError, "classify_files top must be an integer"),
                                  ({"invert": "yes"}, TypeError, "invert must be True, False or None")]:
        with pytest.raises(error, match=message):
            classify_files(saved_run.checkpoint_path, **{"images": [tmp_path / "0.npy"], **wrong})


def test_a_folder_of_digit_pictures_is_scored_as_predict_reads_each(saved_run, tmp_path):
    """Read as photos (no ink inverted, no centring), dark digits on paper scored 4 % while
    predict named the same files at 99 %."""
    pytest.importorskip("PIL")
    from PIL import Image

    test = load_bundled().test
    files, labels = [], []
    for label in range(10):
        (tmp_path / "digits" / str(label)).mkdir(parents=True)
        for image in test.images[test.labels == label][:2]:  # dark ink on light paper, twice MNIST's size
            files.append(tmp_path / "digits" / str(label) / f"{len(files)}.png")
            Image.fromarray(255 - image.reshape(28, 28)).resize((56, 56), Image.Resampling.BICUBIC).save(files[-1])
            labels.append(label)
    result = evaluate_checkpoint(saved_run.checkpoint_path, "images", tmp_path / "digits")
    named = [int(found.classes[0][0]) for found in classify_files(saved_run.checkpoint_path, files)]
    expected = np.zeros((10, 10), int)
    np.add.at(expected, (labels, named), 1)
    np.testing.assert_array_equal(result["confusion"], expected)
    assert result["images"] == 20 and result["accuracy"] == np.mean(np.equal(labels, named)) > 0.5


def test_another_folder_of_train_and_test_is_scored_on_its_test_pictures_alone(saved_run, tmp_path):
    """Its train/ was decoded too, and a file there that is no picture failed the evaluation."""
    pytest.importorskip("PIL")
    from PIL import Image

    test = load_bundled().test
    for part, count in (("train", 3), ("test", 2)):
        for label in range(10):
            (tmp_path / "digits" / part / str(label)).mkdir(parents=True)
            for k, image in enumerate(test.images[test.labels == label][:count]):
                Image.fromarray(255 - image.reshape(28, 28)).save(tmp_path / "digits" / part / str(label) / f"{k}.png")
    (tmp_path / "digits" / "train" / "3" / "notes.png").write_text("not a picture")
    result = evaluate_checkpoint(saved_run.checkpoint_path, "images", tmp_path / "digits")
    assert result["images"] == 20 and "digits/test: 20 pictures" in result["data"]


def test_the_run_s_own_folder_moved_is_scored_on_its_test_split_not_whole(tmp_path):
    """Scored whole as another folder, a moved folder's training pictures inflated the
    score; the run's own folder, gone, did not say that --data-dir names where it is now."""
    pytest.importorskip("PIL")
    from xpcnn.train import start_run

    colour_folder(tmp_path / "photos", per_class=10)
    trainer, (train, _, test) = start_run("compact", dataset="images", data_dir=tmp_path / "photos",
                                          folder_options={"image_size": 16, "progress": False},
                                          run_dir=tmp_path / "run", progress=False, log=lambda message: None)
    trainer.fit(train, 1)
    before = evaluate_checkpoint(tmp_path / "run")
    (tmp_path / "photos").rename(tmp_path / "moved")
    with pytest.raises(FolderError, match=r"photos: does not exist.*; if it moved, --data-dir \(data_dir=\) names"):
        evaluate_checkpoint(tmp_path / "run")
    notes = []
    after = evaluate_checkpoint(tmp_path / "run", data_dir=tmp_path / "moved", log=notes.append)
    assert after["images"] == before["images"] == len(test) < 0.5 * len(train)
    np.testing.assert_array_equal(after["confusion"], before["confusion"])
    assert any("holds the pictures the run read from" in note for note in notes)
    for picture in sorted((tmp_path / "moved" / "red").iterdir())[:1]:
        picture.unlink()  # no longer the run's pictures: another folder, scored whole
    whole = evaluate_checkpoint(tmp_path / "run", data_dir=tmp_path / "moved")
    assert whole["images"] == len(train) + len(test) - 1


def test_a_checkpoint_saved_before_training_says_what_it_lacks(tmp_path):
    path = tmp_path / "untrained.npz"
    save_checkpoint(path, presets.build("tutorial"))
    with pytest.raises(CheckpointError, match=r"untrained.npz: no data statistics .*a Trainer's fit writes them"):
        evaluate_checkpoint(path, download=False)


def test_your_own_loop_saved_with_its_data_is_evaluated_used_and_exported(tmp_path):
    """Own arrays, own loop, save_checkpoint(data=): the command's evaluate, predict and
    export read it, and predict from Python needs no mean and std."""
    from xpcnn.datasets import DatasetSpec
    from xpcnn.optim import Adam

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 28, 28), dtype=np.uint8)
    labels = (images[:, :14].mean(axis=(1, 2)) > images[:, 14:].mean(axis=(1, 2))).astype(np.int64)
    spec = DatasetSpec("halves", {}, (), float(images.mean() / 255), float(images.std() / 255), ("top", "bottom"))
    data = Dataset(images, labels, spec)
    net = xpcnn.Sequential([xpcnn.Flatten(), xpcnn.Dense(784, 2, rng=1)])
    optimizer, loss = Adam(net, 1e-3), xpcnn.SoftmaxCrossEntropy()
    for x, y in batches(data, 16, seed=0):
        loss.forward(net.forward(x), y)
        net.backward(loss.backward())
        optimizer.step()
    save_checkpoint(tmp_path / "mine.npz", net, optimizer, data=data)
    loaded = load_checkpoint(tmp_path / "mine.npz")
    assert loaded.model.data["classes"] == ["top", "bottom"] and loaded.model.data["input_shape"] == [1, 28, 28]
    np.testing.assert_allclose(predict(loaded.model, images[:4]), predict(net, images[:4], spec.mean, spec.std))
    np.testing.assert_allclose(predict(tmp_path / "mine.npz", images[:4]), predict(loaded.model, images[:4]))
    # evaluate took no path, as predict does: "'str' object has no attribute 'output_shapes'"
    assert evaluate(str(tmp_path / "mine.npz"), data)["accuracy"] == evaluate(loaded.model, data)["accuracy"]
    np.save(tmp_path / "one.npy", images[0])
    assert classify_files(tmp_path / "mine.npz", [tmp_path / "one.npy"])[0].classes[0][0] in ("top", "bottom")
    assert "Checkpoint(" in repr(loaded) and "optimizer Adam" in repr(loaded)


def test_a_model_is_not_scored_on_classes_it_does_not_know(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("XPCNN_DATA_DIR", raising=False)
    net = xpcnn.Sequential([xpcnn.Flatten(), xpcnn.Dense(784, 2, rng=1)])
    save_checkpoint(tmp_path / "two.npz", net, data={"name": "mnist", "mean": 0.1, "std": 0.3, "classes": ["a", "b"]})
    with pytest.raises(ValueError, match=r"the model classifies 2 classes of mnist \(a, b\), but mnist has 10 "
                       r"\(0, 1, 2, 3\.\.\.\)"):  # "..." only where names are left out
        evaluate_checkpoint(tmp_path / "two.npz", "mnist", download=False)
    with pytest.raises(ValueError, match=r"the data \(mnist\): the network.s output is \(2,\) for each image, but"):
        evaluate(net, load_bundled().test)


def test_a_network_is_not_scored_on_data_unlike_what_it_learned(tmp_path):
    data = load_bundled()
    trainer = Trainer.for_preset("tutorial", train_size=256, progress=False, log=lambda line: None)
    trainer.fit(data.train.sample(256), 1)
    images, labels = data.test.images[:50], data.test.labels[:50]
    own = Dataset.from_arrays(images, labels, list(MNIST.classes))  # its own statistics, not the training set's
    with pytest.raises(ValueError, match=r"normalised with mean \[0\.\d+\], std \[0\.\d+\], but the network was "
                                         r"trained with mean \[0.1307\], std \[0.3081\]: .*like=train"):
        evaluate(trainer.model, own)
    with pytest.raises(ValueError, match="the network classifies the 10 classes of mnist"):
        trainer.finish(Dataset(images, labels, dataclasses.replace(MNIST, classes=tuple("abcdefghij"))))
    assert evaluate(trainer.model, Dataset.from_arrays(images, labels, like=data.train))["accuracy"] > 0.3
    colour = Dataset.from_arrays(np.repeat(images, 3, axis=1), labels, 10)
    with pytest.raises(ValueError, match=r"the network was trained on 1x28x28 images, but the images of the data are "
                                         r"3x28x28"):
        evaluate(trainer.model, colour)
    # a test set of its own classes was told "its last layer needs 3 outputs", as if the network were wrong
    with pytest.raises(ValueError, match=r"classifies the 10 classes of mnist .*, but the data has the 3 of arrays "
                                         r"\(0, 1, 2\) \(a set of your own arrays takes the training set's classes"):
        evaluate(trainer.model, Dataset.from_arrays(images, labels % 3))


def test_save_checkpoint_refuses_data_that_could_never_be_loaded(tmp_path):
    net = presets.build("tutorial")
    with pytest.raises(ValueError, match="save_checkpoint data: field data: expected an object with"):
        save_checkpoint(tmp_path / "a.npz", net, data={"mean": 0.1, "std": 0.3})
    two_classes = Dataset.from_arrays(np.zeros((2, 28, 28), np.uint8), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"save_checkpoint data: the network's output is \(10,\) for each image, but"):
        save_checkpoint(tmp_path / "b.npz", net, data=two_classes)
    assert not (tmp_path / "a.npz").exists() and not (tmp_path / "b.npz").exists()


def test_a_model_saved_from_your_own_loop_on_the_bundled_subset_is_evaluated_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("XPCNN_DATA_DIR", raising=False)
    data = load_bundled()
    net = presets.build("tutorial")
    save_checkpoint(tmp_path / "mine.npz", net, data=data.train)
    result = evaluate_checkpoint(tmp_path / "mine.npz", download=False)
    assert result["images"] == 2000 and "bundled MNIST subset" in result["data"]


def test_a_run_that_does_not_record_its_data_is_told_to_name_it(tmp_path, monkeypatch):
    from xpcnn.datasets.loading import DataNotFound

    monkeypatch.delenv("XPCNN_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    net = small_net()
    trainer = Trainer(net, xpcnn.optim.SGD(net, 0.01), batch_size=32, progress=False, run_dir=tmp_path / "run")
    trainer.fit(load_bundled().train.sample(256, seed=1).sample(64, seed=2), 1)  # a draw of a draw: no selection
    with pytest.raises(DataNotFound, match="does not record where its mnist was read .*--data-dir names the folder"):
        evaluate_checkpoint(tmp_path / "run", download=False)


def test_one_mean_and_std_serve_every_channel_of_the_network():
    net = xpcnn.Sequential([xpcnn.Conv2D(3, 4, 3), xpcnn.GlobalAvgPool2D(), xpcnn.Dense(4, 2)])
    images = np.random.default_rng(0).integers(0, 256, (2, 3, 8, 8)).astype(np.uint8)
    np.testing.assert_array_equal(predict(net, images, mean=0.5, std=0.25),
                                  predict(net, images, mean=[0.5] * 3, std=[0.25] * 3))
    with pytest.raises(ValueError, match=r"predict mean needs one value per channel of the network's images \(3\), "
                                         r"got 2"):
        predict(net, images, mean=[0.5, 0.5], std=0.25)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # NumPy's, on the way to the NaN
def test_outputs_that_are_not_finite_are_an_error_not_a_score():
    rng = np.random.default_rng(0)
    data = Dataset.from_arrays(rng.integers(0, 256, (6, 1, 4, 4), dtype=np.uint8), np.arange(6) % 2)
    model = xpcnn.Sequential([xpcnn.BatchNorm2D(1), xpcnn.Flatten(), xpcnn.Dense(16, 2, rng=0)])
    model.data = data.statistics()
    model.layers[0].buffers["running_var"][...] = -1.0  # sqrt of a negative variance: NaN
    with pytest.raises(NotFiniteOutputs, match="outputs are not finite .* for image 0: its weights or batch norm"):
        xpcnn.predict(model, data.images)
    with pytest.raises(NotFiniteOutputs, match=r"outputs are not finite \(NaN or Inf\) on arrays"):
        xpcnn.evaluate(model, data)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")  # NumPy's, on the way to the Inf
def test_a_file_whose_outputs_are_not_finite_is_named_by_its_path(tmp_path):
    model = xpcnn.Sequential([xpcnn.Flatten(), xpcnn.Dense(28 * 28, 10, rng=0)])
    model.layers[1].params["weight"][...] = np.float32(3e38)  # finite weights whose sums overflow
    save_checkpoint(tmp_path / "big.npz", model, data=load_bundled().train)
    np.save(tmp_path / "bad.npy", np.zeros((3, 3), np.uint8))  # unreadable: not 28x28
    np.save(tmp_path / "ink.npy", np.full((28, 28), 255, np.uint8))
    with pytest.raises(NotFiniteOutputs, match=r"outputs are not finite \(NaN or Inf\) for \S*ink.npy: its weights"):
        classify_files(tmp_path / "big.npz", [tmp_path / "bad.npy", tmp_path / "ink.npy"])
