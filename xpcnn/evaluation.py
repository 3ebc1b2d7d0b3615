"""Using a trained network: test loss and accuracy, class probabilities; and the same
for a saved model (what `xpcnn evaluate` and `xpcnn predict` run). The confusion matrix
and the count of right answers are in xpcnn.metrics."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from . import backend, distributed
from .checks import integer, optional_flag
from .datasets import (
    DATASETS,
    Dataset,
    Loaded,
    Selection,
    batches,
    load_bundled,
    load_dataset,
    load_images,
    normalize,
)
from .datasets.dataset import MAX_STATISTIC, per_channel
from .datasets.folder import FolderError
from .datasets.images import ImageError, read_for_model
from .datasets.loading import FOLDER, DataNotFound
from .datasets.sources import escaped
from .io.checkpoint import load_checkpoint
from .losses import SoftmaxCrossEntropy
from .metrics import confusion_matrix, per_class
from .model import Sequential
from .presets import SettingsError


def check_model_fits(model: Sequential, dataset: Dataset, what: str = "the data") -> None:
    """That `model` can classify `dataset`: a Dataset with images, which the network takes,
    ending in one output per class. TypeError or ValueError saying what does not fit."""
    if not isinstance(dataset, Dataset):
        raise TypeError(f"{what} must be a Dataset (xpcnn.datasets.Dataset), got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise ValueError(f"{what} ({dataset.spec.name}) holds no images")
    why = model.classifying_misfit(dataset.input_shape, len(dataset.spec.classes))
    if why:
        raise ValueError(f"{what} ({dataset.spec.name}): {why}")


class NotFiniteOutputs(ValueError):
    """A network computed NaN or Inf for an input (its weights or statistics are broken);
    `where` names the input ("on the test set", "for image 3"), `image` the index of the
    first such input, where one is named."""

    def __init__(self, where: str, image: int | None = None) -> None:
        super().__init__(f"the network's outputs are not finite (NaN or Inf) {where}: its weights or batch "
                         "norm statistics make values overflow (xpcnn.diagnostics.anomaly.AnomalyHook names the first "
                         "layer)")
        self.image = image


def check_same_data(known: dict[str, Any] | None, dataset: Dataset, what: str = "the data") -> None:
    """That `dataset` is data of the kind described by `known` (Dataset.statistics: what a
    network was trained on, model.data; nothing is checked where it is None): the same
    classes, image shape and normalisation. ValueError saying what differs; a score on
    other data would be a wrong number, not an error."""
    mine = dataset.statistics()
    if not known:
        return
    if list(known["classes"]) != mine["classes"]:
        raise ValueError(f"the network classifies the {len(known['classes'])} classes of {known['name']} "
                         f"({_some(known['classes'])}), but {what} has the {len(mine['classes'])} of {mine['name']} "
                         f"({_some(mine['classes'])}) (a set of your own arrays takes the training set's classes "
                         "with Dataset.from_arrays(..., like=train), or like=model)")
    if list(known["input_shape"]) != mine["input_shape"]:
        raise ValueError(f"the network was trained on {'x'.join(map(str, known['input_shape']))} images, but the "
                         f"images of {what} are {'x'.join(map(str, mine['input_shape']))}")
    if not (np.allclose(known["mean"], mine["mean"], rtol=1e-6) and np.allclose(known["std"], mine["std"], rtol=1e-6)):
        raise ValueError(f"{what} is normalised with mean {_rounded(mine['mean'])}, std {_rounded(mine['std'])}, but "
                         f"the network was trained with mean {_rounded(known['mean'])}, std {_rounded(known['std'])}: "
                         "make its Dataset with the training set's statistics (Dataset.from_arrays(..., like=train), "
                         "or like=model)")


def _some(names: Sequence[str]) -> str:
    return ", ".join(names[:4]) + ("..." if len(names) > 4 else "")


def _rounded(values: Sequence[float]) -> list[float]:
    return [round(float(value), 4) for value in values]


def network_of(model: Sequential | str | Path, what: str) -> Sequential:
    """`model` itself, or the network saved at it (a checkpoint file or a run folder);
    TypeError for anything else, `what` naming the caller."""
    if isinstance(model, (str, Path)):
        model = load_checkpoint(model).model
    if not isinstance(model, Sequential):
        raise TypeError(f"{what} takes a Sequential or a checkpoint's path, got {type(model).__name__}")
    return model


def evaluate(model: Sequential | str | Path, dataset: Dataset, batch_size: int = 1000,
             comm: distributed.Communicator | None = None) -> dict[str, Any]:
    """Over `dataset`, in evaluation mode: {"loss" (the mean), "accuracy", "predictions"
    (host class indices), "confidences" (each prediction's probability), "confusion" (host
    counts[true, predicted]), "classes" and "macro" (each class's precision, recall, F1
    and support, and their means: metrics.per_class)}.
    `model` is a network or a checkpoint (a file or a run folder), as for predict.
    With `comm`, each process evaluates its slice of the dataset and all get the whole
    result. TypeError where `model` or `dataset` is neither; ValueError where the data does
    not fit the network, or differs from what it was trained on (check_same_data)."""
    model = network_of(model, "evaluate")
    if isinstance(dataset, Dataset):  # first against what it learned: a set of other classes is the set's fault
        check_same_data(model.data, dataset)
    check_model_fits(model, dataset)
    batch_size = integer(batch_size, "batch_size", 1)
    comm = comm or distributed.Single()
    start, stop = distributed.shard_bounds(len(dataset), comm.rank, comm.size)
    loss_fn = SoftmaxCrossEntropy(check_labels=False)  # Dataset checked the labels on the host
    total_loss, predictions, confidences = 0.0, [], []
    for x, y in batches(
        dataset.subset(np.arange(start, stop)) if comm.size > 1 else dataset, batch_size, shuffle=False,
        backend_name=model.backend, device=model.device, dtype=model.dtype,
    ):
        logits = model.forward(x, training=False)
        with backend.on_device(logits):
            total_loss += float(loss_fn.forward(logits, y)) * int(y.shape[0])
            xp = array_namespace(logits)
            predictions.append(backend.to_numpy(xp.argmax(logits, axis=1)))
            # the most likely class's probability, 1 / sum(exp(logits - max)): its exp is 1
            confidences.append(backend.to_numpy(1.0 / xp.sum(xp.exp(logits - xp.max(logits, axis=1, keepdims=True)),
                                                              axis=1)))
    (total_loss,) = comm.sum_numbers(total_loss)
    if not math.isfinite(total_loss):
        raise NotFiniteOutputs(f"on {dataset.spec.name}")
    predicted = np.concatenate(comm.gather(np.concatenate(predictions) if predictions else np.zeros(0, np.int64)))
    confidence = np.concatenate(comm.gather(np.concatenate(confidences) if confidences else np.zeros(0)))
    counts = confusion_matrix(dataset.labels, predicted, len(dataset.spec.classes))
    return {"loss": total_loss / len(dataset), "accuracy": float(np.mean(predicted == dataset.labels)),
            "predictions": predicted, "confidences": confidence.astype(np.float64), "confusion": counts,
            **per_class(counts, list(dataset.spec.classes))}


def predict(model: Sequential | str | Path, images: np.ndarray, mean: float | Sequence[float] | None = None,
            std: float | Sequence[float] | None = None, batch_size: int = 1000) -> np.ndarray:
    """Class probabilities (n, K) on the host for uint8 images (n, C, H, W), one image
    (C, H, W), or grey ones (n, H, W) or (H, W) (floating in [0, 1] too, rounded to the
    nearest of 256 levels as Dataset.from_arrays does). `model` is a network or a
    checkpoint (a file or a run folder); the images are normalised as its training data
    was (`model.data`, which Trainer.fit and load_checkpoint set) unless `mean` and `std`
    (a number for every channel, or one per channel) are given."""
    model, images, mean, std = prepared(model, images, mean, std, "predict")
    batch_size = integer(batch_size, "batch_size", 1)
    outputs = []
    for start in range(0, images.shape[0], batch_size):
        chunk = normalize(images[start : start + batch_size], mean, std, model.dtype)
        try:
            outputs.append(probabilities(model, chunk))
        except NotFiniteOutputs as exc:
            raise NotFiniteOutputs(f"for image {start + exc.image}", start + exc.image) from None
    return np.concatenate(outputs)


def prepared(model: Sequential | str | Path, images: np.ndarray, mean: float | Sequence[float] | None,
             std: float | Sequence[float] | None, what: str) -> tuple[Sequential, np.ndarray, tuple, tuple]:
    """The network (loaded where `model` is a path), `images` as a uint8 batch (n, C, H, W)
    it takes, and the mean and std to normalise them with (the training data's where not
    given), after the checks predict makes; `what` names the caller in messages."""
    model = network_of(model, what)
    if isinstance(images, Dataset):
        raise TypeError(f"{what} takes images (an array), got a Dataset: pass its .images, or score it with "
                        "evaluate(model, dataset)")
    known = model.data or {}
    mean, std = known.get("mean") if mean is None else mean, known.get("std") if std is None else std
    if mean is None or std is None:
        raise ValueError(f"{what} needs the mean and std of the images the network was trained on: pass mean= and "
                         "std=, or a network that knows its data (model.data; Trainer.fit and load_checkpoint set it)")
    shape = known.get("input_shape")
    channels = shape[0] if shape else model.input_channels()
    mean = per_channel(mean, f"{what} mean", -MAX_STATISTIC, channels)
    std = per_channel(std, f"{what} std", 1e-12, channels)
    images = _image_batch(backend.as_host(images), shape, len(mean), what)
    why = model.classifying_misfit(images.shape[1:], None)  # unknown data: else a layer deep inside says it
    if why:
        raise ValueError(f"{what}: {why}")
    return model, images, mean, std


def probabilities(model: Sequential, x: np.ndarray) -> np.ndarray:
    """Class probabilities (n, K), float64 on the host, of the normalised inputs `x` (n, C,
    H, W) on the host; NotFiniteOutputs naming the first input (its index in `x`) whose
    outputs are NaN or Inf."""
    logits = model.forward(backend.to_backend(x, model.backend, model.device, model.dtype), training=False)
    logits = backend.to_numpy(logits).astype(np.float64)
    if not np.all(np.isfinite(logits)):
        first = int(np.flatnonzero(~np.all(np.isfinite(logits), axis=1))[0])
        raise NotFiniteOutputs(f"for image {first}", first)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _image_batch(images: np.ndarray, shape: Sequence[int] | None, channels: int, what: str) -> np.ndarray:
    """`images` as a batch (n, C, H, W): one image or many, grey ones without their axis."""
    given = images.shape  # what the caller passed, not the batch it was made into
    if images.size == 0:
        raise ValueError(f"{what} expects at least one image; got images of shape {given}")
    if images.dtype.kind == "f" and np.all(np.isfinite(images)) and 0 <= images.min() \
            and images.max() <= 1:
        images = np.round(images * 255.0).astype(np.uint8)  # as Dataset.from_arrays takes them
    if images.dtype != np.uint8:
        unlike = ""
        if images.dtype.kind == "f":
            unlike = " outside [0, 1]" if np.all(np.isfinite(images)) else " with NaN or Inf"
        raise TypeError(f"{what} expects uint8 images, or floating ones in [0, 1]; got {images.dtype}{unlike}")
    one = tuple(shape) if shape else None
    if one is not None and images.shape in (one, one[1:] if one[0] == 1 else None):
        images = images[None]  # a single image
    elif images.ndim == 2 and channels == 1:
        images = images[None]
    elif images.ndim == 3 and channels > 1:  # one image (C, H, W): only grey ones come many without C
        images = images[None]
    if images.ndim == 3 and channels == 1:
        images = images[:, None]
    if images.ndim != 4 or images.shape[1] != channels or (one is not None and images.shape[1:] != one):
        wanted = "x".join(map(str, one)) if one else f"{channels}-channel"
        raise ValueError(f"{what} expects {wanted} images (n, C, H, W), or one (C, H, W)"
                         f"{', grey ones without C' if channels == 1 else ''}; got shape {given}")
    return images


def evaluate_checkpoint(path: str | Path, dataset: str | None = None, data_dir: str | Path | None = None, *,
                        download: bool = True, backend_name: str = "numpy", device: Any = None, batch_size: int = 1000,
                        full_test_set: bool = False, on_bad: str | None = None,
                        log: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Test loss and accuracy of a saved model (a checkpoint, or a run folder), as `xpcnn
    evaluate` prints them, on the test split of `dataset` (default: the one it was trained
    on, and then the test images its run scored: a --limit run's sample, unless
    `full_test_set`; for a folder of pictures, read again as it was and refused if it
    changed; another folder, `data_dir`, read with the run's options, as digits for an
    MNIST-family model, `on_bad="skip"`
    skipping unreadable pictures and stray files):
    {"accuracy", "loss", "images", "data", "classes", "macro", "confusion"}, "data" saying
    where the images came from, "classes" each class's precision, recall, F1 and support
    (metrics.per_class), "confusion" the `counts[true][predicted]` as lists. ValueError
    when the data's classes are not the model's."""
    checkpoint = load_checkpoint(path, backend_name, device)
    trained = checkpoint.data_statistics()
    scored = DATASETS.get(dataset or trained["name"])
    if scored is not None and list(scored.classes) != list(trained["classes"]):  # refused before any file is read
        raise ValueError(f"the model classifies {len(trained['classes'])} classes of {trained['name']} "
                         f"({_some(trained['classes'])}), but {scored.name} has {len(scored.classes)} "
                         f"({_some(scored.classes)}): it cannot be scored on them")
    test, source = _test_split(checkpoint, dataset, data_dir, download, full_test_set, on_bad, log)
    result = evaluate(checkpoint.model, test, batch_size)
    return {"accuracy": result["accuracy"], "loss": result["loss"], "images": len(test), "data": source,
            "classes": result["classes"], "macro": result["macro"],
            "confusion": result["confusion"].tolist()}


