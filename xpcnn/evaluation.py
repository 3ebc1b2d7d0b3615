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
from .datasets import DATASETS, Dataset, batches, load_bundled, load_dataset, normalize
from .datasets.images import ImageError, read_image
from .io.checkpoint import load_checkpoint
from .layers.base import integer, number
from .losses import SoftmaxCrossEntropy
from .metrics import confusion_matrix, per_class
from .model import Sequential


def check_model_fits(model: Sequential, dataset: Dataset, what: str = "the data") -> None:
    """That `model` can classify `dataset`: a Dataset with images, which the network takes,
    ending in one output per class. TypeError or ValueError saying what does not fit."""
    if not isinstance(dataset, Dataset):
        raise TypeError(f"{what} must be a Dataset (xpcnn.datasets.Dataset), got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise ValueError(f"{what} ({dataset.spec.name}) holds no images")
    outputs, classes = model.output_shapes((1, 1, *dataset.images.shape[1:]))[-1], len(dataset.spec.classes)
    if outputs != (1, classes):
        raise ValueError(f"the network's output is {outputs[1:]} for each image, but {what} ({dataset.spec.name}) "
                         f"has {classes} classes: its last layer needs {classes} outputs")


def evaluate(model: Sequential, dataset: Dataset, batch_size: int = 1000,
             comm: distributed.Communicator | None = None) -> dict[str, Any]:
    """Over `dataset`, in evaluation mode: {"loss" (the mean), "accuracy", "predictions"
    (host class indices), "classes" and "macro" (each class's precision, recall, F1 and
    support, and their means: metrics.per_class)}. With `comm`, each process evaluates its
    slice of the dataset and all get the whole result."""
    check_model_fits(model, dataset)
    batch_size = integer(batch_size, "batch_size", 1)
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
    counts = confusion_matrix(dataset.labels, predicted, len(dataset.spec.classes))
    return {"loss": total_loss / len(dataset), "accuracy": float(np.mean(predicted == dataset.labels)),
            "predictions": predicted, **per_class(counts, list(dataset.spec.classes))}


def predict(model: Sequential | str | Path, images: np.ndarray, mean: float | None = None, std: float | None = None,
            batch_size: int = 1000) -> np.ndarray:
    """Class probabilities (n, K) on the host for uint8 images (n, H, W) or (H, W).
    `model` is a network or a checkpoint (a file or a run folder); the images are
    normalised as its training data was (`model.data`, which Trainer.fit and
    load_checkpoint set) unless `mean` and `std` are given."""
    if isinstance(model, (str, Path)):
        model = load_checkpoint(model).model
    if not isinstance(model, Sequential):
        raise TypeError(f"predict takes a Sequential or a checkpoint's path, got {type(model).__name__}")
    known = model.data or {}
    mean, std = known.get("mean") if mean is None else mean, known.get("std") if std is None else std
    if mean is None or std is None:
        raise ValueError("predict needs the mean and std of the images the network was trained on: pass mean= and "
                         "std=, or a network that knows its data (model.data; Trainer.fit and load_checkpoint set it)")
    mean, std = number(mean, "predict mean", -1e6, 1e6), number(std, "predict std", 1e-12, 1e6)
    batch_size = integer(batch_size, "batch_size", 1)
    images = np.asarray(images)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3 or images.dtype != np.uint8:
        raise TypeError(f"predict expects uint8 images (n, H, W), got {images.shape} {images.dtype}")
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
                        full_test_set: bool = False, log: Callable[[str], None] = lambda message: None
                        ) -> dict[str, Any]:
    """Test loss and accuracy of a saved model (a checkpoint, or a run folder), as `xpcnn
    evaluate` prints them, on the test split of `dataset` (default: the one it was trained
    on, and then the test images its run scored: a --limit run's sample, unless
    `full_test_set`): {"accuracy", "loss", "images", "data", "classes", "macro"}, "data"
    saying where the images came from, "classes" each class's precision, recall, F1 and
    support (metrics.per_class). ValueError when the data's classes are not the model's."""
    checkpoint = load_checkpoint(path, backend_name, device)
    trained = checkpoint.data_statistics()
    scored = DATASETS.get(dataset or trained["name"])
    if scored is not None and list(scored.classes) != list(trained["classes"]):  # refused before any file is read
        raise ValueError(f"the model classifies {len(trained['classes'])} classes of {trained['name']} "
                         f"({', '.join(trained['classes'][:4])}...), but {scored.name} has "
                         f"{len(scored.classes)} ({', '.join(scored.classes[:4])}...): it cannot be scored on them")
    test, source = _test_split(checkpoint, dataset, data_dir, download, full_test_set, log)
    result = evaluate(checkpoint.model, test, batch_size)
    return {"accuracy": result["accuracy"], "loss": result["loss"], "images": len(test), "data": source,
            "classes": result["classes"], "macro": result["macro"]}


def _test_split(checkpoint: Any, dataset: str | None, data_dir: str | Path | None, download: bool, full: bool,
                log: Callable[[str], None]) -> tuple[Dataset, str]:
    """The test images to score a checkpoint on, and one line saying which."""
    trained_on, selection = checkpoint.data_statistics()["name"], checkpoint.selection()
    if dataset is not None and trained_on != dataset:
        log(f"note: the model was trained on {trained_on}, evaluating on {dataset}")
    same = dataset in (None, trained_on)
    if data_dir is None and dataset is None and selection is not None and selection.folders is None:
        loaded = load_bundled()  # the test split of what it was trained on
    else:  # only the test split is needed; never the bundled subset in place of what was asked
        prefer = (selection.folders or ()) if selection and same else ()
        gone = [folder for folder in prefer if not Path(folder).is_dir()]
        if gone and data_dir is None:
            log(f"note: the model's data is gone from {', '.join(gone)}; looking for {trained_on} elsewhere "
                "(--data-dir names where it is now)")
        loaded = load_dataset(dataset or trained_on, data_dir, download=download, allow_bundled=False, log=log,
                              parts=("test",), prefer=prefer)
    test, source = loaded.test, loaded.source
    if same and data_dir is None and selection is not None and selection.limit is not None and not full:
        test = test.sample(selection.limit, selection.seed + 1)  # as Loaded.splits drew the run's
        source += f"; the {len(test):,} of its {len(loaded.test):,} test images that the run scored (its --limit)"
    return test, source


@dataclass
class Classified:
    """What a saved model makes of one image file: its `top` classes with their
    probabilities, most likely first; or why the file could not be read."""

    image: Path
    classes: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: {"image", "classes": [{"class", "probability"}...]} or {"image", "error"}."""
        if self.error is not None:
            return {"image": str(self.image), "error": self.error}
        return {"image": str(self.image),
                "classes": [{"class": name, "probability": share} for name, share in self.classes]}


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
