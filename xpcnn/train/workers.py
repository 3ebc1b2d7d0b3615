"""Sharing every batch: worker threads of one process, and the checks that the processes
of an MPI job make before they train together.

Worker threads (Trainer's `workers` > 1) each train a replica of the model on their share
of every batch (see xpcnn.distributed). The replicas share the parameters and the
optimizer state and each worker updates its part of them
(distributed.Threads.update_together), so after such a fit `model.grads` holds the first
worker's share of the last batch's gradient, not the whole. This uses the cores that
NumPy's one-threaded element-wise work leaves idle; BLAS gets the cores shared out among
the workers. The run learns what one model on whole batches learns, to float rounding
(the shares are summed in another order). While hooks are attached the trainer trains
alone, so that they see whole batches. On glibc, machine.keep_freed_memory() (which
`xpcnn train` calls) saves the page faults of memory handed back to the OS after every
step, which worker threads otherwise pay at nearly every step.
"""

from __future__ import annotations

import copy
import hashlib
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import backend, distributed
from ..datasets import Dataset
from ..diagnostics import machine
from ..extras import install_hint
from ..presets import SettingsError
from .record import settings
from .stops import STOPS

if TYPE_CHECKING:
    from .trainer import Trainer


def quiet(message: str) -> None:
    """The log of the processes and threads that leave reporting to the first."""


def choose_workers(trainer: Trainer, train: Dataset) -> int:
    """The worker threads for training on `train`, kept in `trainer.workers`: those given,
    or (None) the default for this model, batch and machine (machine.default_workers); at
    most the smallest batch, and 1 under MPI."""
    if trainer.workers is None:
        step = trainer.model.training_flops(train.input_shape) * min(trainer.batch_size, len(train))
        trainer.workers = machine.default_workers(trainer.model.backend, step)
    elif trainer.workers > 1 and trainer.comm.size > 1 and not trainer.continues_run:  # a resume's are the run's
        trainer.log(f"note: {trainer.workers} worker threads become 1 under {trainer.comm.size} processes: each "
                    "process trains alone (start more processes instead)")
    # Every worker needs a row of every batch, the last (smaller) one included.
    smallest = max(1, smallest_batch(trainer.batch_size, len(train)))
    trainer.workers = 1 if trainer.comm.size > 1 else min(trainer.workers, smallest)
    return trainer.workers


def smallest_batch(batch_size: int, size: int) -> int:
    """The fewest images a batch of an epoch over `size` images has."""
    return min(batch_size, size % batch_size or batch_size, size)


def check_shards(trainer: Trainer, size: int) -> None:
    """In data-parallel training every process needs a row of every batch."""
    processes, smallest = trainer.comm.size, smallest_batch(trainer.batch_size, size)
    if processes > 1 and smallest < processes:
        raise SettingsError("batch_size", f"{trainer.batch_size} over {size} images makes batches of as few as "
                            f"{smallest} images, but each of the {processes} processes needs one: use at most "
                            f"{smallest} processes for this run")


def run_facts(trainer: Trainer, train: Dataset) -> dict[str, Any]:
    """What must be the same in every process of a data-parallel run: the settings (where
    the data was read may differ between machines; its content may not), the progress,
    the training images and labels, and the network's weights (a digest: each process
    applies the same summed gradients to its own copy)."""
    saved = settings(trainer)
    saved["data"] = {key: value for key, value in (saved["data"] or {}).items() if key != "folders"}
    return {**saved, "progress": (trainer.state.epoch, trainer.state.batch, trainer.optimizer.steps),
            "images": len(train), "content": trainer.data_digest, "weights": weights_digest(trainer.model)}


def weights_digest(model: Any) -> str:
    """sha256 of the model's state_dict (parameters, buffers and counters, on the host)."""
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def note_useless_workers(trainer: Trainer) -> None:
    """Say so where worker threads will not make the training faster."""
    workers, log = trainer.workers, trainer.log
    if not backend.elementwise_on_one_thread(trainer.model.backend):
        log(f"note: {workers} worker threads on {trainer.model.backend}, whose operations use every core already: "
            "expect no gain")
    elif not machine.can_limit_blas():
        log(f"note: {workers} worker threads without threadpoolctl, which limits each one's BLAS threads: they will "
            f"slow each other down ({install_hint('threads')})")
    elif workers > machine.usable_cores():
        log(f"note: {workers} worker threads on {machine.usable_cores()} usable cores: the threads beyond one a core "
            "only take turns (each adds its own work and waits)")


def fit_in_threads(trainer: Trainer, train: Dataset, epochs: int, val: Dataset | None) -> None:
    """Train as `trainer.workers` threads, each with a replica of the model and its share of
    every batch, `trainer` the first; BLAS gets the cores shared out among them."""
    members = distributed.Threads.group(trainer.workers)
    trainer.optimizer.make_state()  # shared from now on: made ready before the threads run
    helpers = [_replica(trainer, member) for member in members[1:]]
    errors: list[BaseException] = []

    def work(helper: Trainer) -> None:
        try:  # a failure has told the others already (failing_alone_ends_all)
            helper.run_epochs(train, epochs, val)
        except BaseException as exc:  # noqa: BLE001  (raised by the first thread below)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(helper,), name=f"xpcnn worker {helper.comm.rank}")
               for helper in helpers]
    alone, trainer.comm = trainer.comm, members[0]
    try:
        with machine.blas_threads(max(1, machine.usable_cores() // trainer.workers)):
            _run_beside(trainer, threads, train, epochs, val)
    except threading.BrokenBarrierError:
        if _first_real(errors) is None:
            raise  # else what broke the barrier, a worker's failure, is raised below
    finally:
        trainer.comm = alone
    failure = _first_real(errors)  # also a worker that failed after its last meeting with the others
    if failure is not None:
        raise failure from None


def _run_beside(trainer: Trainer, threads: list[threading.Thread], train: Dataset, epochs: int,
                val: Dataset | None) -> None:
    """The first worker's share of the training, with the others' threads beside it."""
    try:
        for thread in threads:
            thread.start()
        trainer.run_epochs(train, epochs, val)
    except STOPS:
        raise  # the workers stop at the same step
    except BaseException as exc:
        trainer.comm.fail(exc)  # releases workers waiting for this one (a failed start, too)
        raise
    finally:
        for thread in threads:
            if thread.ident is not None:
                thread.join()


def _replica(trainer: Trainer, comm: distributed.Communicator) -> Trainer:
    """A quiet trainer with copies of `trainer`'s model, optimizer and progress that share
    its parameters and optimizer state (see distributed.Threads), and no callbacks."""
    shared = {id(layer.params): layer.params for _, layer in trainer.model.named_layers()}
    shared[id(trainer.optimizer.state)] = trainer.optimizer.state
    model, optimizer = copy.deepcopy((trainer.model, trainer.optimizer), shared)  # the optimizer keeps the copied model
    replica = type(trainer)(model, optimizer, batch_size=trainer.batch_size, seed=trainer.seed,
                            augment=trainer.augment, progress=False, log=quiet, anomaly=trainer.anomaly, comm=comm,
                            label_smoothing=trainer.label_smoothing)
    replica.epochs, replica.state = trainer.epochs, copy.deepcopy(trainer.state)
    replica.loss_fn = copy.deepcopy(trainer.loss_fn)  # the trainer's, a loss of one's own too
    return replica


def _first_real(errors: list[BaseException]) -> BaseException | None:
    """The error a worker failed with, not the broken barrier other workers then met."""
    return next((error for error in errors if not isinstance(error, threading.BrokenBarrierError)), None)
