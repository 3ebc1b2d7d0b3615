"""Checkpoints (xpcnn/io/checkpoint.py): portable round trips, strict validation, atomic saves
under SIGKILL, and untrusted files: mutations, escaping member paths, hostile architectures."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import xpcnn
from xpcnn import backend, presets
from xpcnn.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from xpcnn.layers.base import ArchitectureError
from xpcnn.optim import SGD, Adam
from xpcnn.train import record

from ..helpers import mutate, small_checkpoint, small_dataset


def trained_step(net, target):
    """One Adam step so that optimizer state and BN running statistics are non-trivial."""
    opt = Adam(net, 1e-3)
    rng = np.random.default_rng(0)
    x = backend.to_backend(rng.standard_normal((4, 1, 28, 28)), *target, net.dtype)
    loss = xpcnn.SoftmaxCrossEntropy()
    loss.forward(net.forward(x), backend.to_backend(rng.integers(0, 10, 4), *target))
    net.backward(loss.backward())
    opt.step()
    return opt, x


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_save_anywhere_load_on_numpy_same_outputs(tmp_path, target, dtype):
    net = presets.lenet(3).to(*target, dtype)
    opt, x = trained_step(net, target)
    expected = backend.to_numpy(net.forward(x, training=False))
    save_checkpoint(tmp_path / "c.npz", net, opt, {"note": "hello"})
    loaded = load_checkpoint(tmp_path / "c.npz", "numpy")
    assert loaded.model.backend == "numpy" and loaded.model.dtype == dtype
    got = loaded.model.forward(backend.to_numpy(x), training=False)
    if target[0] == "numpy":
        np.testing.assert_array_equal(got, expected)
    else:  # same weights, another library's kernels: equal up to rounding
        tol = 1e-5 if dtype == "float32" else 1e-12
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)
    assert loaded.trainer == {"note": "hello"}
    assert loaded.optimizer["steps"] == 1 and set(loaded.optimizer_arrays) == set(opt.state_arrays())
    assert loaded.model[11].calls == net[11].calls == 1  # dropout counter travels too
    for name, value in net.buffers.items():
        np.testing.assert_array_equal(backend.to_numpy(loaded.model.buffers[name]), backend.to_numpy(value))


def test_load_onto_every_backend(tmp_path, target):
    net = presets.tutorial(1)
    save_checkpoint(tmp_path / "c.npz", net)
    loaded = load_checkpoint(tmp_path / "c.npz", *target)
    assert loaded.model.backend == target[0]
    for name, value in net.params.items():
        np.testing.assert_array_equal(backend.to_numpy(loaded.model.params[name]), value)


def rewrite(path, out, *, meta=None, drop=(), replace=None):
    """Copy checkpoint `path` to `out`, editing its metadata or arrays."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files if k not in drop}
    info = json.loads(arrays["__meta__"].tobytes())
    if meta:
        meta(info)
    arrays["__meta__"] = np.frombuffer(json.dumps(info).encode(), np.uint8)
    arrays.update(replace or {})
    np.savez(out, **arrays)
    return out


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "good.npz"
    save_checkpoint(path, presets.tutorial(0))
    return path


def test_mismatches_are_named(saved, tmp_path):
    def grow(info):
        info["architecture"][4]["config"]["out_features"] = 64

    with pytest.raises(CheckpointError, match=r"param/4.weight: shape \(128, 1352\), architecture needs \(64, 1352\)"):
        load_checkpoint(rewrite(saved, tmp_path / "a.npz", meta=grow))

    def forget(info):
        del info["arrays"]["param/0.bias"]

    with pytest.raises(CheckpointError, match=r"missing param/0.bias"):
        load_checkpoint(rewrite(saved, tmp_path / "b.npz", meta=forget, drop=["param/0.bias"]))

    def evil(info):
        info["architecture"][0]["type"] = "os.system"

    with pytest.raises(CheckpointError, match="unknown layer type 'os.system'"):
        load_checkpoint(rewrite(saved, tmp_path / "c.npz", meta=evil))

    with pytest.raises(CheckpointError, match="metadata says"):
        load_checkpoint(rewrite(saved, tmp_path / "d.npz", replace={"param/0.bias": np.zeros(8, np.float64)}))

    with pytest.raises(CheckpointError, match="differ from those stored"):
        load_checkpoint(rewrite(saved, tmp_path / "e.npz", replace={"param/99.weight": np.zeros(3, np.float32)}))


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "random.npz").write_bytes(b"PK\x03\x04" + os.urandom(1000))
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "random.npz")
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    with pytest.raises(CheckpointError, match="no __meta__"):
        load_checkpoint(tmp_path / "plain.npz")
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(CheckpointError, match="not a checkpoint archive"):
        load_checkpoint(tmp_path / "single.npy")


