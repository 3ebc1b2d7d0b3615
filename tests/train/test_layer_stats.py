"""How each layer learns (xpcnn/train/layer_stats.py): the change of each weight over an
epoch and the dead ReLU units of a probe, as each epoch's row records them, checked against
the same measures computed by hand, on every backend, and across an interrupted run."""

from __future__ import annotations

import numpy as np
import pytest

import xpcnn
from xpcnn.datasets import Dataset, batches, load_bundled
from xpcnn.optim import SGD
from xpcnn.train import Trainer, TrainingInterrupted
from xpcnn.train.layer_stats import MAX_WATCHED, PROBE_IMAGES, LayerStats, spread

from ..helpers import small_net
from ..io.test_checkpoint import rewrite
from .test_trainer import InterruptAt


@pytest.fixture(scope="module")
def train():
    return load_bundled().train.subset(np.arange(640))


def probe_output(net, train, upto):
    """The output of net's layers up to `upto` for the probe, in evaluation mode, by hand."""
    x, _ = next(batches(train.subset(np.arange(PROBE_IMAGES)), PROBE_IMAGES, shuffle=False))
    for layer in net.layers[: upto + 1]:
        x = layer.forward(x, training=False)
    return x


def test_each_row_has_how_far_each_weight_moved_and_the_dead_units_as_computed_by_hand(train):
    net = small_net()  # conv at 0, ReLU at 3, dense at 6
    trainer = Trainer(net, SGD(net, 0.01), batch_size=64, progress=False, log=lambda m: None)
    for epoch in range(2):
        before = {name: np.array(net.params[name], dtype=np.float64) for name in ("0.weight", "6.weight")}
        trainer.fit(train, epoch + 1)
        row = trainer.history[epoch]["layers"]
        for position in ("0", "6"):
            start, end = before[f"{position}.weight"], net.params[f"{position}.weight"]
            expected = np.linalg.norm(end - start) / np.linalg.norm(start)
            assert row["change"][position] == pytest.approx(expected, rel=1e-12)
            assert 1e-4 < row["change"][position] < 1  # learning, not standing still nor rewritten
        dead = np.mean(~np.any(probe_output(net, train, 3) > 0, axis=(0, 2, 3)))
        assert row["dead"] == {"3": dead}


def net_with_dead_units(kind):
    """Two of four units, or one of two channels, that no image can switch on."""
    if kind == "dense":
        net = xpcnn.Sequential([xpcnn.Flatten(), xpcnn.Dense(28 * 28, 4, rng=0), xpcnn.ReLU(),
                                xpcnn.Dense(4, 10, rng=1)])
        net.params["1.bias"][:2] = -1e6
        return net, 0.5
    net = xpcnn.Sequential([xpcnn.Conv2D(1, 2, 3, rng=0), xpcnn.ReLU(), xpcnn.Flatten(), xpcnn.Dense(2 * 26 * 26, 10)])
    net.params["0.bias"][1] = -1e6
    return net, 0.5


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_a_unit_that_no_probe_image_switches_on_is_dead(train, kind):
    net, share = net_with_dead_units(kind)
    relu = next(str(position) for position, layer in net.named_layers() if isinstance(layer, xpcnn.ReLU))
    assert LayerStats(net, train).measure(None)["dead"] == {relu: share}


def test_every_backend_measures_what_numpy_does(train, target):
    name, device = target
    net, _ = net_with_dead_units("conv")
    stats = LayerStats(net, train)
    start = stats.weights()
    net.params["0.weight"] *= 1.5  # a change of 0.5
    expected = stats.measure(start)
    moved = LayerStats(net.to(name, device, "float64"), train).measure(start)
    assert moved["dead"] == expected["dead"] == {"1": 0.5}
    assert moved["change"]["0"] == pytest.approx(expected["change"]["0"], rel=1e-6)
    assert expected["change"] == {"0": pytest.approx(0.5, rel=1e-6), "3": 0.0}


