"""xpcnn: a readable convolutional-network library on the Python Array API standard.

Every layer's forward and backward is written once against the standard namespace, so
the same network runs on NumPy, CuPy, PyTorch tensors and array-api-strict.

Building blocks
    Conv2D, MaxPool2D, AvgPool2D, GlobalAvgPool2D, Flatten, Dense, ReLU, GELU, Tanh, Sigmoid,
    Dropout, BatchNorm2D: layers with forward(x, training) / backward(dy), params and grads
    (the contract a layer keeps is Layer's docstring). Residual(body, shortcut): a skip
    connection, body(x) + shortcut(x). SoftmaxCrossEntropy(label_smoothing=...): the loss.
    Sequential: a network of layers, with hooks (xpcnn.hooks) around every layer.
    register_layer(cls): a Layer of your own, rebuilt by checkpoints, resumes and parity.
    seed(n): the generator layers built without rng= draw their initial values from.

Training
    Trainer: the loop and the run folder it keeps; fit(train, epochs, val), finish(test),
    Trainer.resume(checkpoint). xpcnn.train: its callbacks (EarlyStopping,
    BestCheckpoint, your own), worker threads, start_run / resume_run (what `xpcnn train`
    runs). xpcnn.optim: SGD, Adam, AdamW, schedules. xpcnn.presets: the tutorial, lenet,
    fast, compact, resnet20 and cifar networks, for any image shape and class count, and
    their recipes.
    xpcnn.datasets: load_dataset("mnist" | "fashion-mnist" | "cifar10" | "cifar100" |
    "images", ...), Dataset.from_arrays(images, labels) for your own, batches, Augment.
    xpcnn.distributed: data-parallel training over MPI (Trainer(comm=distributed.world())).

Using a trained network
    evaluate, predict; load_checkpoint, save_checkpoint (arrays plus JSON, any backend);
    xpcnn.evaluation.evaluate_checkpoint and classify_files (what `xpcnn evaluate` and
    `xpcnn predict` run); xpcnn.io.onnx.export; Sequential.state_dict / load_state_dict
    (weights by PyTorch's names). xpcnn.explain: what a network sees in an image (its
    first filters, feature maps, occlusion: where its answer comes from), as arrays or
    pictures (explain_files, what `xpcnn explain` runs).

Backends and correctness
    available_backends(), to_backend(x, name), to_numpy(x) (xpcnn.backend); gradcheck,
    gradcheck_loss; xpcnn.parity (compare backends layer by layer) and xpcnn.anomaly
    (NaN/Inf by layer), the modules xpcnn.diagnostics.parity and .anomaly;
    xpcnn.diagnostics.machine.report() (what `xpcnn info` prints).

Example
    >>> import numpy as np, xpcnn
    >>> net = xpcnn.Sequential([xpcnn.Conv2D(1, 8, 3), xpcnn.ReLU(), xpcnn.MaxPool2D(2),
    ...                         xpcnn.Flatten(), xpcnn.Dense(8 * 13 * 13, 10)])
    >>> net.to("numpy", dtype="float32").forward(np.zeros((2, 1, 28, 28), np.float32)).shape
    (2, 10)
"""

from . import backend, datasets, distributed, explain, hooks, optim, presets, train
from ._version import __version__
from .backend import available_backends, to_backend, to_numpy
from .diagnostics import anomaly, parity
from .diagnostics.gradcheck import GradcheckError, GradcheckResult, gradcheck, gradcheck_loss
from .evaluation import evaluate, predict
from .init import seed
from .io.checkpoint import load_checkpoint, save_checkpoint
from .layers import (
    GELU,
    AvgPool2D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    Layer,
    MaxPool2D,
    ReLU,
    Sigmoid,
    Tanh,
)
from .losses import SoftmaxCrossEntropy
from .model import Residual, Sequential, register_layer
from .train import Trainer

__all__ = [
    "AvgPool2D", "BatchNorm2D", "Conv2D", "Dense", "Dropout", "Flatten", "GELU", "GlobalAvgPool2D", "Layer",
    "MaxPool2D", "ReLU", "Residual", "Sigmoid", "Tanh", "SoftmaxCrossEntropy", "Sequential", "Trainer", "evaluate",
    "register_layer",
    "predict",    "load_checkpoint", "save_checkpoint", "available_backends", "to_backend", "to_numpy",
    "gradcheck", "gradcheck_loss", "GradcheckError", "GradcheckResult", "anomaly", "backend", "datasets", "distributed",
    "explain", "hooks", "optim", "parity", "presets", "train", "seed", "__version__",
]