def test_pickled_arrays_are_never_loaded(saved, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    out = tmp_path / "evil.npz"
    with np.load(saved, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["param/0.bias"] = np.array([Payload()] * 8, dtype=object)
    np.savez(out, **arrays)
    with pytest.raises(CheckpointError):
        load_checkpoint(out)
    assert not marker.exists()


def test_member_larger_than_declared_is_refused_before_reading(saved, tmp_path):
    out = tmp_path / "big.npz"
    with zipfile.ZipFile(saved) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "param/0.bias.npy":
                data += bytes(10 << 20)  # 10 MB of trailing zeros, compresses to little
            target.writestr(item.filename, data)
    with pytest.raises(CheckpointError, match="unpacks to"):
        load_checkpoint(out)


SAVER = textwrap.dedent(
    """
    import sys, numpy as np
    from xpcnn import presets
    from xpcnn.io.checkpoint import save_checkpoint
    net = presets.lenet(0)
    print("ready", flush=True)
    i = 0
    while True:
        i += 1
        net.params["9.bias"][...] = i
        save_checkpoint(sys.argv[1], net, trainer={"i": i})
        print("saved", i, flush=True)
    """
)


def test_sigkill_while_saving_keeps_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, presets.lenet(0), trainer={"i": 0})
    rng = np.random.default_rng(0)
    last = 0
    for attempt in range(6):
        process = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], stdout=subprocess.PIPE)
        assert process.stdout.readline().strip() == b"ready"
        if attempt == 5:  # however slow the machine, the last run completes a save first
            assert process.stdout.readline().startswith(b"saved")
        time.sleep(rng.uniform(0.05, 0.6))
        process.send_signal(signal.SIGKILL)
        process.wait()
        loaded = load_checkpoint(path)  # never half-written
        i = loaded.trainer["i"]
        assert np.all(loaded.model.params["9.bias"] == i)
        last = max(last, i)
    assert last > 0
    # A killed save may leave its temporary file, never anything named like a checkpoint.
    leftovers = {p.name for p in tmp_path.iterdir()} - {"ckpt.npz"}
    assert all(name.startswith(".ckpt.npz.") and name.endswith(".tmp") for name in leftovers)



# -- untrusted checkpoints ---------------------------------------------------------------------


@settings(max_examples=150)
@given(st.randoms(use_true_random=False), st.integers(1, 6))
def test_mutations_are_refused_or_usable(tmp_path_factory, rng, edits):
    folder = tmp_path_factory.mktemp("ckpt")
    data = mutate(small_checkpoint(folder), rng, edits)
    (folder / "m.npz").write_bytes(data)
    try:
        checkpoint = load_checkpoint(folder / "m.npz")
    except CheckpointError:
        return
    x = np.zeros((1, 1, 6, 6), np.float32)
    assert checkpoint.model.forward(x).shape == (1, 3)  # accepted means usable


def test_archive_member_paths_cannot_escape(tmp_path):
    good = tmp_path / "good.npz"
    good.write_bytes(small_checkpoint(tmp_path))
    evil = tmp_path / "evil.npz"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(evil, "w") as target:
        for item in source.infolist():
            target.writestr(item.filename, source.read(item))
        target.writestr("../../escaped.npy", source.read("param/0.weight.npy"))
    before = set(tmp_path.parent.rglob("escaped*"))
    with pytest.raises(CheckpointError):
        load_checkpoint(evil)
    assert set(tmp_path.parent.rglob("escaped*")) == before  # nothing is ever extracted


@pytest.mark.parametrize("config", [
    [{"type": "Dense", "config": {"in_features": 10**9, "out_features": 10**6}}],
    [{"type": "Conv2D", "config": {"in_channels": 2**40, "out_channels": 2**40, "kernel_size": 3}}],
    [{"type": "Conv2D", "config": {"in_channels": -3, "out_channels": 8, "kernel_size": 3}}],
    [{"type": "Dense", "config": {"in_features": 3, "out_features": 2, "rng": {"__class__": "x"}}}],
    [{"type": "Dense", "config": {"in_features": 3, "out_features": 2, "rng": 10**30}}],
    [{"type": "Dense", "config": {"in_features": 3, "out_features": 2, "rng": list(range(100_000))}}],
    [{"type": "Dense"}],
    {"not": "a list"},
    [{"type": "Residual", "config": {"body": [{"type": "Dense", "config": {"in_features": 10**9,
                                                                         "out_features": 10**6}}]}}],
    [{"type": "Residual", "config": {"body": "ReLU"}}],
    [{"type": "Residual", "config": {"body": [{"type": "Residual", "config": {"body": []}}]}}],
    json.loads('[{"type": "Residual", "config": {"body": ' * 200 + '[]' + '}}]' * 200),
    [{"type": "Residual", "config": {"body": [{"type": "ReLU", "config": {}}] * 10_000}}] * 40,
])
def test_hostile_architectures_are_refused_before_allocating(tmp_path, config):
    path = tmp_path / "c.npz"
    path.write_bytes(small_checkpoint(tmp_path))
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(arrays["__meta__"].tobytes())
    meta["architecture"] = config
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(path, **arrays)
    start = time.process_time()  # CPU time: the check's cost, however loaded the machine
    with pytest.raises(CheckpointError, match="field architecture"):
        load_checkpoint(path)
    assert time.process_time() - start < 5


