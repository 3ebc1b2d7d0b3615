"""A dataset in memory: images (N, C, H, W) uint8 and labels, with the spec that says how
they are normalised and what their classes are; checked on the way in."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import backend
from ..checks import number
from .sources import DatasetSpec

if TYPE_CHECKING:
    from .loading import Selection


def normalize(images: np.ndarray, mean: float | Sequence[float], std: float | Sequence[float],
              dtype: Any = "float32") -> np.ndarray:
    """uint8 images (n, C, H, W), or grey (n, H, W), -> (n, C, H, W) in `dtype` ("float32"
    or "float64", or such a dtype of any library), scaled to [0, 1] then standardised per
    channel with the training set's `mean` and `std` (a number each for grey images): what
    a network trained by xpcnn expects. Computed in `dtype`, so a float64 network reads
    inputs rounded once, to float64."""
    if images.ndim == 3:
        images = images[:, None]
    host = np.dtype(backend.float_name(dtype))
    mean, std = (np.asarray(value, host).reshape(1, -1, 1, 1) for value in (mean, std))
    if mean.shape[1] != images.shape[1] or std.shape[1] != images.shape[1]:
        raise ValueError(f"{images.shape[1]}-channel images need a mean and std per channel, got "
                         f"{mean.size} and {std.size}")
    x = images.astype(host)
    x /= host.type(255.0)  # in place, the same roundings as (x / 255 - mean) / std, without its temporaries
    x -= mean
    x /= std
    return x


MAX_STATISTIC = 1e6  # a normalisation's mean and std, at most (and the mean at least its negative)


def per_channel(value: Any, what: str, low: float, channels: int | None) -> list[float]:
    """A mean or std for each of a network's `channels` (one number serves them all; None:
    unknown, as many as given), each a number in [low, MAX_STATISTIC]; `what` names it in
    errors."""
    if isinstance(value, np.ndarray) and value.ndim == 0:  # one number, as np.asarray(0.5) holds it
        value = value.item()
    values = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value] * (channels or 1)
    if channels is not None and len(values) != channels:
        raise ValueError(f"{what} needs one value per channel of the network's images ({channels}), got "
                         f"{len(values)}")
    return [number(v, what, low, MAX_STATISTIC) for v in values]


@dataclass(repr=False)
class Dataset:
    """Images (N, C, H, W) uint8, C 1 or 3 (grey (N, H, W) is taken as C = 1), and labels
    (N,) integers in [0, classes) of one split, with the dataset's spec (name, per-channel
    mean and std, class names), where it was read from and, when it can be read again, how
    (`selection`). Labels must be integers already: floats, strings, booleans and NaN are
    refused, naming the first, never rounded or cast. Your own arrays come in through
    `Dataset.from_arrays`."""

    images: np.ndarray
    labels: np.ndarray
    spec: DatasetSpec
    source: str = ""  # one line, e.g. "full mnist from /data/mnist"
    selection: Selection | None = None
    part: str | None = None  # which part of its selection this is: "train", "val" or "test"

    def __post_init__(self) -> None:
        if not isinstance(self.spec, DatasetSpec):
            raise TypeError(f"Dataset spec must be a DatasetSpec, got {type(self.spec).__name__}")
        name = self.spec.name
        if not isinstance(self.images, np.ndarray) or self.images.dtype != np.uint8:
            shown = self.images.dtype if isinstance(self.images, np.ndarray) else type(self.images).__name__
            raise TypeError(f"{name}: images must be a NumPy array of uint8, got {shown}")
        self.images = _channels_first(self.images, name)
        if self.images.shape[1] != self.spec.channels:
            raise ValueError(f"{name}: {self.images.shape[1]}-channel images, but the spec has a mean and std for "
                             f"{self.spec.channels}")
        if not isinstance(self.labels, np.ndarray):
            raise TypeError(f"{name}: labels must be a NumPy array of class indices, got {type(self.labels).__name__} "
                            "(Dataset.from_arrays takes lists too)")
        if self.labels.shape != (self.images.shape[0],):
            shown = self.labels.shape
            raise ValueError(f"{name}: {self.images.shape[0]} images need labels of shape ({self.images.shape[0]},), "
                             f"got {shown}")
        self.labels = _class_indices(self.labels, len(self.spec.classes), name)

    @classmethod
    def from_arrays(cls, images: Any, labels: Any, classes: int | Sequence[str] | None = None, *,
                    like: Any = None, name: str = "arrays") -> Dataset:
        """A dataset of your own arrays: images (N, C, H, W) or grey (N, H, W), uint8 or
        floating in [0, 1] (stored as uint8: rounded to the nearest of 256 levels, as
        pictures are); labels (N,) class indices; `classes` their names, or how many
        (default: as many as the largest label says). The mean and std of each channel
        are measured on these images, unless `like` gives them with the classes: the
        training split, when these are its test images, or a trained network (a loaded
        checkpoint's model: its `data`). One clear error per problem."""
        images, labels = _pixels(images, name), backend.as_host(labels)
        if images.shape[0] == 0:
            raise ValueError(f"{name}: no images; a dataset needs at least one")
        if like is not None:
            if classes is not None:
                raise ValueError(f"{name}: give classes or like, not both: like brings the classes of its dataset")
            spec = _spec_of(like, name)
            _check_like_shape(images, like, name)
        else:
            spec = DatasetSpec(name, {}, (), *channel_statistics(images), _class_names(classes, labels, name))
        # Counted from the images: labels of another shape (a scalar has no len) are the constructor's to refuse.
        return cls(images, labels, spec, f"{name} ({images.shape[0]:,} images)")

    def __repr__(self) -> str:
        n, c, h, w = self.images.shape
        where = f", {self.source}" if self.source else ""
        colour = "grey" if c == 1 else f"{c} channels"
        return f"Dataset({self.spec.name}: {n:,} images {h}x{w} {colour}, {len(self.spec.classes)} classes{where})"

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __eq__(self, other: object) -> bool:
        """The same images and labels (by value), spec, source, selection and part."""
        # Not the dataclass's: its tuple `==` of arrays raised NumPy's "truth value is ambiguous".
        if not isinstance(other, Dataset):
            return NotImplemented
        return ((self.spec, self.source, self.selection, self.part) == (other.spec, other.source, other.selection,
                                                                          other.part)
                and np.array_equal(self.images, other.images) and np.array_equal(self.labels, other.labels))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image: what a network for this data takes."""
        return tuple(int(d) for d in self.images.shape[1:])  # type: ignore[return-value]

    def statistics(self) -> dict[str, Any]:
        """What using a model trained on this data needs to know of it: the dataset's name,
        the normalisation (mean, std per channel), the class names, the input shape
        (C, H, W), how pictures are brought into its form (DatasetSpec.pictures) and where
        the data came from; what a checkpoint keeps (save_checkpoint) and `model.data` holds."""
        spec = self.spec
        return {"name": spec.name, "mean": list(spec.mean), "std": list(spec.std), "classes": list(spec.classes),
                "input_shape": list(self.input_shape), "pictures": spec.pictures, "source": self.source}

    def digest(self) -> str:
        """sha256 of the images, labels and class names: the same data, the same digest;
        what a resumed run checks it continues on."""
        content = hashlib.sha256(json.dumps([list(self.images.shape), list(self.spec.classes)]).encode())
        content.update(np.ascontiguousarray(self.images))
        content.update(np.ascontiguousarray(self.labels))
        return content.hexdigest()

    def normalize(self, images: np.ndarray, dtype: Any = "float32") -> np.ndarray:
        """`normalize` with this dataset's statistics."""
        return normalize(images, self.spec.mean, self.spec.std, dtype)

    def subset(self, indices: np.ndarray) -> Dataset:
        """The images at `indices`; no selection: it cannot be read again as such."""
        return Dataset(self.images[indices], self.labels[indices], self.spec, self.source)

    def training_selection(self) -> Selection | None:
        """How to read these very images again as a run's training images: the selection
        where this dataset is its training part, else None."""
        return self.selection if self.part == "train" else None

    def sample(self, count: int | None, seed: int = 0) -> Dataset:
        """`count` images drawn at random from `seed`, kept in their order (all of them
        when `count` is None or not smaller than the dataset). Drawn from a whole training
        split as read, it keeps a selection that reads it again, as `xpcnn train --limit`
        draws."""
        if count is not None and (isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1):
            raise ValueError(f"{self.spec.name}: a sample count must be an integer >= 1 (None: all), got {count!r}")
        seed = check_seed(seed, self.spec.name)
        if count is None or count >= len(self):
            return self
        drawn = self.subset(np.sort(np.random.default_rng(seed).permutation(len(self))[:count]))
        chosen = self.training_selection()
        whole = chosen is not None and chosen.limit is None and not chosen.val_split
        return self._read_again_as(drawn, "train", limit=int(count), seed=seed) if whole else drawn

    def split(self, fraction: float, seed: int = 0) -> tuple[Dataset, Dataset]:
        """(rest, held_out): a random `fraction` held out, e.g. for validation. Of a
        training split, both keep a selection that reads them again where `xpcnn train
        --val-split` would draw them so."""
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating)) or not 0 < fraction < 1:
            raise ValueError(f"{self.spec.name}: a split fraction must be a number in (0, 1), got {fraction!r}")
        seed = check_seed(seed, self.spec.name)
        cut = held_out_count(len(self), fraction)
        if not 0 < cut < len(self):
            raise ValueError(f"{self.spec.name}: holding out {fraction} of {len(self):,} images leaves a part empty")
        order = np.random.default_rng(seed).permutation(len(self))
        rest, held_out = self.subset(np.sort(order[cut:])), self.subset(np.sort(order[:cut]))
        chosen = self.training_selection()
        if chosen is None or chosen.val_split or (chosen.limit is not None and chosen.seed != seed):
            return rest, held_out
        return (self._read_again_as(rest, "train", val_split=float(fraction), seed=seed),
                self._read_again_as(held_out, "val", val_split=float(fraction), seed=seed))

    def _read_again_as(self, drawn: Dataset, part: str, **choices: Any) -> Dataset:
        """`drawn`, a part of this dataset, with this dataset's selection and `choices`
        (limit, seed, val_split), which Loaded.splits draws the same images with: a run
        trained on it can then be resumed and evaluated from the files it came from."""
        return replace(drawn, selection=replace(self.selection, **choices), part=part)


