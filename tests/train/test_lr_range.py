"""The learning-rate range test (xpcnn/train/lr_range.py): the rate rises exponentially
over the steps, the losses are those of the trainer's own batches and optimizer on a copy,
the trainer is left as it was, the test stops where the loss diverges, and the suggestion
is the rate of the lowest smoothed loss; on every backend."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from xpcnn import backend
from xpcnn.datasets import batches, load_bundled
from xpcnn.optim import SGD, Adam
from xpcnn.train import LRRange, Trainer, find_lr, plots
from xpcnn.train.lr_range import DATA_NAME, DIVERGED, PLOT_NAME, Smoothed

from ..helpers import small_net


@pytest.fixture(scope="module")
def train():
    return load_bundled().train.subset(np.arange(320))


def quiet_trainer(net, optimizer, **options):
    return Trainer(net, optimizer, batch_size=64, progress=False, log=lambda message: None, **options)


def host_state(trainer):
    """Every array and count the test must leave as it was."""
    net, optimizer = trainer.model, trainer.optimizer
    arrays = {**net.params, **{f"buffer {name}": value for name, value in net.buffers.items()},
              **{f"state {name}": value for name, value in optimizer.state_arrays().items()}}
    return ({name: np.array(backend.to_numpy(value)) for name, value in arrays.items()},
            optimizer.steps, optimizer.lr, optimizer.schedule, [layer.extra_state() for layer in net])


def test_the_rate_rises_exponentially_and_each_loss_is_that_of_the_trainer_s_own_step(train):
    net = small_net()
    trainer = quiet_trainer(net, SGD(net, 0.05, momentum=0.9), augment=1, seed=4)
    found = find_lr(trainer, train, start=1e-4, end=1e-2, steps=7)  # 5 batches an epoch: two epochs
    assert found.lrs == pytest.approx(list(np.geomspace(1e-4, 1e-2, 7)), rel=1e-12)
    # The same steps by hand: a copy of the network, SGD with the same momentum at each rate.
    copy_net = small_net()
    optimizer = SGD(copy_net, 1.0, momentum=0.9)
    expected = []
    for epoch in range(2):
        for x, y in batches(train, 64, seed=4, epoch=epoch, augment=trainer.augment):
            if len(expected) == 7:
                break
            loss = trainer.loss_fn.forward(copy_net.forward(x), y)
            copy_net.backward(trainer.loss_fn.backward())
            expected.append(float(loss))
            optimizer.lr = found.lrs[len(expected) - 1]
            optimizer.step()
    assert found.losses == pytest.approx(expected, rel=1e-5)
    assert not found.diverged and len(found.smoothed) == 7


def test_the_trainer_s_network_and_optimizer_are_left_as_they_were_and_the_test_repeats(train):
    net = small_net()
    trainer = quiet_trainer(net, Adam(net, 1e-3))
    trainer.fit(train, 1)  # optimizer state, batch norm statistics and a dropout counter to keep
    before = host_state(trainer)
    first = find_lr(trainer, train, steps=20)
    after = host_state(trainer)
    assert after[0].keys() == before[0].keys()
    assert all(np.array_equal(after[0][name], before[0][name]) for name in before[0])
    assert after[1:] == before[1:]
    assert find_lr(trainer, train, steps=20) == first  # the same batches, the same copy: the same test


def test_the_test_stops_where_the_loss_diverges_and_its_json_holds_no_nan(train, tmp_path):
    net = small_net()
    found = find_lr(quiet_trainer(net, SGD(net, 0.1)), train, start=1e-3, end=1e6, steps=60)
    assert found.diverged and len(found.lrs) < 60
    recent = found.losses[-2:]  # Smoothed's window at 60 steps: the last two
    assert not math.isfinite(found.losses[-1]) or sum(recent) / 2 > DIVERGED * min(found.smoothed)
    written = found.write(tmp_path, "a title", plot=False)
    assert written == [tmp_path / DATA_NAME] and not (tmp_path / PLOT_NAME).exists()
    data = json.loads((tmp_path / DATA_NAME).read_text(), parse_constant=lambda name: pytest.fail(name))
    assert data["lrs"] == found.lrs and data["suggested"] == found.suggested and data["diverged"]
    assert [None if value is None else value for value in data["losses"]] == [
        value if math.isfinite(value) else None for value in found.losses]


def a_result():
    return LRRange([1e-3, 1e-2, 1e-1], [2.3, 1.0, 9.0], [1.65, 4.1, 5.0], suggested=1e-3, diverged=False)


@pytest.mark.parametrize("matplotlib", [True, False])
def test_a_test_written_undrawn_removes_the_plot_of_an_earlier_one_it_would_contradict(tmp_path, monkeypatch,
                                                                                        matplotlib):
    monkeypatch.setattr(plots, "available", lambda: True)
    monkeypatch.setattr(plots, "lr_range", lambda found, path, title: path.write_bytes(b"an earlier test's plot"))
    a_result().write(tmp_path)
    monkeypatch.setattr(plots, "available", lambda: matplotlib)
    assert a_result().write(tmp_path, plot=False if matplotlib else True) == [tmp_path / DATA_NAME]
    assert sorted(path.name for path in tmp_path.iterdir()) == [DATA_NAME]


@pytest.mark.parametrize("stop", [KeyboardInterrupt, MemoryError])
def test_a_write_stopped_while_drawing_leaves_neither_file(tmp_path, monkeypatch, stop):
    def interrupted(found, path, title):
        raise stop()

    monkeypatch.setattr(plots, "available", lambda: True)
    monkeypatch.setattr(plots, "lr_range", lambda found, path, title: path.write_bytes(b"an earlier test's plot"))
    a_result().write(tmp_path)
    monkeypatch.setattr(plots, "lr_range", interrupted)
    with pytest.raises(stop):
        a_result().write(tmp_path)
    assert list(tmp_path.iterdir()) == []  # so that xpcnn train --find-lr removes the folder it made


@pytest.mark.parametrize("args, message", [
    ((None,), "LRRange.write folder must be a path (str or Path), got None"),
    ((".", 3), "LRRange.write title must be a str, got 3"),
    ((".", "a title", "yes"), "LRRange.write plot must be True or False, got 'yes'"),
])
def test_a_write_given_no_folder_title_or_flag_is_one_clear_error_that_writes_nothing(tmp_path, monkeypatch, args,
                                                                                      message):
    """A title of 3 or plot="yes" was taken as it came, and a folder of None failed in pathlib's words."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TypeError, match=re.escape(message)):
        a_result().write(*args)
    assert list(tmp_path.iterdir()) == []


