"""Layer hooks: the one per-layer loop of Sequential, and the tools built on it."""

from __future__ import annotations

import numpy as np
import pytest

import xpcnn
from xpcnn import backend
from xpcnn.hooks import AtPositions, LayerHook, TimerHook, TraceHook, position_key


def four_layer_net():
    rng = np.random.default_rng(0)
    return xpcnn.Sequential([xpcnn.Conv2D(1, 4, 3, rng=rng), xpcnn.ReLU(), xpcnn.Flatten(),
                             xpcnn.Dense(4 * 6 * 6, 3, rng=rng)])


class Recorder(LayerHook):
    def __init__(self):
        self.calls = []

    def before_forward(self, index, layer, x):
        self.calls.append(("before_forward", index, tuple(x.shape)))

    def after_forward(self, index, layer, y):
        self.calls.append(("after_forward", index, tuple(y.shape)))

    def before_backward(self, index, layer, dy):
        self.calls.append(("before_backward", index, tuple(dy.shape)))

    def after_backward(self, index, layer, dx):
        self.calls.append(("after_backward", index, None if dx is None else tuple(dx.shape)))


def test_hooks_see_every_layer_in_order_and_the_skipped_input_gradient():
    net, recorder = four_layer_net(), Recorder()
    x = np.ones((2, 1, 8, 8), np.float32)
    with net.hooked(recorder):
        y = net.forward(x)
        net.backward(np.ones_like(y), input_grad=False)
    forward = [call for call in recorder.calls if "forward" in call[0]]
    backward = [call for call in recorder.calls if "backward" in call[0]]
    assert [call[1] for call in forward] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [call[1] for call in backward] == [3, 3, 2, 2, 1, 1, 0, 0]
    assert forward[0] == ("before_forward", 0, (2, 1, 8, 8)) and forward[-1] == ("after_forward", 3, (2, 3))
    assert backward[-1] == ("after_backward", 0, None)  # the data's gradient was skipped
    assert net.hooks == []


def test_a_hook_at_positions_is_called_at_those_only():
    recorder = Recorder()
    hook = AtPositions(recorder, frozenset({"1", "3.body.0"}))
    for position in (0, 1, "3.body.0", "3.body.1"):
        hook.before_forward(position, None, np.zeros(2))
        hook.after_backward(position, None, None)
    assert recorder.calls == [("before_forward", 1, (2,)), ("after_backward", 1, None),
                              ("before_forward", "3.body.0", (2,)), ("after_backward", "3.body.0", None)]


def test_a_hook_leaves_with_its_block_also_on_an_error():
    net = four_layer_net()
    with pytest.raises(ValueError), net.hooked(Recorder()):
        net.forward(np.ones((2, 1, 2, 2), np.float32))  # too small for the 3x3 convolution
    assert net.hooks == []


def test_trace_hook_holds_what_the_layers_computed(target, to_target):
    net = four_layer_net().to(*target, "float64")
    x = to_target(np.random.default_rng(1).standard_normal((2, 1, 8, 8)), "float64")
    trace = TraceHook()
    with net.hooked(trace):
        y = net.forward(x)
        dx = net.backward(y * 1.0)
    np.testing.assert_array_equal(trace.inputs[0], backend.to_numpy(x))
    np.testing.assert_array_equal(trace.outputs[3], backend.to_numpy(y))
    np.testing.assert_array_equal(trace.input_grads[0], backend.to_numpy(dx))
    np.testing.assert_array_equal(trace.upstream[3], backend.to_numpy(y))
    for index in range(len(net)):
        assert trace.outputs[index].shape == (trace.inputs[index + 1].shape if index < 3 else (2, 3))
        assert set(trace.param_grads[index]) == set(net[index].params)
    np.testing.assert_array_equal(trace.param_grads[3]["weight"], backend.to_numpy(net[3].grads["weight"]))


def test_timer_hook_times_each_layer_of_each_call():
    net, timer = four_layer_net(), TimerHook()
    x = np.ones((4, 1, 8, 8), np.float32)
    with net.hooked(timer):
        for _ in range(3):
            net.backward(np.ones_like(net.forward(x)))
    rows = timer.medians(skip=1)
    assert [row[0] for row in rows] == [0, 1, 2, 3]
    assert rows[0][1].startswith("Conv2D(")
    assert all(len(timer.forward[i]) == 3 and len(timer.backward[i]) == 3 for i in range(4))
    assert all(forward >= 0 and backward >= 0 for _, _, forward, backward in rows)


def test_timer_hook_synchronises_around_every_reading():
    calls = []
    net, timer = four_layer_net(), TimerHook(sync=lambda: calls.append(1))
    with net.hooked(timer):
        net.forward(np.ones((1, 1, 8, 8), np.float32), training=False)
    assert len(calls) == 2 * len(net)


def test_timer_hook_times_a_block_around_the_layers_inside_it(monkeypatch):
    """Each clock reading one second later: a block's time spans its layers'."""
    from xpcnn.hooks import time as clock

    ticks = iter(range(1000))
    monkeypatch.setattr(clock, "perf_counter", lambda: float(next(ticks)))
    net = xpcnn.Sequential([xpcnn.Flatten(), xpcnn.Residual([xpcnn.Dense(4, 4, rng=0), xpcnn.ReLU()])])
    timer = xpcnn.hooks.TimerHook()
    with net.hooked(timer):
        net.forward(np.ones((2, 4), np.float32))
    assert timer.forward == {0: [1.0], "1.body.0": [1.0], "1.body.1": [1.0], 1: [5.0]}



def test_a_hook_method_that_cannot_take_its_points_arguments_is_refused_where_it_is_given():
    class Short(LayerHook):
        def after_forward(self, index, layer):
            pass

    class Open(LayerHook):  # takes whatever it is given
        def after_forward(self, *args, **kwargs):
            pass

    net = xpcnn.Sequential([xpcnn.Flatten(), xpcnn.Dense(4, 2, rng=0)])
    with pytest.raises(TypeError, match=r"^Short has after_forward\(index, layer\), called with \(index, layer, y\)$"):
        with net.hooked(Short()):
            pass
    with net.hooked(Open()):
        net.forward(np.ones((2, 4), np.float32))


def test_a_hook_method_named_like_no_point_is_refused():
    class Typo(LayerHook):
        def after_foward(self, index, layer, y):
            pass

    net = xpcnn.Sequential([xpcnn.Flatten(), xpcnn.Dense(4, 2, rng=0)])
    with pytest.raises(TypeError, match=r"Typo has after_foward, which no network calls \(before_forward"):
        with net.hooked(Typo()):
            pass


def test_positions_sort_in_network_order_past_nine():
    """As numbers, not strings: "10" sorts after "2", "3.body.10" after "3.body.2"."""
    positions = [10, "3.shortcut.0", 2, "3.body.10", 3, "3.body.2", "3.body.1.body.0", "3.body.1"]
    assert sorted(positions, key=position_key) == [2, 3, "3.body.1", "3.body.1.body.0", "3.body.2", "3.body.10",
                                                   "3.shortcut.0", 10]
