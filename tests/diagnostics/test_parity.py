"""Backend parity as a feature: it passes on real backends, fails on injected faults and
names the first layer that differs; training steps move no data to the host."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import xpcnn
from xpcnn import backend, presets
from xpcnn.datasets import batches, load_bundled
from xpcnn.diagnostics import parity
from xpcnn.optim import SGD, Adam
from xpcnn.train import Trainer


@pytest.fixture(scope="module")
def batch():
    data = load_bundled()
    return next(batches(data.test, 16, shuffle=False))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("preset", ["seed", "lenet"])
def test_presets_agree_with_numpy(target, batch, preset, dtype):
    if target[0] == "numpy":
        pytest.skip("numpy is the reference")
    report = parity.compare(presets.build(preset), *batch, ["numpy", target], dtype)
    assert report.passed, report.to_table()
    local = report.worst("local")
    assert local.max_rel < parity.TOLERANCES[dtype] / 10  # headroom, as documented
    assert {row.view for row in report.rows} == {"local", "end-to-end"}


def test_report_covers_every_layer_and_parameter(batch):
    model = presets.build("tutorial")
    report = parity.compare(model, *batch, ["numpy", "numpy"], "float64")
    local = [row for row in report.rows if row.view == "local"]
    assert len(local) == len(model) + 1 + len(model.params) + len(model)  # outputs, loss, grads, input grads
    assert all(row.max_abs == 0.0 for row in report.rows)  # same backend: bit-identical
    data = json.loads(report.to_json())
    assert data["passed"] and data["first_failure"] is None and len(data["rows"]) == len(report.rows)
    assert "PASS" in report.to_table()


@pytest.fixture
def torch_module():
    return pytest.importorskip("torch")


def test_a_perturbed_matmul_fails_at_the_first_layer(batch, torch_module, monkeypatch):
    original = torch_module.Tensor.__matmul__
    monkeypatch.setattr(torch_module.Tensor, "__matmul__", lambda a, b: original(a, b) * 1.01)
    report = parity.compare(presets.build("tutorial"), *batch, ["numpy", "torch"], "float32")
    assert not report.passed
    first = report.first_failure
    assert (first.view, first.layer, first.name, first.quantity) == ("local", 0, "Conv2D", "output")
    assert "layer 0 (Conv2D) output on torch" in report.to_table()


def test_a_backward_fault_in_one_layer_is_named(batch, torch_module, monkeypatch):
    original = xpcnn.MaxPool2D.backward

    def faulty(self, dy):
        dx = original(self, dy)
        return dx * 1.001 if backend.backend_of(dy) == "torch" else dx

    monkeypatch.setattr(xpcnn.MaxPool2D, "backward", faulty)
    report = parity.compare(presets.build("tutorial"), *batch, ["numpy", "torch"], "float64")
    first = report.first_failure
    assert (first.layer, first.name, first.quantity) == (1, "MaxPool2D", "grad input")
    assert all(row.passed for row in report.rows if row.view == "local" and row.layer != 1)


def test_trajectory_follows_training_and_can_fail(torch_module, monkeypatch):
    data = load_bundled()
    train_batches = list(batches(data.train, 16, seed=0))[:4]
    report = parity.trajectory(presets.build("tutorial"), train_batches, ["numpy", "torch"], "float64", "sgd")
    assert report.passed and len(report.drift) == 4 and len(report.losses[0]) == 2
    assert "PASS" in report.to_table()
    original = torch_module.Tensor.__matmul__
    monkeypatch.setattr(torch_module.Tensor, "__matmul__", lambda a, b: original(a, b) * (1 + 1e-6))
    assert not parity.trajectory(presets.build("tutorial"), train_batches, ["numpy", "torch"], "float64", "adam").passed


def test_a_dtype_of_any_library_names_the_precision_compared(batch, torch_module):
    # a NumPy or torch dtype was "unsupported dtype torch.float64; expected one of float64,
    # float32", and trajectory's dtype=None a KeyError ('sgd', None)
    model = presets.build("tutorial")
    x, y = batch
    report = parity.compare(model, x[:2], y[:2], ["numpy", "torch"], torch_module.float64)
    assert report.passed and report.dtype == "float64"
    assert parity.trajectory(model, [(x[:2], y[:2])], ["numpy", "torch"], np.float32).dtype == "float32"
    with pytest.raises(ValueError, match="unsupported dtype None; expected one of float32, float64"):
        parity.trajectory(model, [(x[:2], y[:2])], ["numpy", "torch"], None)


def test_clone_is_independent():
    model = presets.build("lenet")
    copy = parity.clone(model, "numpy", dtype="float64")
    copy.params["0.weight"][...] = 0
    assert np.any(model.params["0.weight"] != 0) and model.dtype == "float32"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cli_parity_lenet(dtype):
    pytest.importorskip("torch")
    result = subprocess.run([sys.executable, "-m", "xpcnn", "parity", "--backends", "numpy,torch", "--model",
                             "lenet", "--dtype", dtype, "--steps", "2", "--json"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    report = json.loads(result.stdout)
    assert report["passed"] and report["compare"]["dtype"] == dtype and len(report["trajectory"]["drift"]) == 2


def test_cli_parity_names_unusable_backends():
    result = subprocess.run([sys.executable, "-m", "xpcnn", "parity", "--backends", "numpy,nosuch"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "unknown backend 'nosuch'" in result.stderr
    if backend.unavailable_reason("cupy") is not None:
        result = subprocess.run([sys.executable, "-m", "xpcnn", "parity", "--backends", "numpy,cupy"],
                                capture_output=True, text=True)
        assert result.returncode == 2 and "backend cupy is not usable here" in result.stderr


# -- device discipline ------------------------------------------------------------------------

TRANSFERS = ("__float__", "__int__", "__bool__", "__index__", "__array__", "__dlpack__", "__complex__")


@pytest.fixture
def count_transfers(monkeypatch):
    """Count every conversion of an array_api_strict array to host data."""
    strict = pytest.importorskip("array_api_strict")
    counts = {"n": 0}
    array_type = type(strict.asarray(0.0))
    for name in TRANSFERS:
        original = getattr(array_type, name, None)
        if original is None:
            continue

        def counting(self, *args, _original=original, **kwargs):
            counts["n"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(array_type, name, counting)
    return counts


@pytest.mark.parametrize("preset", ["seed", "lenet"])
def test_a_training_step_stays_on_its_device(count_transfers, preset):
    """On array_api_strict's 'device1', mixing devices raises and host conversion is
    counted: forward, loss, backward and the update create everything on the input's
    device and move nothing to the host."""
    strict = pytest.importorskip("array_api_strict")
    device = strict.Device("device1")
    model = presets.build(preset).to("array_api_strict", device)
    rng = np.random.default_rng(0)
    x = backend.to_backend(rng.standard_normal((8, 1, 28, 28)), "array_api_strict", device, "float32")
    y = backend.to_backend(rng.integers(0, 10, 8), "array_api_strict", device)
    loss_fn = xpcnn.SoftmaxCrossEntropy(check_labels=False)  # as in the training loop: labels checked on the host
    count_transfers["n"] = 0
    for optimizer in (SGD(model, 0.01, momentum=0.9, weight_decay=1e-4), Adam(model, 1e-3)):
        loss_fn.forward(model.forward(x), y)
        model.backward(loss_fn.backward())
        optimizer.step()
    assert count_transfers["n"] == 0
    for value in [*model.params.values(), *model.buffers.values(), *optimizer.state_arrays().values()]:
        assert value.device == device


def test_the_trainer_moves_two_scalars_per_step_in_one_transfer(count_transfers):
    strict = pytest.importorskip("array_api_strict")
    device = strict.Device("device1")
    data = load_bundled().train.subset(np.arange(64))
    model = presets.build("tutorial").to("array_api_strict", device)
    trainer = Trainer(model, SGD(model, 0.01), batch_size=16, progress=False, log=lambda m: None)
    count_transfers["n"] = 0
    trainer.fit(data, 1)
    # The loss and the number correct, together, once per step; once an epoch, what layer_stats
    # measures: the 3 weights as the epoch begins and ends, and which units of the 2 ReLUs fired.
    assert count_transfers["n"] == 4 + 3 + 3 + 2


def test_model_from_builds_a_preset_at_a_width():
    from xpcnn.diagnostics.parity import model_from

    assert model_from("cifar", 0, 0.25).num_params() == xpcnn.presets.build("cifar", width=0.25).num_params()
    with pytest.raises(ValueError, match="width: applies to resnet20 and cifar, not lenet"):
        model_from("lenet", width=0.5)


def test_a_network_that_ends_in_a_block_is_scored_on_the_block_s_output():
    """The local view's loss is taken of the reference network's output: for a last block
    that is body plus shortcut, not what the body's last layer gave."""
    pytest.importorskip("array_api_strict")
    net = xpcnn.Sequential([xpcnn.Flatten(), xpcnn.Dense(12, 4, rng=0), xpcnn.Residual([xpcnn.Dense(4, 4, rng=1)])])
    report = xpcnn.parity.compare(net, np.random.default_rng(0).random((3, 1, 3, 4)), np.array([0, 1, 2]),
                                  ["numpy", "array_api_strict"])
    assert report.passed, report.to_table()
    assert [row.max_rel for row in report.rows if row.quantity == "loss"] == [0.0, 0.0]


