"""Training steps recorded as CUDA graphs learn what steps run directly learn; where
recording is impossible or fails, training goes on without it."""

from __future__ import annotations

import numpy as np
import pytest

from xpcnn import backend, capture, presets
from xpcnn.datasets import load_bundled
from xpcnn.layers import product
from xpcnn.losses import SoftmaxCrossEntropy
from xpcnn.optim import Adam, OneCycle
from xpcnn.presets import SettingsError
from xpcnn.train import Trainer, step

from ..helpers import _device_values, _put_back, record_graphs_on_cpu


@pytest.fixture(scope="module")
def data():
    return load_bundled().train.subset(np.arange(300))


def train_lenet(target, data, graphs, epochs=3, monkeypatch=None, label_smoothing=0.0, prepare=None):
    """lenet (batch norm, dropout) in float64 on 300 images in batches of 128: the last
    batch (44) is another shape, recorded in the second epoch and replayed in the third.
    With `monkeypatch`, the steps are recorded on the CPU stand-in (tests/helpers.py);
    `prepare(net, optimizer)` runs before the trainer is made."""
    net = presets.build("lenet").to(*target, "float64")
    optimizer = Adam(net, 1e-3, schedule=OneCycle(total=epochs * 3))
    if monkeypatch is not None:
        record_graphs_on_cpu(monkeypatch, net, optimizer)
    if prepare is not None:
        prepare(net, optimizer)
    notes = []
    trainer = Trainer(net, optimizer, batch_size=128, seed=3, progress=False, log=notes.append, cuda_graphs=graphs,
                      label_smoothing=label_smoothing)
    trainer.fit(data, epochs)
    return trainer, [line for line in notes if line.startswith("note:")]


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_recorded_steps_learn_what_direct_steps_learn(target, data, label_smoothing):
    if not backend.can_record_graphs(backend.to_backend(np.zeros(1), *target)):
        pytest.skip(f"{target[0]} on {target[1] or 'its default device'} records no CUDA graphs")
    direct, _ = train_lenet(target, data, graphs=False, label_smoothing=label_smoothing)
    recorded, notes = train_lenet(target, data, graphs=True, label_smoothing=label_smoothing)
    assert recorded.graph_shapes == 2 and notes == []
    for name, value in direct.model.state_dict().items():
        np.testing.assert_allclose(recorded.model.state_dict()[name], value, rtol=1e-9, atol=1e-12, err_msg=name)
    assert [layer.extra_state() for layer in recorded.model] == [layer.extra_state() for layer in direct.model]
    assert recorded.optimizer.steps == direct.optimizer.steps == 9
    losses = [[row["train_loss"] for row in trainer.history] for trainer in (recorded, direct)]
    assert losses[0] == pytest.approx(losses[1])


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_steps_recorded_on_the_cpu_stand_in_learn_what_direct_steps_learn(data, monkeypatch, label_smoothing):
    """What the GPU test above checks, on every machine: batch norm's running statistics and
    counter, dropout's masks, the one-cycle coefficients and the smoothed targets reach a
    recorded step."""
    direct, _ = train_lenet(("numpy", None), data, graphs=False, label_smoothing=label_smoothing)
    recorded, notes = train_lenet(("numpy", None), data, graphs=True, monkeypatch=monkeypatch,
                                  label_smoothing=label_smoothing)
    assert recorded.graph_shapes == 2 and notes == []
    for name, value in direct.model.state_dict().items():
        np.testing.assert_array_equal(recorded.model.state_dict()[name], value, err_msg=name)
    assert [layer.extra_state() for layer in recorded.model] == [layer.extra_state() for layer in direct.model]
    assert [row["train_loss"] for row in recorded.history] == [row["train_loss"] for row in direct.history]


