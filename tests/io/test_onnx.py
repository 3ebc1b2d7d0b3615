"""ONNX export (xpcnn/io/onnx.py), checked by onnx's checker and run by onnxruntime."""

from __future__ import annotations

import json

import numpy as np
import pytest

import xpcnn
from xpcnn import presets
from xpcnn.datasets import MNIST, load_bundled, normalize
from xpcnn.optim import Adam

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
xonnx = pytest.importorskip("xpcnn.io.onnx")


def every_layer_type() -> xpcnn.Sequential:
    """Every exported layer type, each with settings other than its defaults (batch norm's
    eps and momentum too: an export that dropped one would compute as the default does)."""
    rng = np.random.default_rng(4)
    return xpcnn.Sequential([
        xpcnn.Conv2D(1, 6, (3, 4), padding=(0, 2, 1, 1), rng=rng), xpcnn.BatchNorm2D(6, eps=0.5, momentum=0.3),
        xpcnn.Tanh(),
        xpcnn.MaxPool2D(3, 2), xpcnn.Conv2D(6, 8, 3, stride=2, padding=1, bias=False, rng=rng), xpcnn.Sigmoid(),
        xpcnn.AvgPool2D(2), xpcnn.Flatten(), xpcnn.Dropout(0.5), xpcnn.Dense(8 * 3 * 3, 16, rng=rng), xpcnn.ReLU(),
        xpcnn.Dense(16, 10, rng=rng),
    ])


def trained(model: xpcnn.Sequential, steps: int = 3) -> xpcnn.Sequential:
    """A few Adam steps on MNIST, so batch-norm statistics and weights are not the initial ones."""
    data = load_bundled().train
    optimizer, loss = Adam(model, 1e-2), xpcnn.SoftmaxCrossEntropy()
    for step in range(steps):
        images = data.images[step * 32:(step + 1) * 32]
        loss.forward(model.forward(normalize(images, MNIST.mean, MNIST.std)), data.labels[step * 32:(step + 1) * 32])
        model.backward(loss.backward(), input_grad=False)
        optimizer.step()
    return model


@pytest.mark.parametrize("build", [lambda: presets.build("tutorial"), lambda: presets.build("lenet"), every_layer_type],
                         ids=["tutorial", "lenet", "every-layer-type"])
def test_onnxruntime_gives_xpcnn_logits_on_real_digits(tmp_path, build):
    model = trained(build())
    path = xonnx.export(model, tmp_path / "model.onnx", mean=MNIST.mean, std=MNIST.std)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    session = ort.InferenceSession(str(path))
    images = load_bundled().test.images[:100]
    expected = model.forward(normalize(images, MNIST.mean, MNIST.std), training=False)
    for batch in (1, 37, 100):  # the batch dimension is dynamic
        got = session.run(["logits"], {"pixels": (images[:batch] / 255.0).astype(np.float32)})[0]
        np.testing.assert_allclose(got, expected[:batch], rtol=0, atol=1e-4)


def test_softmax_metadata_and_float64_models(tmp_path):
    model = trained(presets.build("tutorial")).to("numpy", dtype="float64")
    classes = [f"class {k}" for k in range(10)]
    path = xonnx.export(model, tmp_path / "p.onnx", mean=0.5, std=0.25, classes=classes, softmax=True)
    loaded = onnx.load(path)
    props = {prop.key: prop.value for prop in loaded.metadata_props}
    assert json.loads(props["classes"]) == classes and json.loads(props["normalization"])["std"] == [0.25]
    assert loaded.opset_import[0].version >= 17
    pixels = np.random.default_rng(0).random((4, 1, 28, 28)).astype(np.float32)
    probabilities = ort.InferenceSession(str(path)).run(["probabilities"], {"pixels": pixels})[0]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    logits = model.forward((pixels.astype(np.float64) - 0.5) / 0.25, training=False)
    np.testing.assert_array_equal(probabilities.argmax(axis=1), logits.argmax(axis=1))


def test_what_cannot_be_exported_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"expected \(N, 3\) for 3 classes"):
        xonnx.to_onnx(presets.build("tutorial"), classes=["a", "b", "c"], mean=0.1, std=0.3)
    with pytest.raises(ValueError, match=r"does not know the data it was trained on \(model.data\): pass the mean="):
        xonnx.to_onnx(presets.build("tutorial"))
    with pytest.raises(ValueError, match=r"opset: must be in \[17, \d+\] \(what the installed onnx"):
        xonnx.to_onnx(presets.build("tutorial"), opset=13, mean=0.1, std=0.3)
    with pytest.raises(ValueError, match=r"Dense\(in_features=1352, out_features=128\): expected input"):
        xonnx.to_onnx(presets.build("tutorial"), input_shape=(1, 32, 32), mean=0.1, std=0.3)


def test_an_opset_beyond_what_is_installed_is_refused_before_anything_is_written(tmp_path):
    pytest.importorskip("onnx")
    newest = __import__("onnx").defs.onnx_opset_version()
    with pytest.raises(ValueError, match=rf"opset: must be in \[17, {newest}\] \(what the installed onnx .*got 99"):
        xonnx.export(presets.build("tutorial"), tmp_path / "net.onnx", opset=99, mean=0.1, std=0.3)
    assert not (tmp_path / "net.onnx").exists()