def test_a_batch_beyond_the_images_there_are_is_reported_as_the_batch_used(monkeypatch):
    small = load_bundled().test.subset(np.arange(40))
    monkeypatch.setattr("xpcnn.datasets.load_bundled", lambda: type("Bundled", (), {"train": small, "test": small}))
    result = parity.check(presets.build("tutorial"), ["numpy", "array_api_strict"], batch_size=1000)
    assert result.batch_size == 40 and "batch of 40 bundled MNIST images" in result.to_text()


def test_training_steps_beyond_an_epoch_of_images_are_all_taken(monkeypatch):
    """--steps 8 --batch-size 2000 trained 5 steps, all that one epoch of the bundled images
    holds, and said nothing of the 3 left out."""
    small = load_bundled().train.subset(np.arange(40))
    monkeypatch.setattr("xpcnn.datasets.load_bundled", lambda: type("Bundled", (), {"train": small, "test": small}))
    result = parity.check(presets.build("tutorial"), ["numpy", "array_api_strict"], batch_size=16, steps=5)
    assert len(result.trajectory.drift) == 5 and result.passed


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_batches_compared_are_normalised_in_the_dtype_compared(monkeypatch, dtype):
    """A float64 check compared inputs normalised in float32 and widened (errors of 1e-7)."""
    data, seen = load_bundled(), []
    monkeypatch.setattr(parity, "compare", lambda model, x, *rest: seen.append(x) or parity.ParityReport("", dtype))
    monkeypatch.setattr(parity, "trajectory", lambda model, steps, *rest: seen.extend(x for x, _ in steps))
    parity.check(presets.build("tutorial"), ["numpy", "array_api_strict"], dtype, batch_size=4, steps=1)
    expected = [next(batches(data.test, 4, shuffle=False, dtype=dtype))[0],
                next(batches(data.train, 4, seed=0, dtype=dtype))[0]]
    for x, wanted in zip(seen, expected, strict=True):
        assert x.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(x, wanted)