def test_measuring_changes_nothing_in_the_network(train):
    net = small_net()
    before, counter = net.state_dict(), net[5].extra_state()
    LayerStats(net, train).measure(None)
    after = net.state_dict()
    assert all(np.array_equal(after[name], value) for name, value in before.items())
    assert net[5].extra_state() == counter  # no dropout mask drawn: the run goes on as without the measures


def test_the_probe_is_the_first_training_images_fewer_of_large_ones():
    assert len(LayerStats(small_net(), load_bundled().train).probe) == PROBE_IMAGES
    photos = Dataset.from_arrays(np.zeros((40, 3, 224, 224), np.uint8), np.arange(40) % 2)
    net = xpcnn.Sequential([xpcnn.Conv2D(3, 2, 3), xpcnn.ReLU(), xpcnn.GlobalAvgPool2D(), xpcnn.Dense(2, 2)])
    stats = LayerStats(net, photos)
    assert len(stats.probe) == 27  # 4 Mi values at most: 16 MiB of float32
    assert stats.measure(None) == {"change": {"0": None, "3": None}, "dead": {"1": 1.0}}  # black: all dead


def test_many_layers_are_watched_spread_from_the_first_to_the_last():
    positions = [str(k) for k in range(100)]
    chosen = spread(positions)
    assert len(set(chosen)) == len(chosen) == MAX_WATCHED and chosen[0] == "0" and chosen[-1] == "99"
    assert chosen == sorted(chosen, key=int)
    assert spread(positions[:MAX_WATCHED]) == positions[:MAX_WATCHED]


def test_an_epoch_resumed_without_its_starting_weights_has_no_change(tmp_path, train):
    """A checkpoint saved partway through an epoch keeps the weights it began with, so that
    the resumed run's row is the uninterrupted one's (tests/train/test_trainer.py); one
    without them (written before they were kept) gives an unknown change, not a wrong one."""
    net = small_net()
    interrupted = Trainer(net, SGD(net, 0.05), batch_size=64, run_dir=tmp_path, progress=False, log=lambda m: None,
                          callbacks=[InterruptAt(4)])
    with pytest.raises(TrainingInterrupted) as info:
        interrupted.fit(train, 2)
    saved = info.value.checkpoint
    assert set(xpcnn.load_checkpoint(saved).start_arrays) == {"0.weight", "6.weight"}

    def without_start(meta):
        for name in ("start/0.weight", "start/6.weight"):
            del meta["arrays"][name]

    old = rewrite(saved, tmp_path / "old.npz", meta=without_start, drop=["start/0.weight", "start/6.weight"])
    resumed = Trainer.resume(old, progress=False, log=lambda m: None)
    resumed.fit(train, 2)
    first, second = (row["layers"] for row in resumed.history)
    assert first["change"] == {"0": None, "6": None} and set(first["dead"]) == {"3"}
    assert all(value > 0 for value in second["change"].values())


def test_a_network_or_training_set_it_cannot_measure_is_refused_in_one_line(train):
    with pytest.raises(TypeError, match="LayerStats takes a Sequential, got list"):
        LayerStats([xpcnn.ReLU()], train)
    with pytest.raises(TypeError, match=r"LayerStats train must be a Dataset \(xpcnn.datasets.Dataset\), got NoneType"):
        LayerStats(small_net(), None)
    with pytest.raises(ValueError, match=r"LayerStats train \(.*\) holds no images"):
        LayerStats(small_net(), train.subset(np.arange(0)))
    with pytest.raises(ValueError, match=r"LayerStats train \(.*\): "):
        LayerStats(xpcnn.Sequential([xpcnn.Flatten(), xpcnn.Dense(3 * 28 * 28, 10)]), train)


def test_a_starting_weight_of_another_shape_is_refused_not_broadcast(train):
    net = small_net()
    with pytest.raises(ValueError, match=r"LayerStats.measure start: 0.weight has shape \(1,\), the network's \("):
        LayerStats(net, train).measure({"0.weight": np.ones(1, np.float32)})