def test_an_opset_onnxruntime_cannot_run_is_refused(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    import onnxruntime

    def refusing(model, providers=None):
        raise RuntimeError("ONNX Runtime only *guarantees* support for models stamped with official released onnx "
                           "opset versions.\nmore")

    monkeypatch.setattr(onnxruntime, "InferenceSession", refusing)
    with pytest.raises(ValueError, match=r"opset: the installed onnxruntime .* cannot run the model exported at "
                                         r"opset 17 \(ONNX Runtime only \*guarantees\*"):
        xonnx.export(presets.build("tutorial"), tmp_path / "net.onnx", mean=0.1, std=0.3)


@pytest.mark.parametrize("name", ["resnet20", "cifar"])
def test_residual_and_gelu_networks_run_in_onnxruntime(tmp_path, name):
    model = presets.build(name, input_shape=(3, 16, 16), classes=5, width=0.25)
    rng = np.random.default_rng(0)
    model.forward(rng.standard_normal((8, 3, 16, 16)).astype(np.float32))  # running statistics move
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    path = xonnx.export(model, tmp_path / "r.onnx", mean=mean, std=std, input_shape=(3, 16, 16),
                        classes=list("abcde"))
    pixels = rng.random((4, 3, 16, 16)).astype(np.float32)
    got = ort.InferenceSession(str(path)).run(["logits"], {"pixels": pixels})[0]
    normalised = (pixels - np.reshape(mean, (1, 3, 1, 1))) / np.reshape(std, (1, 3, 1, 1))
    expected = model.forward(normalised.astype(np.float32), training=False)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    assert "Add" in {node.op_type for node in onnx.load(path).graph.node} or name == "cifar"


def test_gelu_exports_finite_at_extreme_inputs(tmp_path):
    model = xpcnn.Sequential([xpcnn.Flatten(), xpcnn.GELU()])
    pixels = np.array([[[[0.0, 0.5, 1.0, 30.0, -30.0, 1e30]]]], np.float32)
    path = xonnx.export(model, tmp_path / "g.onnx", mean=0.0, std=1.0, input_shape=(1, 1, 6), classes=list("abcdef"))
    got = ort.InferenceSession(str(path)).run(["logits"], {"pixels": pixels})[0]
    np.testing.assert_allclose(got, model.forward(pixels.reshape(1, 6), training=False), rtol=1e-6, atol=1e-7)


def test_a_checkpoint_exports_as_its_network_does_and_a_colour_network_takes_its_channels(tmp_path):
    from xpcnn.io.checkpoint import save_checkpoint

    data = load_bundled().train
    model = trained(presets.build("tutorial"))
    save_checkpoint(tmp_path / "model.npz", model, data=data)
    model.data = data.statistics()
    from_file, from_network = xonnx.export(tmp_path / "model.npz", tmp_path / "a.onnx"), \
        xonnx.export(model, tmp_path / "b.onnx")
    assert from_file.read_bytes() == from_network.read_bytes()
    colour = xpcnn.Sequential([xpcnn.Conv2D(3, 4, 3), xpcnn.GlobalAvgPool2D(), xpcnn.Dense(4, 2)])
    exported = onnx.load(xonnx.export(colour, tmp_path / "c.onnx", mean=[0.5] * 3, std=[0.25] * 3))
    assert json.loads({p.key: p.value for p in exported.metadata_props}["input_shape"]) == [3, 28, 28]


def test_the_checkpoint_being_exported_is_never_written_over(tmp_path):
    from xpcnn.io.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "checkpoint.npz", presets.build("tutorial"), data=load_bundled().train)
    before = (tmp_path / "checkpoint.npz").read_bytes()
    for export in (xonnx.export, xonnx.export_checkpoint):
        for source in (tmp_path, tmp_path / "checkpoint.npz"):
            with pytest.raises(FileExistsError, match="is the checkpoint being exported"):
                export(source, tmp_path / "checkpoint.npz")
    assert (tmp_path / "checkpoint.npz").read_bytes() == before


@pytest.mark.parametrize("options, error, message", [
    ({"softmax": "no"}, TypeError, "to_onnx softmax must be True or False, got 'no'"),
    ({"input_shape": "1x28x28"}, TypeError, r"to_onnx input_shape must be \(C, H, W\), got '1x28x28'"),
    ({"input_shape": (28, 28)}, TypeError, r"to_onnx input_shape must be \(C, H, W\), got \(28, 28\)"),
    ({"input_shape": (1, 28.0, 28)}, TypeError, r"to_onnx input_shape \(C, H, W\) must be an integer, got 28.0"),
    ({"input_shape": (1, -28, 28)}, ValueError, r"to_onnx input_shape \(C, H, W\) must be >= 1, got -28"),
    ({"classes": "0123456789"}, TypeError, "to_onnx classes must be a list of class names"),
    ({"classes": list(range(10))}, TypeError, "to_onnx classes must be a list of class names"),
])
def test_options_that_would_export_wrongly_or_fail_inside_onnx_are_named(tmp_path, options, error, message):
    with pytest.raises(error, match=message):
        xonnx.export(presets.build("tutorial"), tmp_path / "net.onnx", mean=0.1, std=0.3, **options)
    assert not (tmp_path / "net.onnx").exists()
    with pytest.raises(TypeError, match="to_onnx takes a Sequential, got Dense"):
        xonnx.to_onnx(xpcnn.Dense(2, 2), mean=0.1, std=0.3)
