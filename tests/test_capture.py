"""Recorded steps: host work handed over with from_host/each_step runs once per step,
whether the step is run directly or replayed. (The recording itself needs a CUDA device:
tests/train/test_step.py runs it there; here a stand-in graph counts its replays.)"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from xpcnn import backend, capture


def counting_graphs(monkeypatch) -> list[int]:
    """Make backend.record_graph hand out a stand-in graph whose replays are counted."""
    replays: list[int] = []

    def record_graph(like, work):
        return work(), lambda: replays.append(1)

    monkeypatch.setattr(backend, "record_graph", record_graph)
    return replays


def test_outside_a_recording_host_work_runs_once_and_arrives_placed_like_its_model():
    counted = []
    like = np.zeros(2, np.float32)
    placed = capture.from_host(lambda: np.array([0.5, 2.0]), like)
    capture.each_step(lambda: counted.append(1))
    assert placed.dtype == np.float32 and placed.tolist() == [0.5, 2.0] and counted == [1]


def test_the_recorded_step_uses_what_was_drawn_while_recording_and_later_replays_draw_afresh(monkeypatch):
    replays = counting_graphs(monkeypatch)
    draws, counted = iter(range(10)), []

    def step(x):
        drawn = capture.from_host(lambda: np.full(3, float(next(draws))), x)
        capture.each_step(lambda: counted.append(len(replays)))
        return drawn, x

    x = np.zeros(3, np.float32)
    with capture.planning() as inputs:
        step(x)
    draws, counted = iter(range(10)), []  # the planning run drew and counted too
    captured = capture.Captured(step, (x,), like=x, inputs=inputs)
    assert counted == [0] and replays == []  # recording did the recorded step's host work, ran nothing
    drawn, argument = captured(np.ones(3, np.float32))
    assert drawn.tolist() == [0.0] * 3 and argument.tolist() == [1.0] * 3 and replays == [1] and counted == [0]
    drawn, argument = captured(np.full(3, 7, np.float32))
    assert drawn.tolist() == [1.0] * 3 and argument.tolist() == [7.0] * 3 and counted == [0, 1]


def test_arrays_made_before_the_recording_are_kept_alive_with_it(monkeypatch):
    counting_graphs(monkeypatch)

    class Owner:
        def __init__(self):
            self.params = {"w": np.ones(2)}
            self.cache = (np.zeros(1), 3)

    owner = Owner()
    x = np.zeros(1)
    captured = capture.Captured(lambda x: x, (x,), like=x, inputs=[], keep=[owner])
    kept = {id(array) for array in captured._kept}
    owner.params, owner.cache = {}, None
    assert kept == {id(array) for array in captured._kept} and len(kept) == 2


def test_a_step_that_takes_other_host_arrays_than_planned_is_not_recorded(monkeypatch):
    counting_graphs(monkeypatch)
    x = np.zeros(3)
    with capture.planning() as inputs:
        capture.from_host(lambda: np.ones(2), x)
    with pytest.raises(ValueError, match="other host arrays than in its planning run"):
        capture.Captured(lambda x: capture.from_host(lambda: np.ones(4), x), (x,), like=x, inputs=inputs)
    with pytest.raises(ValueError, match="fewer host arrays than in its planning run"):
        capture.Captured(lambda x: x, (x,), like=x, inputs=inputs)


def test_a_step_knows_it_is_being_recorded_and_its_arguments_are_made_on_the_graphs_gpu(monkeypatch):
    counting_graphs(monkeypatch)
    entered, seen = [], []

    @contextlib.contextmanager
    def on_device(x):  # CuPy makes arrays on the current GPU: the recording's must be made on the graph's
        entered.append("enter")
        yield
        entered.append("exit")

    monkeypatch.setattr(backend, "on_device", on_device)
    x = np.zeros(2)
    captured = capture.Captured(lambda x: seen.append(capture.recording()) or x, (x,), like=x, inputs=[])
    assert seen == [True] and not capture.recording() and entered == ["enter", "exit"]
    captured(np.ones(2))
    assert entered == ["enter", "exit"] * 2