def held_out_count(count: int, fraction: float) -> int:
    """How many of `count` images Dataset.split holds out for `fraction` (rounded)."""
    return int(round(count * fraction))


def check_seed(seed: Any, name: str) -> int:
    """`seed` as an int >= 0: TypeError naming `name` for another type (a float or a
    bool would seed something the caller did not mean), ValueError for a negative one."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"{name}: a seed must be an integer >= 0, got {seed!r}")
    if seed < 0:
        raise ValueError(f"{name}: a seed must be an integer >= 0, got {seed!r}")
    return int(seed)


def _channels_first(images: np.ndarray, name: str) -> np.ndarray:
    """(N, H, W) -> (N, 1, H, W), a view; (N, C, H, W) with C 1 or 3 as it is."""
    if images.ndim == 3:
        return images[:, None]
    if images.ndim == 4 and images.shape[1] in (1, 3):
        return images
    hint = "; channels last? pass images.transpose(0, 3, 1, 2)" if images.ndim == 4 and images.shape[3] in (1, 3) \
        else ""
    raise ValueError(f"{name}: images must be (N, C, H, W) with C 1 or 3, or grey (N, H, W); got shape "
                     f"{images.shape}{hint}")


def _spec_of(like: Any, name: str) -> DatasetSpec:
    """The spec of from_arrays' `like`: a Dataset's own, or that of the data a network was
    trained on (its `data`, Dataset.statistics)."""
    if isinstance(like, Dataset):
        return like.spec
    known = getattr(like, "data", None)
    if not isinstance(known, dict):
        what = f"a {type(like).__name__} that does not know its training data (its data is None)" \
            if hasattr(like, "data") else f"{type(like).__name__}"
        raise TypeError(f"{name}: like must be a Dataset or a trained network (a loaded checkpoint's model), "
                        f"got {what}")
    return DatasetSpec.from_statistics(known)


def _check_like_shape(images: np.ndarray, like: Any, name: str) -> None:
    """ValueError where `images` are not of the shape of from_arrays' `like`: its images, or
    those its network was trained on; no network takes both, and evaluate refuses them."""
    shape = like.input_shape if isinstance(like, Dataset) else like.data.get("input_shape")
    if shape is not None and tuple(images.shape[1:]) != tuple(shape):
        whose = f"the images of like ({like.spec.name})" if isinstance(like, Dataset) else \
            "the images like's network was trained on"
        raise ValueError(f"{name}: images {'x'.join(map(str, images.shape[1:]))} (C x H x W), but "
                         f"{whose} are {'x'.join(map(str, shape))}")


def _pixels(images: Any, name: str) -> np.ndarray:
    """uint8 images as given, or floating ones in [0, 1] rounded to uint8."""
    array = backend.as_host(images)
    if array.dtype == np.uint8:
        return _channels_first(array, name)
    if array.dtype.kind != "f":
        raise TypeError(f"{name}: images must be uint8, or floating in [0, 1]; got {array.dtype}")
    if array.size and not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: floating images must be in [0, 1] and finite; image "
                         f"{int(np.argmax(~np.isfinite(array.reshape(len(array), -1)).any(axis=1)))} is not")
    if array.size and not (array.min() >= 0.0 and array.max() <= 1.0):
        raise ValueError(f"{name}: floating images must be in [0, 1] and finite; got values in "
                         f"[{array.min()}, {array.max()}]")
    return _channels_first(np.round(array * 255.0).astype(np.uint8), name)


def channel_statistics(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std of each channel of uint8 images (N, C, H, W) scaled to [0, 1],
    from exact integer sums (the same images give the same numbers, bit for bit); a
    channel that is constant gets std 1, so that normalising leaves it finite."""
    sums = images.sum(axis=(0, 2, 3), dtype=np.uint64)
    squares = np.zeros(images.shape[1], np.uint64)
    step = max(1, (1 << 22) // max(1, int(np.prod(images.shape[1:]))))  # about 16 MiB of uint32 at a time
    for start in range(0, images.shape[0], step):
        chunk = images[start : start + step].astype(np.uint32)
        squares += (chunk * chunk).sum(axis=(0, 2, 3), dtype=np.uint64)
    count = images.shape[0] * images.shape[2] * images.shape[3] or 1
    mean = sums / (count * 255.0)
    std = np.sqrt(np.maximum(squares / (count * 255.0**2) - mean**2, 0.0))
    return tuple(map(float, mean)), tuple(float(s) if s > 1e-6 else 1.0 for s in std)


def _class_names(classes: int | Sequence[str] | None, labels: np.ndarray, name: str) -> tuple[str, ...]:
    """The class names `classes` gives: names, a count, or (None) one per label value up
    to the largest."""
    if classes is None:
        if labels.size == 0 or labels.dtype.kind not in "iu":
            return ("0",)  # Dataset's own label check says what is wrong with them
        if labels.max() < 1:
            raise ValueError(f"{name}: the labels name one class; a classifier tells at least 2 apart (classes= says "
                             "how many there are)")
        return tuple(str(k) for k in range(int(labels.max()) + 1))
    if isinstance(classes, (int, np.integer)) and not isinstance(classes, bool):
        if classes < 2:
            raise ValueError(f"{name}: classes must be >= 2 (a classifier tells classes apart), got {classes}")
        return tuple(str(k) for k in range(int(classes)))
    if isinstance(classes, (list, tuple)) and classes and all(isinstance(c, str) for c in classes):
        if len(classes) < 2:
            raise ValueError(f"{name}: a classifier tells at least 2 classes apart, got {list(classes)}")
        if len(set(classes)) != len(classes):
            raise ValueError(f"{name}: class names must differ, got {list(classes)[:10]}")
        if not all(c.strip() for c in classes):  # a nameless class prints as nothing in every table
            raise ValueError(f"{name}: class names must not be blank, got {list(classes)[:10]}")
        return tuple(classes)
    raise TypeError(f"{name}: classes must be a count or a list of names, got {classes!r}"[:200])


def _class_indices(labels: np.ndarray, classes: int, name: str) -> np.ndarray:
    """`labels` as int64 indices in [0, classes); TypeError or ValueError naming the first
    label that is not one."""
    if labels.dtype == np.bool_ or not np.issubdtype(labels.dtype, np.integer):
        if np.issubdtype(labels.dtype, np.floating) and labels.size:
            wrong = ~np.isfinite(labels) | (labels != np.round(labels))
            first = int(np.argmax(wrong)) if wrong.any() else None
            detail = f"; the label at index {first} is {labels[first].item()}" if first is not None else ""
        else:
            detail = f"; the label at index 0 is {labels[0].item()!r}" if labels.size else ""
        raise TypeError(f"{name}: labels must be integers (class indices), got {labels.dtype}{detail}")
    outside = (labels < 0) | (labels >= classes)
    if outside.any():
        first = int(np.argmax(outside))
        raise ValueError(f"{name}: labels must be class indices in [0, {classes}); the label at index {first} is "
                         f"{labels[first]}")
    return labels.astype(np.int64)