@pytest.mark.parametrize("graphs, recording", [(True, "held"), (True, "refused"), (False, None)])
def test_with_graphs_every_step_takes_recordable_kernels_the_first_of_a_shape_too(data, monkeypatch, graphs,
                                                                                    recording):
    """The first step of a batch shape runs directly: it takes the kernels the recorded
    ones take (CuPy's products), so that all of them do the same arithmetic; so do the
    steps after a recording failed, as a resumed run's would."""
    net = presets.build("lenet").to("numpy", None, "float64")
    optimizer = Adam(net)
    record_graphs_on_cpu(monkeypatch, net, optimizer)
    if recording == "refused":
        monkeypatch.setattr(backend, "record_graph", lambda like, work: (_ for _ in ()).throw(RuntimeError("no")))
    seen, fast_path = [], backend.fast_path

    def watching(standard, x):
        if standard is product.matmul:
            seen.append(capture.must_be_recordable())
        return fast_path(standard, x)

    monkeypatch.setattr(backend, "fast_path", watching)
    steps = step.TrainingStep(net, optimizer, SoftmaxCrossEntropy(), graphs=graphs, log=lambda line: None)
    x, y = data.images[:16].astype(np.float64), data.labels[:16]
    with np.errstate(all="ignore"):  # the stand-in records on empty arrays, as the trainer lets it
        for _ in range(3):  # planned, recorded and replayed
            steps.compute(x, y)
            steps.update()
    assert steps.recorded_shapes == int(recording == "held") and set(seen) == {graphs}


def test_asking_for_graphs_where_there_is_no_gpu_says_so():
    """When the trainer is made, before any data; and at fit, for a model moved since."""
    net = presets.build("tutorial")
    with pytest.raises(SettingsError, match=r"cuda_graphs: CUDA graphs need PyTorch on a CUDA device, or CuPy; "
                                            r"this run is on numpy \(cpu\)"):
        Trainer(net, Adam(net), batch_size=100, progress=False, log=lambda m: None, cuda_graphs=True)
    with pytest.raises(SettingsError, match="cuda_graphs: CUDA graphs need"):
        step.use_graphs(True, net, alone=True, log=print)


@pytest.mark.parametrize("value", [0, 1, "yes"])  # NumPy's bools are kept as Python's (tests/test_checks.py)
def test_cuda_graphs_must_be_a_bool_or_none_as_a_checkpoint_records_it(value):
    net = presets.build("tutorial")
    with pytest.raises(TypeError, match="Trainer cuda_graphs must be True, False or None"):
        Trainer(net, Adam(net), progress=False, cuda_graphs=value)


@pytest.mark.parametrize("refused, late", [("compute", False), ("compute", True), ("update", True)],
                         ids=["at-once", "compute-after-its-host-work", "update-after-its-host-work"])
def test_a_recording_the_library_refuses_leaves_training_to_direct_steps(monkeypatch, data, refused, late):
    """A recording refused at once, or (late) as CuPy refuses cuBLAS: after the half's
    host work has advanced the dropout and batch-norm counters (compute) or the
    optimizer's steps (update, the compute half recorded on the CPU stand-in); the direct
    steps after it find them as they were, since its device work never ran."""
    def refuse(net, optimizer):
        stand_in = backend.record_graph

        def refusing(like, work):
            if refused == "update" and not calls:
                calls.append(like)
                return stand_in(like, work)
            if late:
                before = _device_values(net, optimizer)
                work()
                _put_back(before)
            raise RuntimeError("operation not permitted when stream is capturing")

        monkeypatch.setattr(backend, "record_graph", refusing)

    calls = []
    monkeypatch.setattr(backend, "can_record_graphs", lambda like: True)
    trainer, notes = train_lenet(("numpy", None), data, graphs=True, epochs=2, prepare=refuse,
                                 monkeypatch=monkeypatch if refused == "update" else None)
    monkeypatch.undo()
    direct, _ = train_lenet(("numpy", None), data, graphs=False, epochs=2)
    assert trainer.graph_shapes == (refused == "update")
    assert notes == ["note: training without CUDA graphs: recording a step failed (RuntimeError: operation not "
                     "permitted when stream is capturing)"]
    for name, value in direct.model.state_dict().items():
        np.testing.assert_array_equal(trainer.model.state_dict()[name], value, err_msg=name)
    assert trainer.optimizer.steps == direct.optimizer.steps
    assert [layer.extra_state() for layer in trainer.model] == [layer.extra_state() for layer in direct.model]