def test_the_suggestion_is_the_rate_of_the_lowest_loss_averaged_over_its_neighbours():
    losses = Smoothed(steps=100)  # two steps on each side
    for loss in [3.0, 3.1, 2.9, 2.0, 1.0, 0.2, 1.1, 0.9, 1.0, 2.0, 5.0]:
        losses.add(loss)
    found = losses.result([10.0 ** k for k in range(11)])
    # centred averages of 5: index 6 (1.1, 0.2... ) -> (1.0 + 0.2 + 1.1 + 0.9 + 1.0) / 5 = 0.84 is the lowest
    assert found.smoothed[6] == pytest.approx(0.84) and min(found.smoothed) == found.smoothed[6]
    assert found.suggested == 1e6  # the one batch of 0.2 alone does not choose
    flat = Smoothed(steps=100)
    for loss in [1.0, 1.5, 2.0, 4.0, math.inf]:
        flat.add(loss)
    none = flat.result([1.0, 2.0, 3.0, 4.0, 5.0])
    assert none.suggested is None and none.diverged  # the loss fell at no rate


def test_noise_is_not_taken_for_divergence_small_batches_averaged_over_32_images():
    """Batches of 1 image stopped after 24 steps, 'diverged', on losses that only scattered
    (0.11 once, then 4.9): the lowest of 3 single images is luck."""
    rng = np.random.default_rng(0)
    noise = list(rng.uniform(0.1, 5.0, 200))  # no trend at all
    single, batches_of_64 = Smoothed(steps=100, batch_size=1), Smoothed(steps=100, batch_size=64)
    assert single.recent == 32 and batches_of_64.recent == 3
    stopped = {}
    for losses in (single, batches_of_64):
        for k, loss in enumerate(noise):
            losses.add(loss)
            if losses.diverged:
                stopped[losses.recent] = k
                break
    assert 32 not in stopped and stopped[3] < 100  # the same scatter, in 64-image batches, would be divergence
    lucky_start = Smoothed(steps=100, batch_size=64)
    for loss in (0.1, 3.0, 3.0, 3.0):  # a partial window's average (0.1 alone) is no lowest to diverge from
        lucky_start.add(loss)
        assert not lucky_start.diverged


@pytest.mark.parametrize("call, error, message", [
    (lambda t, d: find_lr(t, d, start=0.0), ValueError, "find_lr start must be > 0"),
    (lambda t, d: find_lr(t, d, start=1e-3, end=1e-3), ValueError, "find_lr end must be > 0.001"),
    (lambda t, d: find_lr(t, d, start=1e-200, end=1e200), ValueError,  # its rates came out 0.0, then 1e200
     r"find_lr end must be less than 1e\+300 times start \(1e-200\), got 1e\+200"),
    (lambda t, d: find_lr(t, d, steps=1), ValueError, "find_lr steps must be >= 2"),
    (lambda t, d: find_lr(t, d, steps=2.5), TypeError, "find_lr steps must be an integer"),
    (lambda t, d: find_lr(t, d, progress="yes"), TypeError, "find_lr progress must be True or False"),
    (lambda t, d: find_lr(t.model, d), TypeError, "find_lr trainer must be a Trainer, got Sequential"),
    (lambda t, d: find_lr(t, d.images), TypeError, "find_lr train must be a Dataset"),
    (lambda t, d: find_lr(t, load_bundled().train.subset(np.arange(0))), ValueError, "holds no images"),
])
def test_a_range_or_data_that_cannot_be_is_one_clear_error(train, call, error, message):
    net = small_net()
    with pytest.raises(error, match=message):
        call(quiet_trainer(net, SGD(net, 0.1)), train)


def test_every_backend_finds_what_numpy_does(train, target):
    name, device = target
    found = {}
    for where, on in (("numpy", None), (name, device)):
        net = small_net().to(where, on, "float64")
        found[where] = find_lr(quiet_trainer(net, Adam(net, 1e-3)), train, steps=12)
    assert isinstance(found[name], LRRange)
    assert found[name].lrs == found["numpy"].lrs
    assert found[name].losses == pytest.approx(found["numpy"].losses, rel=1e-9)