def _test_split(checkpoint: Any, dataset: str | None, data_dir: str | Path | None, download: bool, full: bool,
                on_bad: str | None, log: Callable[[str], None]) -> tuple[Dataset, str]:
    """The test images to score a checkpoint on, and one line saying which."""
    trained_on, selection = checkpoint.data_statistics()["name"], checkpoint.selection()
    same = dataset in (None, trained_on)
    folder = FOLDER in (dataset, trained_on if same else None)
    own = [Path(place) for place in (selection.folders or ())] if folder and same and selection is not None else []
    if data_dir is not None and Path(data_dir).resolve() in own:
        data_dir = None  # the run's own folder: its test pictures, not the ones it trained on too
    if on_bad is not None and (not folder or data_dir is None):
        raise SettingsError("skip_bad_images", "applies to another folder of pictures (--data-dir, data_dir=); the "
                            "run's own folder is read as the run read it")
    if folder and data_dir is None and (not same or selection is None or selection.dataset != FOLDER):
        raise SettingsError("data_dir", "a folder of pictures (--dataset images) needs the folder")
    if not same:
        log(f"note: the model was trained on {trained_on}, evaluating on {dataset}")
    if folder:
        loaded = _folder_again(selection if same else None, data_dir, checkpoint, on_bad, log)
    elif trained_on not in DATASETS and same:
        raise ValueError(f"the model was trained on data given from Python ({trained_on}), which cannot be read "
                         "again here: score it with xpcnn.evaluate(model, dataset), or name --dataset and --data-dir")
    elif data_dir is None and dataset is None and selection is not None and selection.folders is None:
        loaded = load_bundled()  # the test split of what it was trained on
    else:  # only the test split is needed; never the bundled subset in place of what was asked
        loaded = _registered_test(selection if same else None, dataset or trained_on, data_dir, download, log)
    test, source = loaded.test, loaded.source
    if same and data_dir is None and selection is not None and selection.limit is not None and not full:
        test = test.sample(selection.limit, selection.seed + 1)  # as Loaded.splits drew the run's
        if len(test) < len(loaded.test):
            source += (f"; {len(test):,} of its {len(loaded.test):,} test images, drawn as for a run limited to "
                       f"{selection.limit:,} images (--full-test-set: all)")
    return test, source


