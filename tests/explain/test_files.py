"""Image files explained by a saved model (xpcnn/explain/files.py), what `xpcnn explain` runs."""

from __future__ import annotations

import os

import numpy as np
import pytest

import xpcnn
from xpcnn.datasets import Dataset, DatasetSpec, batches, load_bundled
from xpcnn.evaluation import classify_files
from xpcnn.explain import explain_files, files, occlusion
from xpcnn.io.checkpoint import load_checkpoint
from xpcnn.presets import SettingsError
from xpcnn.train import Trainer

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The tutorial preset after an epoch of 1,000 bundled digits, and three test digits as .npy files."""
    folder = tmp_path_factory.mktemp("run")
    train, _, test = load_bundled().splits(limit=1000)
    trainer = Trainer.for_preset("tutorial", train_size=len(train), run_dir=folder, progress=False,
                                 log=lambda message: None)
    trainer.fit(train, 1)
    for k in range(3):
        np.save(folder / f"digit{k}.npy", test.images[k, 0])
    return folder, test


def test_each_image_gets_a_picture_and_the_classes_predict_gives(saved, tmp_path):
    run, test = saved
    (tmp_path / "other").mkdir()
    np.save(tmp_path / "other" / "digit0.npy", test.images[1, 0])  # the same name in another folder
    np.save(tmp_path / "filters.npy", test.images[2, 0])  # and the filters' name
    (tmp_path / "notes.png").write_text("not a picture")
    images = [run / "digit0.npy", tmp_path / "notes.png", tmp_path / "other" / "digit0.npy", tmp_path / "filters.npy"]
    written = explain_files(run, images, tmp_path / "out", top=2)
    assert written.filters == tmp_path / "out" / files.FILTERS_NAME
    assert [result.picture and result.picture.name for result in written.images] == [
        "digit0.png", None, "digit0-2.png", "filters-2.png"]
    assert "notes.png: not a readable image" in written.images[1].error
    for result in (written.images[0], *written.images[2:]):
        assert result.picture.read_bytes()[:4] == b"\x89PNG"
        assert result.target == result.classes[0][0]  # the most likely class, unless one is named
    predicted = classify_files(run, images, top=2)
    for result, expected in zip(written.images, predicted):  # float32: one image a forward, or all together
        assert [name for name, _ in result.classes] == [name for name, _ in expected.classes]
        np.testing.assert_allclose([p for _, p in result.classes], [p for _, p in expected.classes], atol=1e-6)
    line = written.images[0].to_line()
    assert line.startswith(f"{run / 'digit0.npy'}: ") and line.endswith(f" -> {tmp_path / 'out' / 'digit0.png'}")
    assert written.images[0].to_dict()["picture"] == str(tmp_path / "out" / "digit0.png")
    assert written.images[1].to_dict() == {"image": str(tmp_path / "notes.png"), "error": written.images[1].error}


def test_an_image_whose_name_is_no_utf8_is_drawn_with_its_name_escaped(saved, tmp_path):
    """Matplotlib cannot draw a lone surrogate (what such a byte is in Python): the title
    failed, and with it the whole command."""
    run, test = saved
    image = os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9.npy")
    np.save(image, test.images[0, 0])
    written = explain_files(run, [image], tmp_path / "out", top=1)
    assert written.images[0].error is None and written.images[0].picture.read_bytes()[:4] == b"\x89PNG"
    assert "caf\\udce9.npy: " in written.images[0].to_line()


def test_a_named_class_is_followed(saved, tmp_path):
    run, test = saved
    written = explain_files(run, [run / "digit0.npy"], tmp_path, target="3", top=1)
    assert written.images[0].target == "3" and written.images[0].classes[0][0] == str(test.labels[0])


def test_no_picture_is_written_over_an_image_explained(saved, tmp_path):
    """--out the images' own folder: seven.png's picture is seven-2.png, not seven.png, and
    an image named filters.png keeps its bytes (the filters go to filters-2.png); nor is a
    link to an image in another folder written through."""
    from PIL import Image

    run, test = saved
    for name, k in (("seven.png", 0), ("filters.png", 1)):
        Image.fromarray(255 - test.images[k, 0]).save(tmp_path / name)
    (tmp_path / "elsewhere").mkdir()
    Image.fromarray(255 - test.images[2, 0]).save(tmp_path / "elsewhere" / "two.png")
    (tmp_path / "two.png").symlink_to(tmp_path / "elsewhere" / "two.png")
    images = [tmp_path / "seven.png", tmp_path / "filters.png", tmp_path / "elsewhere" / "two.png"]
    before = [image.read_bytes() for image in images]
    written = explain_files(run, images, tmp_path, top=1)
    assert [image.read_bytes() for image in images] == before
    assert written.filters == tmp_path / "filters-2.png"
    assert [result.picture.name for result in written.images] == ["seven-2.png", "filters-3.png", "two-2.png"]


def test_a_name_held_by_a_folder_or_a_fifo_is_passed_over_not_the_rest_of_the_images(saved, tmp_path):
    run, _ = saved
    (tmp_path / "digit0.png").mkdir()
    os.mkfifo(tmp_path / "filters.png")
    written = explain_files(run, [run / "digit0.npy", run / "digit1.npy"], tmp_path, top=1)
    assert written.filters == tmp_path / "filters-2.png"
    assert [result.picture.name for result in written.images] == ["digit0-2.png", "digit1.png"]


def test_an_image_whose_name_is_as_long_as_a_name_may_be_is_explained(saved, tmp_path):
    run, test = saved
    image = tmp_path / f"{'d' * 251}.npy"  # 255 bytes: its picture's name too, not its temporary file's
    np.save(image, test.images[0, 0])
    written = explain_files(run, [image], tmp_path / "out")
    assert written.images[0].picture == tmp_path / "out" / f"{'d' * 251}.png"
    assert written.images[0].picture.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("options, message", [
    ({"target": "cat"}, r"'cat' is not one of the model's classes \(0, 1, 2"),
    ({"at": 4}, r"feature maps at 4: the layer's output is \(128,\)"),
    ({"at": "3.body.0"}, "feature maps at '3.body.0': the network has no layer there"),
])
def test_settings_that_do_not_fit_the_model_are_refused_before_anything_is_written(saved, tmp_path, options,
                                                                                     message):
    run, _ = saved
    with pytest.raises(SettingsError, match=message):
        explain_files(run, [run / "digit0.npy"], tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()


def test_refuses_a_file_as_its_folder_and_a_missing_matplotlib(saved, tmp_path, monkeypatch):
    run, _ = saved
    with pytest.raises(ValueError, match="the pictures go into a folder, and this is a file"):
        explain_files(run, [run / "digit0.npy"], run / "checkpoint.npz")
    with pytest.raises(TypeError, match="takes a list of image files, got PosixPath"):
        explain_files(run, run / "digit0.npy", tmp_path)
    with pytest.raises(TypeError, match="explain_files target must be a class name"):
        explain_files(run, [run / "digit0.npy"], tmp_path / "out", target=3)
    with pytest.raises(TypeError, match="explain_files invert must be True, False or None, got 'yes'"):
        explain_files(run, [run / "digit0.npy"], tmp_path / "out", invert="yes")
    monkeypatch.setattr(files, "available", lambda: False)
    with pytest.raises(ImportError, match=r"matplotlib: pip install matplotlib pillow"):
        explain_files(run, [run / "digit0.npy"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_invert_is_refused_for_a_photo_model_before_anything_is_written_as_predict_refuses_it(tmp_path):
    rng = np.random.default_rng(0)
    photos = Dataset.from_arrays(rng.integers(0, 256, (8, 3, 8, 8), dtype=np.uint8), [0, 1] * 4, ["a", "b"])
    net = xpcnn.Sequential([xpcnn.Conv2D(3, 2, 3, rng=0), xpcnn.Flatten(), xpcnn.Dense(72, 2, rng=1)])
    xpcnn.save_checkpoint(tmp_path / "photos.npz", net, xpcnn.optim.SGD(net, 0.01), data=photos)
    np.save(tmp_path / "one.npy", photos.images[0])
    with pytest.raises(SettingsError, match=r"invert: is for pictures of digits; this model was trained on photos"):
        explain_files(tmp_path / "photos.npz", [tmp_path / "one.npy"], tmp_path / "out", invert=True)
    assert not (tmp_path / "out").exists()


def test_a_network_without_convolutions_has_no_filters_but_its_images_are_explained(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (32, 28, 28), dtype=np.uint8)
    spec = DatasetSpec("mine", {}, (), 0.5, 0.25, ("a", "b"))
    data = Dataset(images, (images[:, :14].mean(axis=(1, 2)) > 127).astype(np.int64), spec)
    net = xpcnn.Sequential([xpcnn.Flatten(), xpcnn.Dense(784, 2, rng=1)])
    optimizer, loss = xpcnn.optim.SGD(net, 0.01), xpcnn.SoftmaxCrossEntropy()
    for x, y in batches(data, 16, seed=0):
        loss.forward(net.forward(x), y)
        net.backward(loss.backward())
        optimizer.step()
    xpcnn.save_checkpoint(tmp_path / "mine.npz", net, optimizer, data=data)
    np.save(tmp_path / "filters.npy", images[0])
    written = explain_files(tmp_path / "mine.npz", [tmp_path / "filters.npy"], tmp_path / "out")
    assert written.filters is None
    assert written.images[0].picture == tmp_path / "out" / "filters.png"  # a name no filters took (filters-2.png)


def test_the_answer_of_a_trained_network_rests_on_the_ink_not_on_the_paper(saved):
    """Occlusion as it is meant: hiding a digit's strokes costs its class far more than
    hiding the empty border (the tutorial net after one epoch: about ten times, each of 10 digits)."""
    run, test = saved
    model = load_checkpoint(run).model
    for image in test.images[:10, 0]:
        found = occlusion(model, image)
        ink = image > 128
        border = np.ones_like(ink)
        border[4:-4, 4:-4] = False
        assert found.drop[ink].mean() > 3 * max(found.drop[border].mean(), 0)
