"""Builders and checks shared by the tests: inputs, small networks, hostile files, the torch oracle.

Plain functions only; fixtures live in conftest.py.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import strategies as st

import xpcnn
from xpcnn import backend
from xpcnn.datasets import MNIST, Dataset, Selection
from xpcnn.io.checkpoint import save_checkpoint
from xpcnn.model import Sequential
from xpcnn.optim import SGD
from xpcnn.train import EarlyStopping, record

# Full MNIST next to the repository (<repo>/../shared/data/mnist), where tests may read it.
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"

# -- inputs for gradient checks ------------------------------------------------------------

GRAD_TOL = 1e-6  # worst relative error of a float64 gradient check
seeds = st.integers(0, 2**32 - 1)


def distinct_values(shape: tuple[int, ...], rng: np.random.Generator, gap: float = 0.1) -> np.ndarray:
    """Values at least `gap` apart (a shuffled ramp), so no max-pool window has a near-tie
    that a finite difference of size 1e-6 could cross."""
    size = int(np.prod(shape))
    return (rng.permutation(size) - size / 2).reshape(shape) * gap


def away_from_zero(shape: tuple[int, ...], rng: np.random.Generator, margin: float = 0.05) -> np.ndarray:
    """Normal values pushed at least `margin` away from 0, the kink of ReLU."""
    values = rng.standard_normal(shape)
    return np.sign(values) * (np.abs(values) + margin) + (values == 0) * margin


# -- networks and data -------------------------------------------------------------------------


def small_net(seed: int = 0, conv_bias: bool = True) -> Sequential:
    """A network with every kind of state: batch norm statistics, a dropout counter."""
    rng = np.random.default_rng(seed)
    return xpcnn.Sequential([
        xpcnn.Conv2D(1, 8, 3, bias=conv_bias, rng=rng), xpcnn.BatchNorm2D(8), xpcnn.MaxPool2D(2), xpcnn.ReLU(),
        xpcnn.Flatten(), xpcnn.Dropout(0.2, seed=3), xpcnn.Dense(8 * 13 * 13, 10, rng=rng),
    ])


def seed_net(rng=0) -> Sequential:
    """The seed-shaped network: conv, ReLU, max-pool, two dense layers (28x28 input)."""
    rng = np.random.default_rng(rng)
    return Sequential([
        xpcnn.Conv2D(1, 8, 3, rng=rng), xpcnn.ReLU(), xpcnn.MaxPool2D(2), xpcnn.Flatten(),
        xpcnn.Dense(8 * 13 * 13, 128, rng=rng), xpcnn.ReLU(), xpcnn.Dense(128, 10, rng=rng),
    ])


def small_dataset(n: int = 10) -> Dataset:
    """`n` random 28x28 MNIST-like images and labels."""
    rng = np.random.default_rng(1)
    return Dataset(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n), MNIST)


# -- hostile files -------------------------------------------------------------------------------


def good_idx() -> bytes:
    """A valid uint8 IDX file of shape (2, 5, 4)."""
    buffer = io.BytesIO()
    array = (np.arange(2 * 5 * 4) % 251).astype(np.uint8).reshape(2, 5, 4)
    buffer.write(bytes([0, 0, 8, 3]) + np.asarray(array.shape, ">u4").tobytes() + array.tobytes())
    return buffer.getvalue()


def small_checkpoint(tmp_path: Path) -> bytes:
    """The bytes of a valid checkpoint of a tiny network for (N, 1, 6, 6) input, 3 classes,
    with optimizer state and a trainer's progress, recorded early stopping and run
    description, the images it trained on included."""
    net = xpcnn.Sequential([xpcnn.Conv2D(1, 2, 3, rng=0), xpcnn.ReLU(), xpcnn.Flatten(),
                            xpcnn.Dense(2 * 4 * 4, 3, rng=0)])
    stopping = EarlyStopping(patience=4)
    stopping.load_state_dict({"best": 1.25, "best_epoch": 1, "waited": 0})
    trainer = xpcnn.Trainer(net, SGD(net, 0.1, momentum=0.9), batch_size=4, progress=False, log=lambda m: None,
                            callbacks=[stopping])
    trainer.selection = Selection("mnist", None, 100, 0, 0.1)
    for name, param in net.params.items():  # a step's momentum, without a step
        trainer.optimizer.state["momentum"][name] = np.full_like(param, 0.5)
    trainer.data = {"name": "mnist", "mean": 0.13, "std": 0.31, "classes": ["a", "b", "c"], "source": "test",
                    "input_shape": [1, 6, 6]}
    trainer.state.epoch, trainer.epochs = 1, 2
    trainer.state.history.append({"epoch": 1, "train_loss": 1.5, "train_accuracy": 0.5, "lr": 0.05, "seconds": 2.0,
                                  "images_per_second": 100.0})
    save_checkpoint(tmp_path / "seed.npz", net, trainer.optimizer, record.to_checkpoint(trainer))
    return (tmp_path / "seed.npz").read_bytes()


def mutate(data: bytes, rng: random.Random, edits: int) -> bytes:
    """Flip, insert, delete bytes, or cut the tail."""
    data = bytearray(data)
    for _ in range(edits):
        choice = rng.randrange(4)
        if choice == 0 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif choice == 1:
            data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
        elif choice == 2 and data:
            del data[rng.randrange(len(data))]
        elif data:
            del data[rng.randrange(len(data)):]
    return bytes(data)


# -- the torch oracle --------------------------------------------------------------------------
# xpcnn against torch.nn.functional and autograd: forward outputs and every gradient must
# agree, float64 within 1e-10, float32 within 1e-5 (relative, max norm). xpcnn runs on every
# backend; torch is always the reference.

ORACLE_TOLERANCE = {"float64": 1e-10, "float32": 1e-5}
ORACLE_DTYPES = ["float64", "float32"]


def torch_functional():
    """torch.nn.functional, or skip the calling test where torch is missing."""
    return pytest.importorskip("torch").nn.functional


def rel(actual, expected) -> float:
    """Max-norm error of `actual`, relative to the max norm of `expected`."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = max(np.abs(expected).max(initial=0.0), 1e-12)
    return float(np.abs(actual - expected).max(initial=0.0) / scale)