def _registered_test(selection: Selection | None, name: str, data_dir: str | Path | None, download: bool,
                     log: Callable[[str], None]) -> Loaded:
    """The test split of a registered dataset: from `data_dir`, else where the run read it
    if it is still there, else wherever load_dataset looks."""
    prefer = (selection.folders or ()) if selection else ()
    gone = [folder for folder in prefer if not Path(folder).is_dir()]
    if gone and data_dir is None:
        log(f"note: the model's data is gone from {', '.join(gone)}; looking for {name} elsewhere "
            "(--data-dir names where it is now)")
    try:
        return load_dataset(name, data_dir, download=download, allow_bundled=False, log=log, parts=("test",),
                            prefer=prefer)
    except DataNotFound as exc:
        if data_dir is not None or selection is not None:
            raise
        raise DataNotFound(f"{exc}; the model does not record where its {name} was read (a draw of a draw, or "
                           "images given from Python): --data-dir names the folder") from None


def _folder_again(selection: Selection | None, data_dir: str | Path | None, checkpoint: Any,
                  on_bad: str | None, log: Callable[[str], None]) -> Loaded:
    """A folder of pictures read as the run read it: the run's own (refused if its pictures
    changed: Selection.load; found by its digest where it was moved), or `data_dir` with
    the run's options (`on_bad` given: that), as digits for a model of digits without them
    (the MNIST family), as predict reads one."""
    if data_dir is None:  # the run's own folder (_test_split checked it has one)
        try:
            return _as_the_run_read(selection, selection.folders)
        except (DataNotFound, FolderError) as exc:
            raise type(exc)(f"{exc}; if it moved, --data-dir (data_dir=) names where it is now") from None
    moved = _moved_here(selection, data_dir, log)
    if moved is not None:
        return moved
    data = checkpoint.data_statistics()
    # one channel, as read_for_model: a checkpoint older than photos records "digits" whatever it took
    options = {"image_size": data["input_shape"][1], "channels": data["input_shape"][0],
               "pictures": data["pictures"] if data["input_shape"][0] == 1 else "resize",
               **(selection.reader if selection else {})}
    # Another folder is scored whole (its test/ where it has train/ and test/): it was never trained on.
    options.update(test_split=1.0, split_seed=0, **({"on_bad": on_bad} if on_bad else {}))
    if (Path(data_dir) / "train").is_dir() and (Path(data_dir) / "test").is_dir():
        data_dir = Path(data_dir) / "test"  # its train/, never scored, is neither decoded nor refused for a bad file
    return _as_trained(load_images(data_dir, **options), checkpoint)


