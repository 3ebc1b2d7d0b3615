"""What each dataset is: its files, their checksums, where to download them, its statistics."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class DataFile:
    """One IDX file. `digest` is checked against the uncompressed content (`of="content"`)
    or, where only that is published, against the gzip file as published (`of="gzip"`)."""

    name: str  # uncompressed name; mirrors serve name + ".gz"
    size: int  # uncompressed bytes
    algorithm: str
    digest: str
    of: str = "content"

    def hash(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm)


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: its name, its files and where to download them (none for one of your
    own), the mean and std of its training pixels scaled to [0, 1] (what inputs are
    normalised with), and its class names, in label order."""

    name: str
    files: dict[str, DataFile]  # "train_images", "train_labels", "test_images", "test_labels"
    mirrors: tuple[str, ...]
    mean: float  # of the training pixels scaled to [0, 1]
    std: float
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"DatasetSpec name must be a non-empty string, got {self.name!r}")
        for field, value in (("mean", self.mean), ("std", self.std)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise TypeError(f"DatasetSpec {field} must be a finite number, got {value!r}")
        if self.std <= 0:
            raise ValueError(f"DatasetSpec std must be > 0 (inputs are divided by it), got {self.std}")
        classes = tuple(self.classes) if isinstance(self.classes, (list, tuple)) else None
        if not classes or not all(isinstance(name, str) for name in classes):
            raise TypeError(f"DatasetSpec classes must be a non-empty list of names, got {self.classes!r}"[:200])
        object.__setattr__(self, "classes", classes)


MNIST = DatasetSpec(
    name="mnist",
    files={
        "train_images": DataFile(
            "train-images-idx3-ubyte",
            47040016,
            "sha256",
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        ),
        "train_labels": DataFile(
            "train-labels-idx1-ubyte",
            60008,
            "sha256",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        ),
        "test_images": DataFile(
            "t10k-images-idx3-ubyte",
            7840016,
            "sha256",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        ),
        "test_labels": DataFile(
            "t10k-labels-idx1-ubyte",
            10008,
            "sha256",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ),
    },
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    mean=0.1307,
    std=0.3081,
    classes=tuple(str(d) for d in range(10)),
)

# Zalando publishes MD5 sums of the gzip files only, so those are what can be checked.
FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    files={
        "train_images": DataFile(
            "train-images-idx3-ubyte", 47040016, "md5", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "gzip"
        ),
        "train_labels": DataFile("train-labels-idx1-ubyte", 60008, "md5", "25c81989df183df01b3e8a0aad5dffbe", "gzip"),
        "test_images": DataFile("t10k-images-idx3-ubyte", 7840016, "md5", "bef4ecab320f06d8554ea6380940ec79", "gzip"),
        "test_labels": DataFile("t10k-labels-idx1-ubyte", 10008, "md5", "bb300cfdad3c16e7a12a480ee83cd310", "gzip"),
    },
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    mean=0.2860,
    std=0.3530,
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
)

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (MNIST, FASHION_MNIST)}