def run_xpcnn(layer, x_host, dy_host, name, device, dtype):
    layer.to(name, device, dtype)
    x = backend.to_backend(x_host, name, device, dtype)
    y = layer.forward(x)
    dx = layer.backward(backend.to_backend(dy_host, name, device, dtype))
    grads = {k: backend.to_numpy(v) for k, v in layer.grads.items()}
    return backend.to_numpy(y), backend.to_numpy(dx), grads


def run_torch(fn, x_host, dy_host, params_host, dtype):
    import torch

    tdtype = getattr(torch, dtype)
    x = torch.tensor(x_host, dtype=tdtype, requires_grad=True)
    params = {k: torch.tensor(v, dtype=tdtype, requires_grad=True) for k, v in params_host.items()}
    y = fn(x, **params)
    y.backward(torch.tensor(dy_host, dtype=tdtype))
    return y.detach().numpy(), x.grad.numpy(), {k: p.grad.numpy() for k, p in params.items()}


def check(layer, fn, x_host, target, dtype, params_host=None):
    """Same weights, input and upstream gradient through xpcnn and through torch."""
    import torch

    params_host = params_host or {k: backend.to_numpy(v).astype(np.float64) for k, v in layer.params.items()}
    for key, value in params_host.items():
        layer.params[key] = value
    tdtype = getattr(torch, dtype)
    with torch.no_grad():
        probe = fn(torch.tensor(x_host, dtype=tdtype),
                   **{k: torch.tensor(v, dtype=tdtype) for k, v in params_host.items()})
    dy_host = np.random.default_rng(7).standard_normal(tuple(probe.shape))
    ref_y, ref_dx, ref_grads = run_torch(fn, x_host, dy_host, params_host, dtype)
    y, dx, grads = run_xpcnn(layer, x_host, dy_host, target[0], target[1], dtype)
    tol = ORACLE_TOLERANCE[dtype]
    assert y.shape == ref_y.shape
    assert rel(y, ref_y) <= tol, f"forward differs: {rel(y, ref_y):.2e}"
    assert rel(dx, ref_dx) <= tol, f"input gradient differs: {rel(dx, ref_dx):.2e}"
    assert set(grads) == set(ref_grads)
    for key in grads:
        assert rel(grads[key], ref_grads[key]) <= tol, f"{key} gradient differs: {rel(grads[key], ref_grads[key]):.2e}"


# -- recorded steps on the CPU -------------------------------------------------------------