def _moved_here(selection: Selection | None, data_dir: str | Path, log: Callable[[str], None]) -> Loaded | None:
    """The run's own folder of class folders, moved or copied to `data_dir` (the same
    pictures read as the run read them: the same digest), split as the run split it: scored
    whole, its training pictures would inflate the score. None for another folder."""
    if selection is None or selection.digest is None or (Path(data_dir) / "train").is_dir():
        return None  # a folder of train/ and test/ is scored on test/, which no run trained on
    try:
        loaded = _as_the_run_read(selection, (str(data_dir),))
    except (DataNotFound, FolderError):  # other pictures, or some the run's reading refuses: read as another's
        return None
    log(f"note: {data_dir} holds the pictures the run read from {selection.folders[0]}: scoring the test split "
        "the run held out of them")
    return loaded


def _as_the_run_read(selection: Selection, folders: tuple[str, ...] | None) -> Loaded:
    """The run's pictures read from `folders` as the run read them, whole: its training
    split and the test split it held out (Selection.load: refused where they changed)."""
    train, _, test = dataclasses.replace(selection, folders=folders, limit=None, val_split=0.0).load()
    return Loaded(train, test)


def _as_trained(loaded: Loaded, checkpoint: Any) -> Loaded:
    """Another folder's test pictures, normalised as the model's training data was (a
    folder's statistics are its own training split's); ValueError if its classes differ."""
    data = checkpoint.data_statistics()
    test = loaded.test
    if list(test.spec.classes) != list(data["classes"]):
        raise ValueError(f"the folder's classes ({_some(test.spec.classes)}) are not the model's "
                         f"({_some(data['classes'])})")
    spec = dataclasses.replace(test.spec, mean=tuple(data["mean"]), std=tuple(data["std"]))
    return Loaded(None, dataclasses.replace(test, spec=spec), loaded.folders, loaded.reader, loaded.digest)


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

    def to_line(self) -> str:
        """For people: "IMAGE: class (p %), ...", or the error; control characters in a
        file's name escaped, so that it stays one line."""
        if self.error is not None:
            return escaped(self.error)
        return escaped(f"{self.image}: " + ", ".join(f"{name} ({share:.1%})" for name, share in self.classes))