def test_a_deep_network_loads_in_time_linear_in_its_layers(tmp_path):
    """Each array was set by looking its layer up among all: 280 s for 10,000 layers."""
    net = xpcnn.Sequential([xpcnn.BatchNorm2D(1) for _ in range(2_000)] + [xpcnn.Flatten(), xpcnn.Dense(4, 2)])
    save_checkpoint(tmp_path / "deep.npz", net)
    start = time.process_time()
    loaded = load_checkpoint(tmp_path / "deep.npz")
    assert time.process_time() - start < 5 and len(loaded.model.buffers) == 4_000


def test_deeply_nested_json_is_refused(tmp_path):
    path = tmp_path / "c.npz"
    np.savez(path, __meta__=np.frombuffer(b"[" * 100_000 + b"]" * 100_000, np.uint8))
    with pytest.raises(CheckpointError, match="nests JSON arrays or objects too deeply") as caught:
        load_checkpoint(path)
    assert "Recursion" not in str(caught.value)


# -- hostile and malformed files: refused before memory or time is spent, naming the field ---------


def peak_bytes(function):
    """Peak of traced allocations (NumPy's included) while `function` runs."""
    tracemalloc.start()
    try:
        function()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_declared_arrays_the_architecture_does_not_need_are_never_read(saved, tmp_path):
    out = tmp_path / "hostile.npz"
    big = np.zeros(1 << 26, np.float32)  # 256 MiB each once unpacked; a few hundred KB deflated
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": big.shape})
    with zipfile.ZipFile(saved) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as target:
        meta = json.loads(np.load(saved)["__meta__"].tobytes())
        for index in range(4):
            meta["arrays"][f"buffer/{index}.spare"] = {"shape": list(big.shape), "dtype": "float32"}
            with target.open(f"buffer/{index}.spare.npy", "w", force_zip64=True) as member:
                member.write(header.getvalue())
                for _ in range(64):
                    member.write(bytes(1 << 22))
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "__meta__.npy":
                buffer = io.BytesIO()
                np.save(buffer, np.frombuffer(json.dumps(meta).encode(), np.uint8))
                data = buffer.getvalue()
            target.writestr(item.filename, data, compress_type=zipfile.ZIP_STORED)
    assert out.stat().st_size < 8 << 20  # a few MB on disk, 1 GiB declared

    def load():
        with pytest.raises(CheckpointError, match=r"unexpected buffer/0.spare"):
            load_checkpoint(out)

    assert peak_bytes(load) < 20 << 20


def test_a_huge_architecture_without_its_arrays_is_refused_before_building(saved, tmp_path):
    def huge(info):  # 400 million weights declared, none stored
        info["architecture"] = [{"type": "Dense", "config": {"in_features": 20_000, "out_features": 20_000}}]
        info["arrays"] = {}

    path = rewrite(saved, tmp_path / "huge.npz", meta=huge, drop=["param/0.weight", "param/0.bias", "param/4.weight",
                                                                    "param/4.bias", "param/6.weight", "param/6.bias"])
    start = time.process_time()

    def load():
        with pytest.raises(CheckpointError, match=r"missing param/0.weight"):
            load_checkpoint(path)

    assert peak_bytes(load) < 20 << 20 and time.process_time() - start < 5


def edit_trainer(change):
    def edit(info):
        change(info["trainer"])
    return edit