def record_graphs_on_cpu(monkeypatch, model, optimizer) -> list[int]:
    """Make a trainer of `model` and `optimizer` record its steps on the CPU as it would on
    a GPU (xpcnn.capture), with a stand-in for backend.record_graph that keeps the rules of
    a real graph that can be kept on the CPU: recording moves nothing through
    backend.to_backend or to_numpy and keeps no device work (what it computed is put
    back); a replay redoes the step's array work alone, on the recording's host inputs
    (from_host gives what the trainer copied in; each_step, and every number the layers or
    the optimizer change, are undone) and writes into the recording's arrays. A layer that
    moves data by hand, or keeps host state outside each_step, fails here as on a GPU; a
    read of an array's value on the host (float(x)) is not caught: NumPy's arrays are on
    the host. Returns a list that counts the replays."""
    from xpcnn import capture

    replays: list[int] = []
    real_from_host = capture.from_host
    layers = [layer for _, layer in model.named_layers()]  # blocks walked into
    watched = [*layers, optimizer]

    def record_graph(like, work):
        handed: list = []

        def logged(draw, like):  # the arrays the recording hands out, in order
            handed.append(real_from_host(draw, like))
            return handed[-1]

        before = _device_values(model, optimizer)
        with _no_transfers(monkeypatch), monkeypatch.context() as patch:
            patch.setattr(capture, "from_host", logged)
            result = work()
        _put_back(before)
        grads = [layer.grads for layer in layers]

        def replay():
            numbers = _host_numbers(watched)
            given = iter(handed)
            with _no_transfers(monkeypatch), monkeypatch.context() as patch:
                patch.setattr(capture, "from_host", lambda draw, like: next(given))
                patch.setattr(capture, "each_step", lambda work: None)
                again = work()
            for owner, name, value in numbers:
                setattr(owner, name, value)
            _write_into(result, again)
            for layer, recorded in zip(layers, grads):
                _write_into(recorded, layer.grads)
                layer.grads = recorded
            replays.append(1)

        return result, replay

    monkeypatch.setattr(backend, "can_record_graphs", lambda like: True)
    monkeypatch.setattr(backend, "record_graph", record_graph)
    return replays


def _device_values(model, optimizer) -> list:
    """(array, a copy of its values) of every array a step changes in place."""
    arrays = [a for _, layer in model.named_layers() for a in [*layer.params.values(), *layer.buffers.values()]]
    arrays += [a for store in optimizer.state.values() for a in store.values()]
    return [(array, array.copy()) for array in arrays]


def _put_back(values) -> None:
    for array, value in values:
        array[...] = value


def _host_numbers(owners) -> list:
    """(owner, attribute, value) of each number (and None) the owners hold."""
    return [(owner, name, value) for owner in owners for name, value in vars(owner).items()
            if value is None or isinstance(value, (bool, int, float, str))]


def _write_into(recorded, fresh) -> None:
    """Copy the arrays of `fresh` into those of `recorded` (same structure), in place."""
    if isinstance(recorded, dict):
        for key in recorded:
            _write_into(recorded[key], fresh[key])
    elif isinstance(recorded, (list, tuple)):
        for mine, theirs in zip(recorded, fresh, strict=True):
            _write_into(mine, theirs)
    elif recorded is not None:
        recorded[...] = fresh


class _no_transfers:
    """Inside, moving data between host and device (backend.to_backend, to_numpy) raises,
    as it does while a CUDA graph is being recorded."""

    def __init__(self, monkeypatch):
        self.patch = monkeypatch

    def __enter__(self):
        def refuse(*args, **kwargs):
            raise RuntimeError("operation not permitted when stream is capturing (host transfer)")

        self.context = self.patch.context()
        patch = self.context.__enter__()
        patch.setattr(backend, "to_backend", refuse)
        patch.setattr(backend, "to_numpy", refuse)
        return self

    def __exit__(self, *exc):
        return self.context.__exit__(*exc)


# Colours of equal luma (ITU-R 601: 0.299 R + 0.587 G + 0.114 B = 127 within 1): in grey
# the classes of colour_folder are one and the same, in colour they differ at a glance.
EQUAL_LUMA_COLOURS = {"red": (230, 80, 99), "green": (60, 169, 70), "blue": (120, 109, 250)}
PICTURE_FORMATS = (("png", "RGB"), ("jpg", "RGB"), ("bmp", "RGB"), ("webp", "RGB"), ("png", "RGBA"), ("tiff", "RGB"))


def colour_folder(root: Path, per_class: int = 40, seed: int = 0) -> Path:
    """A folder of pictures ROOT/<colour>/*, classes that differ only by colour: each
    picture its class's colour with its own brightness (x 0.8 to 1.2, which spans more
    grey levels than the classes differ by) and noise, of its own size (12 to 40 pixels
    a side, rarely square) and format (PNG, JPEG, BMP, WebP, TIFF, RGBA PNG)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name, colour in EQUAL_LUMA_COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            height, width = rng.integers(12, 41, 2)
            pixels = np.asarray(colour, np.float64) * rng.uniform(0.8, 1.2) + rng.normal(0, 8, (height, width, 3))
            pixels = np.clip(pixels, 0, 255).astype(np.uint8)
            extension, mode = PICTURE_FORMATS[k % len(PICTURE_FORMATS)]
            picture = Image.fromarray(pixels, "RGB")
            if mode == "RGBA":
                picture = Image.fromarray(np.dstack([pixels, np.full((height, width), 255, np.uint8)]), "RGBA")
            picture.save(root / name / f"{k:03d}.{extension}")
    return root