def opened_for_files(path: str | Path, images: Sequence[str | Path], invert: Any, top: Any, backend_name: str,
                     device: Any, what: str) -> tuple[list[str | Path], bool | None, int, Any, dict[str, Any]]:
    """`images` as a list, `invert` and `top` checked, the saved model at `path` (a
    Checkpoint) and its data statistics, after checking that `invert` fits it
    (SettingsError for a model of photos): what `what` (classify_files, explain_files)
    checks first."""
    if isinstance(images, (str, bytes, Path)) or not hasattr(images, "__iter__"):
        raise TypeError(f"{what} takes a list of image files, got {type(images).__name__}")
    images = list(images)  # a glob's generator, an array of names
    invert = optional_flag(invert, f"{what} invert")
    top = integer(top, f"{what} top", 1)
    checkpoint = load_checkpoint(path, backend_name, device)
    data = checkpoint.data_statistics()
    if invert is not None and not (data["pictures"] == "digits" and data["input_shape"][0] == 1):
        raise SettingsError("invert", f"is for pictures of digits; this model was trained on photos ({data['name']})")
    return images, invert, top, checkpoint, data


def classify_files(path: str | Path, images: Sequence[str | Path], *, invert: bool | None = None, top: int = 1,
                   backend_name: str = "numpy", device: Any = None) -> list[Classified]:
    """Each image file (a picture or .npy) classified by the saved model, read as its
    training images were (xpcnn.datasets.images.read_for_model: digits as MNIST's, photos
    fitted to the image size); a file that cannot be read gets its error, and the others
    still run. `invert` (digits only) forces dark ink on light paper to be inverted or not;
    `top` classes are given each."""
    images, invert, top, checkpoint, data = opened_for_files(path, images, invert, top, backend_name, device,
                                                             "classify_files")
    results, pixels = [], []
    for image in images:
        results.append(Classified(Path(image)))
        try:
            pixels.append(read_for_model(image, tuple(data["input_shape"]), data["pictures"], invert))
        except ImageError as exc:
            results[-1].error = str(exc)
    readable = [result for result in results if result.error is None]
    if readable:
        try:
            probabilities = predict(checkpoint.model, np.stack(pixels), data["mean"], data["std"])
        except NotFiniteOutputs as exc:  # named by its file, not by its place among the readable ones
            raise NotFiniteOutputs(f"for {escaped(str(readable[exc.image].image))}", exc.image) from None
        for result, row in zip(readable, probabilities):
            result.classes = [(data["classes"][k], float(row[k])) for k in np.argsort(row)[::-1][:top]]
    return results
