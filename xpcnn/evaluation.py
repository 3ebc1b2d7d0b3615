"""Using a trained network: test loss and accuracy, class probabilities; and the same
for a saved model (what `xpcnn evaluate` and `xpcnn predict` run). The confusion matrix
and the count of right answers are in xpcnn.metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from . import backend, distributed
from .datasets import Dataset, batches, load_bundled, load_dataset, normalize
from .datasets.images import ImageError, read_image
from .io.checkpoint import load_checkpoint
from .losses import SoftmaxCrossEntropy
from .model import Sequential


def evaluate(model: Sequential, dataset: Dataset, batch_size: int = 1000,
             comm: distributed.Communicator | None = None) -> dict[str, Any]:
    """Mean loss, accuracy and host predictions over `dataset`, in evaluation mode. With
    `comm`, each process evaluates its slice of the dataset and all get the whole result."""
    comm = comm or distributed.Single()
    start, stop = distributed.shard_bounds(len(dataset), comm.rank, comm.size)
    loss_fn = SoftmaxCrossEntropy(check_labels=False)  # Dataset checked the labels on the host
    total_loss, predictions = 0.0, []
    for x, y in batches(
        dataset.subset(np.arange(start, stop)) if comm.size > 1 else dataset, batch_size, shuffle=False,
        backend_name=model.backend, device=model.device, dtype=model.dtype,
    ):
        logits = model.forward(x, training=False)
        with backend.on_device(logits):
            total_loss += float(loss_fn.forward(logits, y)) * int(y.shape[0])
            predictions.append(backend.to_numpy(array_namespace(logits).argmax(logits, axis=1)))
    (total_loss,) = comm.sum_numbers(total_loss)
    parts = comm.gather(np.concatenate(predictions) if predictions else np.zeros(0, np.int64))
    predicted = np.concatenate(parts)
    count = max(len(dataset), 1)
    accuracy = float(np.mean(predicted == dataset.labels)) if len(dataset) else 0.0
    return {"loss": total_loss / count, "accuracy": accuracy, "predictions": predicted}


def predict(model: Sequential, images: np.ndarray, mean: float, std: float, batch_size: int = 1000) -> np.ndarray:
    """Class probabilities (n, K) on the host for uint8 images (n, H, W) or (H, W)."""
    images = np.asarray(images)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"predict expects uint8 images (n, H, W), got {images.shape} {images.dtype}")
    outputs = []
    for start in range(0, images.shape[0], batch_size):
        chunk = normalize(images[start : start + batch_size], mean, std)
        x = backend.to_backend(chunk, model.backend, model.device, model.dtype)
        logits = backend.to_numpy(model.forward(x, training=False)).astype(np.float64)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        outputs.append(shifted / shifted.sum(axis=1, keepdims=True))
    return np.concatenate(outputs)


def evaluate_checkpoint(path: str | Path, dataset: str | None = None, data_dir: str | Path | None = None, *,
                        download: bool = True, backend_name: str = "numpy", device: Any = None, batch_size: int = 1000,
                        log: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Test loss and accuracy of a saved model on the test split of `dataset` (default: the
    one it was trained on), as `xpcnn evaluate` prints them: {"accuracy", "loss", "images",
    "data"}, "data" saying where the images came from. `log` is told when the model was
    trained on another dataset."""
    checkpoint = load_checkpoint(path, backend_name, device)
    trained_on, selection = checkpoint.data_statistics()["name"], checkpoint.selection()
    if dataset is not None and trained_on != dataset:
        log(f"note: the model was trained on {trained_on}, evaluating on {dataset}")
    if data_dir is None and dataset is None and selection is not None and selection.folders is None:
        loaded = load_bundled()  # the test split of what it was trained on
        log(f"evaluating on the {loaded.source}, as the model was trained on it")
    else:  # only the test split is needed; never the bundled subset in place of what was asked
        prefer = (selection.folders or ()) if selection and dataset in (None, trained_on) else ()
        gone = [folder for folder in prefer if not Path(folder).is_dir()]
        if gone and data_dir is None:
            log(f"note: the model's data is gone from {', '.join(gone)}; looking for {trained_on} elsewhere "
                "(--data-dir names where it is now)")
        dataset = dataset or trained_on
        loaded = load_dataset(dataset, data_dir, download=download, allow_bundled=False, log=log, parts=("test",),
                              prefer=prefer)
    result = evaluate(checkpoint.model, loaded.test, batch_size)
    return {"accuracy": result["accuracy"], "loss": result["loss"], "images": len(loaded.test), "data": loaded.source}


@dataclass
class Classified:
    """What a saved model makes of one image file: its `top` classes with their
    probabilities, most likely first; or why the file could not be read."""

    image: Path
    classes: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None


def classify_files(path: str | Path, images: Sequence[str | Path], *, invert: bool | None = None, top: int = 1,
                   backend_name: str = "numpy", device: Any = None) -> list[Classified]:
    """Each image file (a picture or .npy, see xpcnn.datasets.images.read_image) classified by the
    saved model; a file that cannot be read gets its error, and the others still run."""
    checkpoint = load_checkpoint(path, backend_name, device)
    data = checkpoint.data_statistics()
    results, pixels = [], []
    for image in images:
        results.append(Classified(Path(image)))
        try:
            pixels.append(read_image(image, invert=invert))
        except ImageError as exc:
            results[-1].error = str(exc)
    readable = [result for result in results if result.error is None]
    if readable:
        probabilities = predict(checkpoint.model, np.stack(pixels), data["mean"], data["std"])
        for result, row in zip(readable, probabilities):
            result.classes = [(data["classes"][k], float(row[k])) for k in np.argsort(row)[::-1][:top]]
    return results