MALFORMED = {
    "extra_state a list": (lambda m: m.update(extra_state=[1]), "field extra_state: expected an object"),
    "data without mean": (edit_trainer(lambda t: t["info"]["data"].pop("mean")), "field trainer.info.data"),
    "std 0": (edit_trainer(lambda t: t["info"]["data"].update(std=0)), r"field trainer.info.data.std: expected a "
              r"number in \[1e-12, 1e\+06\] per channel \(1\)"),
    "mean 1e308": (edit_trainer(lambda t: t["info"]["data"].update(mean=1e308)), r"field trainer.info.data.mean: "
                   r"expected a number in \[-1e\+06, 1e\+06\] per channel \(1\), got 1e\+308"),
    "a mean per channel too many": (edit_trainer(lambda t: t["info"]["data"].update(mean=[0.1, 0.2])),
                                    r"field trainer.info.data.mean: expected a number in .* per channel \(1\)"),
    "NaN mean": (edit_trainer(lambda t: t["info"]["data"].update(mean=float("nan"))), "field trainer.info.data.mean"),
    "classes not names": (edit_trainer(lambda t: t["info"]["data"].update(classes=[1, 2])),
                          "field trainer.info.data.classes"),
    "a class name with an escape": (edit_trainer(lambda t: t["info"]["data"].update(classes=["a", "\x1b[31mb\nc",
                                                                                           "d"])),
                                    r"field trainer.info.data.classes.1: expected a printable name of 1 to 255 "
                                    r"characters, got '\\x1b\[31mb\\nc'"),
    "a class name too long": (edit_trainer(lambda t: t["info"]["data"].update(classes=["a", "b", "c" * 256])),
                              r"field trainer.info.data.classes.2: expected a printable name"),
    "shape of strings": (lambda m: m["arrays"]["param/0.weight"].update(shape=["2"]),
                         r"field arrays.param/0.weight.shape"),
    "int8 array": (lambda m: m["arrays"]["param/0.weight"].update(dtype="int8"), r"field arrays.param/0.weight.dtype"),
    "optimizer steps -1": (lambda m: m["optimizer"].update(steps=-1), "field optimizer.steps"),
    "lr a string": (lambda m: m["optimizer"]["config"].update(lr="fast"), "field optimizer.config.lr"),
    "unknown optimizer": (lambda m: m["optimizer"]["config"].update(type="Lion"), "unknown optimizer 'lion'"),
    "architecture a dict": (lambda m: m.update(architecture={}), "field architecture: expected a list of layers"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_metadata_names_the_file_and_the_field(tmp_path, case):
    path = tmp_path / "run.npz"
    path.write_bytes(small_checkpoint(tmp_path))
    edit, message = MALFORMED[case]
    with pytest.raises(CheckpointError, match=message) as error:
        load_checkpoint(rewrite(path, tmp_path / "bad.npz", meta=edit))
    assert str(error.value).startswith(f"{tmp_path / 'bad.npz'}: ")


def test_settings_an_optimizer_does_not_take_are_named_on_resume(tmp_path):
    path = tmp_path / "run.npz"
    path.write_bytes(small_checkpoint(tmp_path))
    bad = rewrite(path, tmp_path / "bad.npz", meta=lambda m: m["optimizer"]["config"].update(warp=9))
    with pytest.raises(CheckpointError, match=r"bad.npz: field optimizer: .*warp"):
        xpcnn.Trainer.resume(bad)


def test_restoring_the_optimizer_of_a_model_saved_alone_says_so(saved):
    with pytest.raises(CheckpointError, match=r"good.npz: holds no optimizer \(a model saved alone"):
        load_checkpoint(saved).restore_optimizer()


def test_optimizer_state_missing_after_a_step_is_named_on_resume(tmp_path):
    path = tmp_path / "run.npz"
    path.write_bytes(small_checkpoint(tmp_path))

    def stepped(meta):
        meta["optimizer"]["steps"] = 3
        del meta["arrays"]["optim/momentum/0.bias"]

    bad = rewrite(path, tmp_path / "bad.npz", meta=stepped, drop=["optim/momentum/0.bias"])
    with pytest.raises(CheckpointError, match=r"bad.npz: field optimizer: SGD: 3 steps taken, but no state "
                                              r"momentum/0.bias"):
        xpcnn.Trainer.resume(bad)


@pytest.mark.parametrize("key", ["param/0.weight", "buffer/1.running_var", "optim/momentum/9.bias"])
def test_non_finite_arrays_are_refused(tmp_path, key):
    path = tmp_path / "run.npz"
    net = presets.lenet(0)
    opt = SGD(net, 0.1, momentum=0.9)
    for name, param in net.params.items():
        opt.state["momentum"][name] = np.zeros_like(param)
    save_checkpoint(path, net, opt)
    with np.load(path) as archive:
        value = archive[key].copy()
    value.flat[0] = np.nan if key.startswith("param") else np.inf
    with pytest.raises(CheckpointError, match=f"{key} holds NaN or Inf"):
        load_checkpoint(rewrite(path, tmp_path / "bad.npz", replace={key: value}))


def pooled_net():
    return xpcnn.Sequential([xpcnn.Conv2D(1, 8, 3, rng=0), xpcnn.GlobalAvgPool2D(), xpcnn.Flatten(),
                             xpcnn.Dense(8, 10, rng=0)])


DIGITS = {"name": "mnist", "mean": 0.13, "std": 0.31, "classes": list("0123456789"), "input_shape": [1, 28, 28]}


def test_a_network_whose_activations_for_one_image_are_huge_is_refused_cheaply(tmp_path):
    """A padding of 20,000 on 28x28 images: 51 GB of activations a picture, from a file of a few KB."""
    save_checkpoint(tmp_path / "run.npz", pooled_net(), data=DIGITS)

    def pad(meta):
        meta["architecture"][0]["config"]["padding"] = [20_000] * 4

    bad = rewrite(tmp_path / "run.npz", tmp_path / "bad.npz", meta=pad)

    def load():
        with pytest.raises(CheckpointError, match=r"bad.npz: field architecture: one 1x28x28 image "
                                                  r"\(trainer.info.data.input_shape\) makes 12,816,646,218 values in "
                                                  r"its layers, over the limit of 2,147,483,648"):
            load_checkpoint(bad)

    assert peak_bytes(load) < 20 << 20
    padded = pooled_net()
    padded.layers[0] = xpcnn.Conv2D(1, 8, 3, padding=20_000)
    with pytest.raises(ValueError, match=r"save_checkpoint data: one \(1, 28, 28\) image makes 12,816,646,218 values"):
        save_checkpoint(tmp_path / "never.npz", padded, data=DIGITS)
    assert not (tmp_path / "never.npz").exists()


@pytest.mark.parametrize("shape", [[1, 65537, 28], [4096, 4096, 4096]])
def test_an_input_shape_beyond_the_limits_is_refused(tmp_path, shape):
    save_checkpoint(tmp_path / "run.npz", pooled_net(), data=DIGITS)
    bad = rewrite(tmp_path / "run.npz", tmp_path / "bad.npz",
                  meta=lambda meta: meta["trainer"]["info"]["data"].update(input_shape=shape, mean=[0.1] * shape[0],
                                                                           std=[0.3] * shape[0]))
    with pytest.raises(CheckpointError, match=r"field (trainer.info.data.input_shape|architecture: .* makes "
                                              r"68,719,476,736 values)"):
        load_checkpoint(bad)


def test_negative_running_variances_are_refused(tmp_path):
    """Inference takes their square roots: predict printed "nan%"."""
    save_checkpoint(tmp_path / "run.npz", presets.lenet(0))
    variances = np.ones(32, np.float32)
    variances[3] = -2.0
    bad = rewrite(tmp_path / "run.npz", tmp_path / "bad.npz", replace={"buffer/1.running_var": variances})
    with pytest.raises(CheckpointError, match=r"bad.npz: buffer/1.running_var: expected variances >= 0, got -2$"):
        load_checkpoint(bad)


def test_a_batch_norm_eps_of_0_in_the_arrays_dtype_is_refused(tmp_path):
    def tiny_eps(meta):
        meta["architecture"][1]["config"]["eps"] = 1e-300

    save_checkpoint(tmp_path / "run.npz", presets.lenet(0))
    bad = rewrite(tmp_path / "run.npz", tmp_path / "bad.npz", meta=tiny_eps)
    with pytest.raises(CheckpointError, match=r"bad.npz: field architecture: layer 1 \(BatchNorm2D\): expected an eps "
                                              r"> 0 in float32, got 1e-300"):
        load_checkpoint(bad)
    save_checkpoint(tmp_path / "run64.npz", presets.lenet(0).to("numpy", dtype="float64"))
    fine = rewrite(tmp_path / "run64.npz", tmp_path / "fine.npz", meta=tiny_eps)
    assert load_checkpoint(fine).model[1].eps == 1e-300
    with pytest.raises(CheckpointError, match=r"expected an eps > 0 in float32"):
        load_checkpoint(fine, dtype="float32")


def test_a_network_of_two_dtypes_is_refused_before_a_file_no_load_takes_is_written(tmp_path):
    net = presets.build("tutorial")
    net[0].to("numpy", dtype="float64")
    with pytest.raises(ValueError, match=r"arrays are not in one place: 0.weight on numpy \(float64"):
        save_checkpoint(tmp_path / "c.npz", net)
    assert not (tmp_path / "c.npz").exists()


def test_the_dtype_to_load_in_may_be_any_librarys_and_is_checked_first(tmp_path):
    # a torch dtype, or a name that is no dtype, failed in NumPy ("Cannot interpret
    # 'torch.float64' as a data type"); "int8" was blamed on the batch norm's eps
    torch = pytest.importorskip("torch")
    save_checkpoint(tmp_path / "c.npz", presets.lenet(0))
    assert load_checkpoint(tmp_path / "c.npz", "torch", dtype=torch.float64).model.dtype == "float64"
    assert load_checkpoint(tmp_path / "c.npz", dtype=np.float64).model.dtype == "float64"
    for wrong in ("bogus", "int8", "float16"):
        with pytest.raises(ValueError, match=f"unsupported dtype '{wrong}'; expected one of float32, float64"):
            load_checkpoint(tmp_path / "c.npz", dtype=wrong)


def json_paths(value, prefix=()):
    """Every path into a JSON document, outermost first."""
    yield prefix
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        yield from json_paths(child, (*prefix, key))


def replaced(document, path, value):
    document = json.loads(json.dumps(document))
    if not path:
        return value
    holder = document
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = value
    return document


def test_every_field_of_wrong_type_or_range_is_a_checkpoint_error(tmp_path):
    """Each field of a real checkpoint's metadata (its recorded callback and the images it
    trained on included) replaced by each kind of wrong value: reading what evaluate and
    predict read, and resuming, end in CheckpointError (naming the file) or in a usable run."""
    path = tmp_path / "run.npz"
    path.write_bytes(small_checkpoint(tmp_path))
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    meta = json.loads(arrays["__meta__"].tobytes())
    wrong = [None, [], {}, "x", -1, 1e30, True, [1, 2]]
    scored = {"accuracy": 0.5, "loss": 1.0, "classes": [], "macro": {}, "confusion": np.zeros((10, 10), np.int64)}
    bad = tmp_path / "bad.npz"
    for field in list(json_paths(meta))[1:]:
        for value in wrong:
            arrays["__meta__"] = np.frombuffer(json.dumps(replaced(meta, field, value)).encode(), np.uint8)
            np.savez(bad, **arrays)
            try:
                load_checkpoint(bad).selection()  # what `xpcnn evaluate` reads
                load_checkpoint(bad).data_statistics()
                trainer = xpcnn.Trainer.resume(bad, progress=False, log=lambda m: None)
                trainer.describe()
                trainer.summary(scored, small_dataset())
            except CheckpointError as error:
                assert str(error).startswith(f"{bad}: "), (field, value, error)


@pytest.mark.parametrize("member", ["param/0.weight", "__meta__"])
def test_a_member_that_is_not_an_npy_file_is_a_checkpoint_error(saved, tmp_path, member):
    """Found by atheris: a member named like a declared array but without ".npy"."""
    with zipfile.ZipFile(saved) as source, zipfile.ZipFile(tmp_path / "odd.npz", "w") as copy:
        for info in source.infolist():
            name = member if info.filename == f"{member}.npy" else info.filename
            copy.writestr(name, source.read(info.filename))
    with pytest.raises(CheckpointError, match=f"member '{member}' is not an .npy array"):
        load_checkpoint(tmp_path / "odd.npz")


def test_a_member_flagged_encrypted_is_a_checkpoint_error(saved, tmp_path):
    """Found by atheris: zipfile raises RuntimeError for a member flagged as encrypted."""
    data = bytearray(saved.read_bytes())
    name = b"param/0.weight.npy"
    start = 0
    while (start := data.find(b"PK\x01\x02", start + 1)) != -1:  # central directory entries
        length = int.from_bytes(data[start + 28:start + 30], "little")
        if data[start + 46:start + 46 + length] == name:
            data[start + 8] |= 0x1  # general purpose flag bit 0: encrypted
    (tmp_path / "locked.npz").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="param/0.weight.*encrypted"):
        load_checkpoint(tmp_path / "locked.npz")


@pytest.mark.parametrize("classes, kernel, message", [
    (["a", "b"], 3, r"disagree: the network's output is \(10,\) for each image, but there are 2 classes"),
    (list("0123456789"), 100, r"disagree: the network does not take 1x28x28 images: layer"),
])
def test_a_model_that_cannot_classify_its_data_is_named_when_used(tmp_path, classes, kernel, message):
    path = tmp_path / "run.npz"
    net = presets.tutorial(0)
    trainer = xpcnn.Trainer(net, SGD(net, 0.1), progress=False, log=lambda m: None)
    trainer.data = {"name": "mnist", "mean": 0.13, "std": 0.31, "classes": classes, "source": "test"}
    save_checkpoint(path, net, trainer.optimizer, record.to_checkpoint(trainer))

    def with_kernel(meta):  # a first convolution of `kernel` x `kernel`, its weight to match
        meta["architecture"][0]["config"]["kernel_size"] = [kernel, kernel]
        meta["arrays"]["param/0.weight"]["shape"] = [8, 1, kernel, kernel]

    weight = np.zeros((8, 1, kernel, kernel), np.float32)
    bad = rewrite(path, tmp_path / "bad.npz", meta=with_kernel, replace={"param/0.weight": weight})
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(bad).data_statistics()


def test_a_residual_network_saves_loads_and_resumes_its_counters(tmp_path):
    from ..test_model import residual_net

    net = residual_net(dropout=True).to("numpy", dtype="float64")
    optimizer = SGD(net, 0.1, momentum=0.9, nesterov=True)
    for _ in range(2):
        loss = xpcnn.SoftmaxCrossEntropy()
        loss.forward(net.forward(np.random.default_rng(0).standard_normal((4, 3, 8, 8))), np.arange(4))
        net.backward(loss.backward())
        optimizer.step()
    save_checkpoint(tmp_path / "r.npz", net, optimizer)
    loaded = load_checkpoint(tmp_path / "r.npz")
    assert loaded.model.config() == net.config()
    for name, value in net.state_dict().items():
        np.testing.assert_array_equal(loaded.model.state_dict()[name], value, err_msg=name)
    assert loaded.model[3].extra_state() == {"body.1.num_batches_tracked": 2, "body.3.calls": 2,
                                             "body.4.body.1.num_batches_tracked": 2}
    restored = loaded.restore_optimizer()
    assert set(restored.state["momentum"]) == set(net.params) and restored.nesterov


def rezip(path, out, change):
    """Copy the archive `path` to `out`, its (name, bytes) members as `change` returns them."""
    with zipfile.ZipFile(path) as source:
        members = [(info.filename, source.read(info)) for info in source.infolist()]
    with zipfile.ZipFile(out, "w") as copy:
        for name, data in change(members):
            copy.writestr(name, data)
    return out


@pytest.mark.parametrize("member", ["__meta__", "param/0.weight"])
def test_a_member_without_the_npy_magic_is_a_checkpoint_error(saved, tmp_path, member):
    """Found by atheris: np.load returns the raw bytes of a .npy member that lacks NumPy's header."""
    raw = rezip(saved, tmp_path / "raw.npz", lambda members: [
        (name, b"not numpy" + data[6:] if name == f"{member}.npy" else data) for name, data in members])
    with pytest.raises(CheckpointError, match=f"cannot read the header of {member}: .*magic string"):
        load_checkpoint(raw)


def test_a_meta_header_too_long_to_parse_safely_is_named_on_one_line(saved, tmp_path):
    long = rezip(saved, tmp_path / "long.npz", lambda members: [
        (name, b"\x93NUMPY\x01\x00" + (60000).to_bytes(2, "little") + b"{" * 60000 if name == "__meta__.npy" else data)
        for name, data in members])
    with pytest.raises(CheckpointError, match="cannot read the header of __meta__: ValueError: Header info") as error:
        load_checkpoint(long)
    assert "\n" not in str(error.value)


def npy_header(shape, descr):
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


@pytest.mark.parametrize("length", [2**40, 2**24 + 5])
def test_a_meta_header_asking_for_more_than_its_data_is_refused_before_allocating(saved, tmp_path, length):
    meta = np.load(saved)["__meta__"].tobytes()
    lying = rezip(saved, tmp_path / "lying.npz", lambda members: [
        (name, npy_header((length,), "|u1") + meta if name == "__meta__.npy" else data) for name, data in members])

    def load():
        with pytest.raises(CheckpointError, match=r"__meta__ must be a 1-D uint8 array of at most 16,777,216 bytes "
                                                  rf"and nothing else, got \({length},\) uint8 with"):
            load_checkpoint(lying)

    assert peak_bytes(load) < 20 << 20


@pytest.mark.parametrize("member", ["__meta__.npy", "param/0.bias.npy"])
def test_bytes_after_a_member_s_data_are_refused(saved, tmp_path, member):
    """Ignored, they hid from the zip's CRC check, which comes at a member's end."""
    padded = rezip(saved, tmp_path / "padded.npz", lambda members: [
        (name, data + b"x" * 1000 if name == member else data) for name, data in members])
    with pytest.raises(CheckpointError, match=f"{member[:-4]} (must be|holds)"):
        load_checkpoint(padded)


def test_a_member_stored_twice_is_refused(saved, tmp_path):
    """zipfile reads the last copy of a name, other readers the first: the file is ambiguous."""
    seven = io.BytesIO()
    np.save(seven, np.full((8,), 7.0, np.float32))
    with pytest.warns(UserWarning, match="Duplicate name"):  # zipfile's, as it writes the copy
        twice = rezip(saved, tmp_path / "twice.npz", lambda members: [*members, ("param/0.bias.npy", seven.getvalue())])
    with pytest.raises(CheckpointError, match=r"twice.npz: member 'param/0.bias.npy' is stored more than once"):
        load_checkpoint(twice)


def test_a_model_with_nan_or_inf_is_not_written(tmp_path):
    """load_checkpoint refuses such a file: it is never made."""
    from xpcnn.io.checkpoint import NotFinite

    model = presets.build("tutorial")
    (tmp_path / "model.npz").write_bytes(b"the old one")
    model.layers[0].params["weight"][0, 0, 0, 0] = np.nan
    with pytest.raises(NotFinite, match=r"model.npz: not written: param/0.weight holds NaN or Inf") as info:
        save_checkpoint(tmp_path / "model.npz", model)
    assert info.value.key == "param/0.weight" and (tmp_path / "model.npz").read_bytes() == b"the old one"


def test_an_optimizer_of_another_network_is_not_saved_as_this_ones(tmp_path):
    # it was written: its moments (zeros, or another network's) saved as this network's, resumed as such
    model, other = presets.build("tutorial"), presets.build("tutorial", seed=1)
    trained_step(other, ("numpy", None))
    with pytest.raises(ValueError, match="save_checkpoint optimizer must be the model's: it was built for another"):
        save_checkpoint(tmp_path / "model.npz", model, Adam(other, 1e-3))
    assert not (tmp_path / "model.npz").exists()


def test_a_folder_is_read_as_a_run_folder_or_named_for_what_it_is(tmp_path):
    with pytest.raises(CheckpointError, match=r"run: a folder without checkpoint.npz \(a run folder holds one\)"):
        load_checkpoint((tmp_path / "run").mkdir() or tmp_path / "run")
    (tmp_path / "run" / "checkpoint.npz").mkdir()
    with pytest.raises(CheckpointError, match=r"run/checkpoint.npz: a folder, not a checkpoint file$"):
        load_checkpoint(tmp_path / "run" / "checkpoint.npz")
    with pytest.raises(CheckpointError, match=r"run/checkpoint.npz: not a checkpoint file \(a folder\)"):
        load_checkpoint(tmp_path / "run")  # a checkpoint.npz is there, but what it is is named
    os.mkfifo(tmp_path / "fifo.npz")
    with pytest.raises(CheckpointError, match=r"fifo.npz: not a checkpoint file \(a special file\)"):
        load_checkpoint(tmp_path / "fifo.npz")
    os.symlink(tmp_path / "loop.npz", tmp_path / "loop.npz")
    with pytest.raises(CheckpointError, match=r"loop.npz: is a link to nothing \(its target is missing, or the links "):
        load_checkpoint(tmp_path / "loop.npz")
    with pytest.raises(FileNotFoundError, match=r"none.npz: no such checkpoint file"):
        load_checkpoint(tmp_path / "none.npz")
    if os.path.isfile("/proc/self/mem"):  # Linux: a file whose reading at 0 fails
        with pytest.raises(CheckpointError, match=r"^/proc/self/mem: cannot read it: "):
            load_checkpoint("/proc/self/mem")


def test_a_0_d_buffer_stored_in_another_shape_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(xpcnn.model, "BUILDABLE", dict(xpcnn.model.BUILDABLE))

    @xpcnn.register_layer
    class Shift(xpcnn.Layer):  # a scalar buffer: shape (), which is falsy
        buffer_names = ("shift",)

        def __init__(self):
            super().__init__()
            self.buffers = {"shift": xpcnn.init.zeros(())}

        @classmethod
        def array_shapes(cls, arguments):
            return {"shift": ()}

        def forward(self, x, training=True):
            return x + self.buffers["shift"]

    save_checkpoint(tmp_path / "good.npz", xpcnn.Sequential([xpcnn.Flatten(), xpcnn.Dense(4, 2), Shift()]))

    def grow(info):
        info["arrays"]["buffer/2.shift"]["shape"] = [3]

    with pytest.raises(CheckpointError, match=r"buffer/2.shift: shape \(3,\), architecture needs \(\)"):
        load_checkpoint(rewrite(tmp_path / "good.npz", tmp_path / "grown.npz", meta=grow,
                                replace={"buffer/2.shift": np.zeros(3, np.float32)}))


def test_a_network_or_optimizer_no_load_could_rebuild_is_refused_before_writing(tmp_path):
    class Gain(xpcnn.layers.Layer):  # a layer of one's own, not registered
        def forward(self, x, training=True):
            return x

        def backward(self, dy):
            return dy

    class MySGD(SGD):
        pass

    net = xpcnn.Sequential([Gain(), xpcnn.Flatten(), xpcnn.Dense(4, 2)])
    with pytest.raises(ArchitectureError, match=r"layer 0 \(.*Gain\): no layer of this class is registered"):
        save_checkpoint(tmp_path / "gain.npz", net)
    net = xpcnn.Sequential([xpcnn.Flatten(), xpcnn.Dense(4, 2)])
    with pytest.raises(ValueError, match="the optimizer MySGD is none a checkpoint can rebuild"):
        save_checkpoint(tmp_path / "mine.npz", net, MySGD(net, 0.1))
    assert not list(tmp_path.iterdir())


def test_the_weights_an_epoch_began_with_are_kept_beside_the_network_and_checked(tmp_path):
    """A checkpoint saved partway through an epoch holds the weights it began with
    ("start/<name>", xpcnn.train.layer_stats), each of its parameter's shape."""
    net = presets.tutorial(0)
    began = np.asarray(net.params["0.weight"]) * 2
    path = tmp_path / "run.npz"
    save_checkpoint(path, net, start={"0.weight": began})
    loaded = load_checkpoint(path)
    assert set(loaded.start_arrays) == {"0.weight"} and np.array_equal(loaded.start_arrays["0.weight"], began)
    assert np.array_equal(loaded.model.params["0.weight"], net.params["0.weight"])  # not the network's own

    def declare(name, shape):
        return lambda meta: meta["arrays"].update({name: {"shape": list(shape), "dtype": "float32"}})

    wrong = rewrite(path, tmp_path / "wrong.npz", meta=declare("start/0.weight", [1]),
                    replace={"start/0.weight": np.zeros(1, np.float32)})
    with pytest.raises(CheckpointError, match=r"start/0.weight: shape \(1,\), architecture needs \(8, 1, 3, 3\)"):
        load_checkpoint(wrong)
    unknown = rewrite(path, tmp_path / "unknown.npz", meta=declare("start/9.weight", [1]),
                      replace={"start/9.weight": np.zeros(1, np.float32)})
    with pytest.raises(CheckpointError, match=r"unexpected start/9.weight"):
        load_checkpoint(unknown)


def test_the_weights_an_epoch_began_with_are_saved_as_their_parameters_or_refused(tmp_path):
    net = presets.tutorial(0)  # float32
    path = tmp_path / "run.npz"
    save_checkpoint(path, net, start={"0.weight": np.asarray(net.params["0.weight"], np.float64)})
    assert load_checkpoint(path).start_arrays["0.weight"].dtype == np.float32  # one dtype: the file loads
    with pytest.raises(ValueError, match=r"save_checkpoint start: '9.weight' is no parameter of the network"):
        save_checkpoint(tmp_path / "other.npz", net, start={"9.weight": np.zeros(3)})
    with pytest.raises(ValueError, match=r"save_checkpoint start: '0.weight' is \(3,\), not \(8, 1, 3, 3\)"):
        save_checkpoint(tmp_path / "other.npz", net, start={"0.weight": np.zeros(3)})
    assert not (tmp_path / "other.npz").exists()
