"""xpcnn: a readable convolutional-network library on the Python Array API standard.

Every layer's forward and backward is written once against the standard namespace, so
the same network runs on NumPy, CuPy, PyTorch tensors and array-api-strict.

Building blocks
    Conv2D, MaxPool2D, AvgPool2D, Flatten, Dense, ReLU, Tanh, Sigmoid, Dropout,
    BatchNorm2D -- layers with forward(x, training) / backward(dy), params and grads.
    SoftmaxCrossEntropy -- the loss. Sequential -- a network of layers, with hooks
    (xpcnn.hooks) that run around every layer.

Training and using a network
    xpcnn.presets -- the tutorial, lenet and fast networks and their recipes: build(name), recipe(name).
    xpcnn.optim -- SGD, Adam, AdamW, schedules; build(name, model, lr), Optimizer.from_config.
    xpcnn.datasets -- load_dataset("mnist"), the bundled subset, batches.
    Trainer -- the training loop and its run folder (workers=N: N threads share each
    batch); evaluate, predict -- using a network.
    load_checkpoint, save_checkpoint -- arrays plus JSON, loadable on any backend.
    xpcnn.distributed -- data-parallel training over MPI: Trainer(..., comm=distributed.world())
    under `mpirun -n N` (what `xpcnn train` does).

What the command does, as functions
    xpcnn.training.start_run / resume_run (train), xpcnn.evaluation.evaluate_checkpoint
    (evaluate), classify_files (predict; pictures read by xpcnn.images and brought into
    MNIST's form by xpcnn.digits), xpcnn.parity.check (parity), xpcnn.onnx.export (export),
    xpcnn.machine.report (info). Weights to and from PyTorch: Sequential.state_dict /
    load_state_dict.

Backends (xpcnn.backend)
    available_backends(), to_backend(x, name), to_numpy(x).

Correctness tools
    gradcheck(layer, x), gradcheck_loss(loss, logits, labels); xpcnn.parity.compare;
    xpcnn.anomaly (NaN/Inf detection by layer).

Example
    >>> import numpy as np, xpcnn
    >>> net = xpcnn.Sequential([xpcnn.Conv2D(1, 8, 3), xpcnn.ReLU(), xpcnn.MaxPool2D(2),
    ...                         xpcnn.Flatten(), xpcnn.Dense(8 * 13 * 13, 10)])
    >>> net.to("numpy", dtype="float32").forward(np.zeros((2, 1, 28, 28), np.float32)).shape
    (2, 10)
"""

from . import backend, datasets, distributed, hooks, optim, presets
from ._version import __version__
from .backend import available_backends, to_backend, to_numpy
from .diagnostics import anomaly, parity
from .diagnostics.gradcheck import GradcheckError, GradcheckResult, gradcheck, gradcheck_loss
from .evaluation import evaluate, predict
from .io.checkpoint import load_checkpoint, save_checkpoint
from .layers import (
    AvgPool2D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    Layer,
    MaxPool2D,
    ReLU,
    Sigmoid,
    Tanh,
)
from .losses import SoftmaxCrossEntropy
from .model import Sequential
from .train import Trainer

__all__ = [
    "AvgPool2D", "BatchNorm2D", "Conv2D", "Dense", "Dropout", "Flatten", "Layer", "MaxPool2D",
    "ReLU", "Sigmoid", "Tanh", "SoftmaxCrossEntropy", "Sequential", "Trainer", "evaluate", "predict",
    "load_checkpoint", "save_checkpoint", "available_backends", "to_backend", "to_numpy",
    "gradcheck", "gradcheck_loss", "GradcheckError", "GradcheckResult", "anomaly", "backend", "datasets", "distributed",
    "hooks", "optim", "parity", "presets", "__version__",
]
