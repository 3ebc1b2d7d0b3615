"""The contract of xpcnn.layers.Layer, kept by a layer written from its docstring alone:
it trains to the same weights with one model, with two worker threads sharing each batch,
and with its steps recorded as CUDA graphs (the CPU stand-in of tests/helpers.py). Each
way of breaking the contract is caught by one of the three."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import xpcnn
from xpcnn import backend, capture, distributed
from xpcnn.checks import integer
from xpcnn.datasets import load_bundled
from xpcnn.layers.base import Shape
from xpcnn.optim import SGD

from .helpers import record_graphs_on_cpu


class NoisyCentre(xpcnn.Layer):
    """y = (x - mean over the batch of x) * gain * mask, per feature; x (N, F), gain (F,),
    mask a fresh keep-mask of the whole batch at each training step (kept with
    probability 0.8, scaled by 1 / 0.8). Evaluation: y = (x - mean of x) * gain."""

    def __init__(self, features: int, *, seed: int = 0) -> None:
        super().__init__()
        self.features, self.seed = integer(features, "NoisyCentre features", 1), integer(seed, "seed", 0)
        self.params = {"gain": np.ones(self.array_shapes(self.config())["gain"], np.float32)}
        self.steps = 0  # training steps so far: which mask comes next

    @classmethod
    def array_shapes(cls, arguments: dict[str, Any]) -> dict[str, Shape]:
        return {"gain": (int(arguments["features"]),)}

    def config(self) -> dict[str, Any]:
        return {"features": self.features, "seed": self.seed}

    def extra_state(self) -> dict[str, int]:
        return {"steps": self.steps}

    def load_extra_state(self, state: dict[str, int]) -> None:
        self.steps = state["steps"]

    def forward(self, x: Any, training: bool = True) -> Any:
        xp = self._namespace(x)
        _, total = distributed.batch_rows(x.shape[0])
        (batch_sum,) = distributed.batch_sum(xp.sum(x, axis=0, keepdims=True))
        centred = x - batch_sum / total  # (N, F)
        if not training:
            return centred * self.params["gain"]
        mask = capture.from_host(lambda: self._mask(x.shape), x)  # (N, F)
        capture.each_step(self._count)
        return self._save_for_backward(training, (centred, mask), centred * self.params["gain"] * mask)

    def _mask(self, shape: tuple[int, ...]) -> np.ndarray:
        start, total = distributed.batch_rows(shape[0])
        everyone = np.random.default_rng([self.seed, self.steps]).random((total, shape[1])) >= 0.2
        return everyone[start : start + shape[0]] / 0.8

    def _count(self) -> None:
        self.steps += 1

    def backward(self, dy: Any) -> Any:
        centred, mask = self._saved_for_backward(dy)
        xp = self._namespace(dy)
        _, total = distributed.batch_rows(dy.shape[0])
        self.grads = {"gain": xp.sum(dy * centred * mask, axis=0)}  # this member's share
        through = dy * self.params["gain"] * mask
        (through_sum,) = distributed.batch_sum(xp.sum(through, axis=0, keepdims=True))
        return through - through_sum / total


class MeanOfItsOwnRows(NoisyCentre):
    """Breaks the contract: the mean of this member's rows only (no batch_sum)."""

    def forward(self, x: Any, training: bool = True) -> Any:
        with distributed.sharded(distributed.Shard(0, x.shape[0], x.shape[0], distributed.Single())):
            return super().forward(x, training)


class MaskMovedByHand(NoisyCentre):
    """Breaks the contract: the mask moved to the device by hand, not through from_host."""

    def forward(self, x: Any, training: bool = True) -> Any:
        if training:
            original = capture.from_host
            capture.from_host = lambda draw, like: backend.to_backend(draw(), "numpy", dtype=like.dtype)
            try:
                return super().forward(x, training)
            finally:
                capture.from_host = original
        return super().forward(x, training)


class CountedByHand(NoisyCentre):
    """Breaks the contract: the step counted in forward, not through each_step."""

    def forward(self, x: Any, training: bool = True) -> Any:
        if training:
            original = capture.each_step
            capture.each_step = lambda work: work()
            try:
                return super().forward(x, training)
            finally:
                capture.each_step = original
        return super().forward(x, training)


@pytest.fixture(scope="module")
def data():
    return load_bundled().train.subset(np.arange(300))  # batches of 128, 128 and 44


def train(layer_type, data, monkeypatch=None, workers=1, graphs=False):
    """Three epochs of Flatten -> Dense -> the layer -> ReLU -> Dense in float64; the
    trainer, and the notes it logged."""
    rng = np.random.default_rng(0)
    net = xpcnn.Sequential([xpcnn.Flatten(), xpcnn.Dense(784, 32, rng=rng), layer_type(32, seed=7), xpcnn.ReLU(),
                            xpcnn.Dense(32, 10, rng=rng)]).to("numpy", dtype="float64")
    optimizer, notes = SGD(net, 0.01, momentum=0.9), []  # not Adam: see test_trainer's float64_trainer
    replays = record_graphs_on_cpu(monkeypatch, net, optimizer) if graphs else []
    trainer = xpcnn.Trainer(net, optimizer, batch_size=128, seed=3, progress=False, log=notes.append, workers=workers,
                            cuda_graphs=graphs or False)
    trainer.fit(data, 3)
    return trainer, notes, len(replays)


def same_weights(one, other, tolerance) -> bool:
    return all(np.allclose(other.model.params[name], value, rtol=tolerance, atol=tolerance)
               for name, value in one.model.params.items())


def test_a_layer_that_keeps_the_contract_trains_alike_in_every_way(data, monkeypatch):
    alone, _, _ = train(NoisyCentre, data)
    shared, _, _ = train(NoisyCentre, data, workers=2)
    recorded, notes, replays = train(NoisyCentre, data, monkeypatch, graphs=True)
    assert shared.workers == 2 and same_weights(alone, shared, 1e-10)
    assert [note for note in notes if not note.startswith("epoch")] == [
        "training steps are recorded as CUDA graphs and replayed (cuda_graphs=False runs them directly)"]
    assert alone.history[-1]["train_loss"] < alone.history[0]["train_loss"]  # it learns
    assert recorded.graph_shapes == 2 and replays == 2 * (9 - 2)  # both halves of each step but the first of a shape
    for name, value in alone.model.params.items():
        np.testing.assert_array_equal(recorded.model.params[name], value, err_msg=name)
    assert recorded.model[2].steps == alone.model[2].steps == 9


def test_a_batch_sum_left_out_shows_with_workers(data):
    alone, _, _ = train(MeanOfItsOwnRows, data)
    shared, _, _ = train(MeanOfItsOwnRows, data, workers=2)
    assert not same_weights(alone, shared, 1e-6)


def test_a_transfer_by_hand_cannot_be_recorded(data, monkeypatch):
    recorded, notes, replays = train(MaskMovedByHand, data, monkeypatch, graphs=True)
    assert recorded.graph_shapes == 0 and replays == 0
    assert [note for note in notes if note.startswith("note:")] == [
        "note: training without CUDA graphs: recording a step failed (RuntimeError: operation not permitted when "
        "stream is capturing (host transfer))"]


def test_host_state_changed_outside_each_step_freezes_in_a_recording(data, monkeypatch):
    alone, _, _ = train(CountedByHand, data)
    recorded, _, replays = train(CountedByHand, data, monkeypatch, graphs=True)
    assert replays > 0 and recorded.model[2].steps < alone.model[2].steps
    assert not same_weights(alone, recorded, 1e-6)
