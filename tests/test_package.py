"""What `import xpcnn` gives a user (xpcnn/__init__.py)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import xpcnn


def test_the_submodules_a_user_reaches_for_come_with_the_package():
    code = "import xpcnn; xpcnn.optim.Adam, xpcnn.presets.build, xpcnn.datasets.load_dataset, xpcnn.parity.compare"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_help_lists_the_public_api():
    assert all(name in xpcnn.__doc__ for name in ("Conv2D", "Sequential", "Trainer", "presets", "optim"))
    assert set(xpcnn.__all__) <= set(dir(xpcnn))


# -- the public API refuses misuse in one line naming the argument ------------------------

def _net():
    return xpcnn.Sequential([xpcnn.Flatten(), xpcnn.Dense(784, 10, rng=0)])


def _images(dtype=np.uint8):
    return np.zeros((2, 28, 28), dtype)


# Every name of xpcnn.__all__: wrong calls, each with the error it must raise and what its
# message must name; or why the name takes no input to get wrong.
MISUSE = {
    "AvgPool2D": [(lambda: xpcnn.AvgPool2D("2"), TypeError, "AvgPool2D kernel_size must be an integer"),
                  (lambda: xpcnn.AvgPool2D(2, 0), ValueError, "AvgPool2D stride must be >= 1")],
    "GlobalAvgPool2D": [(lambda: xpcnn.GlobalAvgPool2D().forward(np.zeros((2, 3), np.float32)), ValueError,
                         r"GlobalAvgPool2D\(\): expected a 4-D input \(N, C, H, W\), got shape \(2, 3\)")],
    "BatchNorm2D": [(lambda: xpcnn.BatchNorm2D(2.5), TypeError, "BatchNorm2D num_features must be an integer"),
                    (lambda: xpcnn.BatchNorm2D(4, eps=-1), ValueError, "BatchNorm2D eps must be in")],
    "Conv2D": [(lambda: xpcnn.Conv2D("1", 8, 3), TypeError, "Conv2D in_channels must be an integer"),
               (lambda: xpcnn.Conv2D(1, 8, 3, stride=0), ValueError, "Conv2D stride must be >= 1"),
               (lambda: xpcnn.Conv2D(1, 8, 3, padding="wide"), ValueError,
                "Conv2D padding must be 'valid', 'same', an integer")],
    "Dense": [(lambda: xpcnn.Dense(10, None), TypeError, "Dense out_features must be an integer"),
              (lambda: xpcnn.Dense(10, 0), ValueError, "Dense out_features must be >= 1"),
              (lambda: xpcnn.Dense(10, 2, rng=True), TypeError, "Dense rng must be an integer seed or a numpy")],
    "Dropout": [(lambda: xpcnn.Dropout(1.5), ValueError, r"Dropout p must be in \[0.0, 1.0\)"),
                (lambda: xpcnn.Dropout(0.5, seed=-1), ValueError, "Dropout seed must be >= 0")],
    "Flatten": [(lambda: xpcnn.Flatten().forward([[1.0]]), TypeError, r"Flatten\(\): expected an array, got list")],
    "Layer": [(lambda: xpcnn.Layer().to("nosuch"), ValueError, "unknown backend 'nosuch'")],
    "MaxPool2D": [(lambda: xpcnn.MaxPool2D(2.0), TypeError, "MaxPool2D kernel_size must be an integer")],
    "ReLU": [(lambda: xpcnn.ReLU().forward(np.ones(3, np.int64)), TypeError, "expected a floating-point input")],
    "GELU": [(lambda: xpcnn.GELU().forward(np.ones(3, np.int64)), TypeError, "expected a floating-point input")],
    "Residual": [(lambda: xpcnn.Residual(xpcnn.ReLU()), TypeError, r"body must be a list of layers, got one ReLU\(\)"),
                 (lambda: xpcnn.Residual([]), ValueError, "Residual body: Sequential needs at least one layer"),
                 (lambda: xpcnn.Residual([xpcnn.Conv2D(1, 2, 3)]).forward(np.zeros((1, 1, 5, 5), np.float32)),
                  ValueError, r"the body gives \(1, 2, 3, 3\) and the identity shortcut \(1, 1, 5, 5\)")],
    "Sigmoid": [(lambda: xpcnn.Sigmoid().forward("x"), TypeError, r"Sigmoid\(\): expected an array, got str")],
    "Tanh": [(lambda: xpcnn.Tanh().forward(np.ones(3, np.int32)), TypeError, "expected a floating-point input")],
    "SoftmaxCrossEntropy": [
        (lambda: xpcnn.SoftmaxCrossEntropy(check_labels="yes"), TypeError, "check_labels must be True or False"),
        (lambda: xpcnn.SoftmaxCrossEntropy().forward(np.zeros((0, 3)), np.zeros(0, np.int64)), ValueError,
         "an empty batch"),
        (lambda: xpcnn.SoftmaxCrossEntropy().forward(np.zeros((2, 3)), np.zeros(2)), TypeError,
         "labels must be integers")],
    "Sequential": [(lambda: xpcnn.Sequential([1]), TypeError, "item 0 is int, not a Layer"),
                   (lambda: xpcnn.Sequential([xpcnn.ReLU]), TypeError, "item 0 is the class ReLU, not a layer"),
                   (lambda: xpcnn.Sequential([]), ValueError, "needs at least one layer"),
                   (lambda: _net().summary(), ValueError, "summary needs an input shape"),
                   (lambda: _net().forward(np.zeros((1, 784), np.float32), "no"), TypeError,
                    "Sequential.forward training must be True or False, got 'no'")],
    "Trainer": [(lambda: xpcnn.Trainer(_net(), "adam"), TypeError, "Trainer optimizer must be an Optimizer"),
                (lambda: xpcnn.Trainer(_net(), xpcnn.optim.Adam(_net())), ValueError, "built for another network"),
                (lambda: _trainer(batch_size=2.5), TypeError, "batch_size must be an integer, got 2.5"),
                (lambda: _trainer(anomaly="no"), TypeError, "Trainer anomaly must be True or False, got 'no'"),
                (lambda: _trainer(progress=1), TypeError, "Trainer progress must be True or False, got 1"),
                (lambda: _trainer(checkpoint_every=2), ValueError,
                 r"checkpoint_every: checkpoints are written in the run folder, but the trainer has none"),
                (lambda: _trainer().fit((np.zeros(2), np.zeros(2)), 1), TypeError,
                 "the training set must be a Dataset"),
                (lambda: _trainer().fit(_dataset(), -1), ValueError, "epochs must be >= 0")],
    "evaluate": [(lambda: xpcnn.evaluate(_net(), "data"), TypeError, "must be a Dataset"),
                 (lambda: xpcnn.evaluate([_net()], _dataset()), TypeError,
                  "evaluate takes a Sequential or a checkpoint's path, got list"),
                 (lambda: xpcnn.evaluate(_net(), _dataset(), batch_size=0), ValueError, "batch_size must be >= 1")],
    "predict": [(lambda: xpcnn.predict(_net(), _images()), ValueError, "predict needs the mean and std"),
                (lambda: xpcnn.predict(_net(), _dataset(), 0.1, 0.3), TypeError,
                 r"predict takes images \(an array\), got a Dataset"),
                (lambda: xpcnn.predict(_net(), _images(np.int32), 0.1, 0.3), TypeError,
                 "uint8 images, or floating ones"),
                (lambda: xpcnn.predict(_net(), _images(), 0.1, 0.0), ValueError, "predict std must be in"),
                (lambda: xpcnn.predict(_net(), _images()[:0], 0.1, 0.3), ValueError,
                 r"predict expects at least one image; got images of shape \(0, ")],
    "load_checkpoint": [(lambda: xpcnn.load_checkpoint(123), TypeError, "load_checkpoint path must be"),
                        (lambda: xpcnn.load_checkpoint("no/such.npz"), FileNotFoundError, "no such checkpoint")],
    "save_checkpoint": [(lambda: xpcnn.save_checkpoint("x.npz", "net"), TypeError,
                         "save_checkpoint model must be a Sequential"),
                        (lambda: xpcnn.save_checkpoint("x.npz", _net(), xpcnn.optim.Adam(_net())), ValueError,
                         "save_checkpoint optimizer must be the model's")],
    "available_backends": "takes no arguments",
    "to_backend": [(lambda: xpcnn.to_backend(np.zeros(2), "nosuch"), ValueError, "unknown backend 'nosuch'"),
                   (lambda: xpcnn.to_backend(np.zeros(2), "numpy", dtype="float16"), ValueError,
                    "unsupported dtype 'float16'")],
    "to_numpy": [(lambda: xpcnn.to_numpy("x"), TypeError, "not an array of a supported backend: str")],
    "gradcheck": [(lambda: xpcnn.gradcheck("layer", np.zeros(2)), TypeError, "gradcheck takes a layer"),
                  (lambda: xpcnn.gradcheck(xpcnn.Dense(2, 2, rng=0), np.zeros((1, 2), np.float32)), TypeError,
                   "needs float64")],
    "gradcheck_loss": [(lambda: xpcnn.gradcheck_loss(xpcnn.SoftmaxCrossEntropy(), np.zeros((2, 3), np.float32),
                                                     np.zeros(2, np.int64)), TypeError,
                        r"needs float64, but logits is float32; convert it \(NumPy: x.astype\('float64'\)\)")],
    "GradcheckError": "an exception gradcheck raises",
    "GradcheckResult": "what gradcheck returns",
    "anomaly": [(lambda: xpcnn.anomaly.check_finite("x", "the input"), TypeError, r"takes an array, got str")],
    "backend": [(lambda: xpcnn.backend.namespace("nosuch"), ValueError, "unknown backend 'nosuch'")],
    "datasets": [(lambda: xpcnn.datasets.load_dataset("imagenet"), ValueError, "unknown dataset 'imagenet'"),
                 (lambda: next(xpcnn.datasets.batches(_dataset(), 0)), ValueError, "batch_size must be >= 1"),
                 (lambda: next(xpcnn.datasets.batches(np.zeros((2, 1, 4, 4)), 1)), TypeError,
                  r"batches takes a Dataset \(Dataset.from_arrays\(images, labels\) makes one\), got ndarray")],
    "distributed": [(lambda: _trainer(comm="mpi"), TypeError, "Trainer comm must be a distributed.Communicator")],
    "explain": [(lambda: xpcnn.explain.occlusion(_net(), _images()[0], patch=0, mean=0.5, std=0.25), ValueError,
                 "occlusion patch must be >= 1"),
                (lambda: xpcnn.explain.feature_maps(_net(), _images()[0], at=9, mean=0.5, std=0.25), ValueError,
                 "feature maps at 9: the network has no layer there; its positions are 0, 1"),
                (lambda: xpcnn.explain.occlusion(_net(), _images(), mean=0.5, std=0.25), ValueError,
                 "occlusion looks at one image"),
                (lambda: xpcnn.explain.explain_files("run", "one.png"), TypeError,
                 "explain_files takes a list of image files, got str")],
    "hooks": [(lambda: _net().hooked("timer").__enter__(), TypeError, "hooked takes LayerHooks"),
              (lambda: xpcnn.hooks.TimerHook(sync=3), TypeError, "TimerHook sync must be a function")],
    "optim": [(lambda: xpcnn.optim.build("adam", _net(), float("nan")), ValueError,
               "Adam lr must be > 0.0 and finite"),
              (lambda: xpcnn.optim.build("adam", _net(), 0), ValueError, "Adam lr must be > 0.0 and finite, got 0"),
              (lambda: xpcnn.optim.build("lion", _net(), 0.1), ValueError, "unknown optimizer 'lion'"),
              (lambda: xpcnn.optim.Cosine(total=2.5), TypeError, "Cosine total must be an integer")],
    "parity": [(lambda: xpcnn.parity.compare(_net(), np.zeros((1, 1, 28, 28)), np.zeros(1, np.int64), ["numpy"]),
                ValueError, "needs at least two backends"),
               (lambda: xpcnn.parity.compare(_net(), np.zeros((1, 1, 28, 28)), np.zeros(1, np.int64), "numpy,torch"),
                TypeError, r"compare backends must be a list of names, such as \['numpy', 'torch'\]"),
               (lambda: xpcnn.parity.compare(xpcnn.Dense(2, 2), np.zeros((1, 2)), np.zeros(1, np.int64)), TypeError,
                r"compare takes a Sequential \(a layer alone: Sequential\(\[layer\]\)\), got Dense"),
               (lambda: xpcnn.parity.compare(_net(), np.zeros((1, 1, 28, 28)), np.zeros(1, np.int64),
                                             tolerance=-1), ValueError, "compare tolerance must be >= 0.0"),
               (lambda: xpcnn.parity.trajectory(_net(), [np.zeros((1, 1, 28, 28))]), TypeError,
                r"trajectory batches must be \(images, labels\) pairs; batch 0 is a ndarray of 1")],
    "presets": [(lambda: xpcnn.presets.build("resnet"), ValueError, "unknown model 'resnet'"),
                (lambda: xpcnn.presets.build("lenet", -1), ValueError, "seed must be >= 0")],
    "train": [(lambda: xpcnn.train.EarlyStopping(patience=0), ValueError, "EarlyStopping patience must be >= 1"),
              (lambda: xpcnn.train.BestCheckpoint("accuracy"), ValueError, "BestCheckpoint monitor must be one of")],
    "register_layer": [(lambda: xpcnn.register_layer(int), TypeError, "register_layer takes a subclass of "
                        "xpcnn.Layer, got <class 'int'>"),
                       (lambda: xpcnn.register_layer(type("ReLU", (xpcnn.Layer,), {})), ValueError,
                        "a layer named ReLU is registered already")],
    "seed": [(lambda: xpcnn.seed(1.5), TypeError, "seed must be an integer"),
             (lambda: xpcnn.seed(-1), ValueError, "seed must be >= 0")],
    "__version__": "a string",
}


def _trainer(**options):
    net = _net()
    return xpcnn.Trainer(net, xpcnn.optim.SGD(net, 0.1), **{"progress": False, "log": lambda message: None, **options})


def _dataset():
    from xpcnn.datasets import MNIST, Dataset

    return Dataset(_images(), np.array([0, 1]), MNIST)


def test_every_public_name_has_its_misuse_cases():
    assert set(MISUSE) == set(xpcnn.__all__)


@pytest.mark.parametrize("name", sorted(name for name, cases in MISUSE.items() if not isinstance(cases, str)))
def test_misuse_is_one_clear_error_naming_the_argument(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for call, error, message in MISUSE[name]:
        with pytest.raises(error, match=message) as raised:
            call()
        assert "\n" not in str(raised.value) and not isinstance(raised.value, (AttributeError, KeyError))