def test_an_optimizer_without_training_steps_is_refused_not_ignored():
    """A SettingsError, which xpcnn parity names its flag by: it refused --optimizer in words of its own."""
    with pytest.raises(presets.SettingsError, match=r"^optimizer: it is the optimizer of the training steps"):
        parity.check(presets.build("tutorial"), ["numpy", "array_api_strict"], optimizer="adam")


@pytest.mark.parametrize("options, kind, message", [
    ({"steps": 1.5}, TypeError, r"^steps must be an integer, got 1.5$"),
    ({"steps": -1}, ValueError, r"^steps must be >= 0, got -1$"),
    ({"batch_size": 0}, ValueError, r"^batch_size must be >= 1, got 0$"),
    ({"seed": "3"}, TypeError, r"^seed must be an integer, got '3'$"),
])
def test_counts_that_are_no_counts_are_refused_before_any_work(options, kind, message):
    with pytest.raises(kind, match=message):
        parity.check("tutorial", ["numpy", "array_api_strict"], **options)


def test_the_worst_row_is_a_nan_one_where_there_is_one():
    rows = [parity.Row("local", 0, "Dense", "output", "torch", 0.0, 0.0, 1e-10),
            parity.Row("local", 1, "ReLU", "grad input", "torch", float("nan"), float("nan"), 1e-10),
            parity.Row("local", 2, "Dense", "output", "torch", 1e-12, 1e-12, 1e-10)]
    report = parity.ParityReport("numpy", "float64", rows)
    worst = report.worst()
    assert worst.layer == 1 and not worst.passed
    assert report.to_table().endswith("FAIL: first difference at layer 1 (ReLU) grad input on torch: values that are "
                                      "not finite (NaN or Inf), here or in the reference")


def test_check_takes_what_the_command_takes_a_preset_name_or_a_checkpoint(tmp_path):
    """docs/python.md gives check as what `xpcnn parity` runs: its --model, a name or a
    path, gave AttributeError: 'str' object has no attribute 'data'."""
    pytest.importorskip("array_api_strict")
    result = parity.check("tutorial", ["numpy", "array_api_strict"], batch_size=2)
    assert result.passed and result.model == "tutorial"
    xpcnn.save_checkpoint(tmp_path / "net.npz", presets.build("tutorial", 3))
    assert parity.check(tmp_path / "net.npz", ["numpy", "array_api_strict"], batch_size=2).passed
    with pytest.raises(LookupError, match="'nosuch' is neither a preset"):
        parity.check("nosuch", ["numpy", "array_api_strict"])


def test_the_json_of_a_network_whose_values_overflow_is_json():
    """Differences of NaN (weights that overflow float32) were written as NaN, which JSON
    readers refuse: `xpcnn parity --json | jq` failed."""
    net = presets.build("tutorial")
    net.load_state_dict({key: value * 1e19 for key, value in net.state_dict().items()})
    with np.errstate(all="ignore"):
        result = parity.check(net, ["numpy", "array_api_strict"], "float32", batch_size=2, steps=1)
    text = json.dumps(result.to_dict())
    assert json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in the JSON")) is not None
    assert any(row["max_rel"] is None for row in result.to_dict()["compare"]["rows"])
