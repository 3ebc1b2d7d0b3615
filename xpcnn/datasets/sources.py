"""What each dataset is: its files, their checksums, where to download them, its statistics."""

from __future__ import annotations

import hashlib
import math
import unicodedata
from dataclasses import dataclass
from typing import Any

PICTURES = ("resize", "digits")  # how pictures are brought to a network's images: photos fitted, or MNIST's form
MAX_CLASS_NAME = 255  # characters: a folder's name, which a class of pictures has, is at most 255 bytes
# What a printed name must not hold: control characters and line breaks forge lines and
# terminal escapes; bidirectional overrides make printed text read other than it is; a
# lone surrogate (the byte of a file name that is no UTF-8) cannot be drawn or encoded.
# (Zero-width joiners, no-break spaces and the like belong to ordinary names.)
UNPRINTABLE_CATEGORIES = {"Cc", "Cs", "Zl", "Zp"}
BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _unprintable(char: str) -> bool:
    return unicodedata.category(char) in UNPRINTABLE_CATEGORIES or char in BIDI_CONTROLS


def printable_name(name: str) -> bool:
    """Whether `name` can be printed as a class's name: 1 to MAX_CLASS_NAME characters,
    none that would change how the output around it reads."""
    return 0 < len(name) <= MAX_CLASS_NAME and not any(map(_unprintable, name))


def escaped(text: str) -> str:
    """`text` with the characters printable_name refuses written as escapes (a line break
    as \\n): a file may be named with them, and its name must not break or forge the one
    line that names it."""
    return "".join(char.encode("unicode_escape").decode("ascii") if _unprintable(char) else char for char in text)


@dataclass(frozen=True)
class DataFile:
    """One published file. An IDX file's `digest` is checked against its uncompressed
    content (`of="content"`) or, where only that is published, against the gzip file as
    published (`of="gzip"`); mirrors serve it as name + ".gz". An archive's (`of="archive"`,
    e.g. CIFAR's .tar.gz) is checked against the file as published, served as `name`."""

    name: str  # an IDX file's uncompressed name, or the archive's
    size: int  # an IDX file's uncompressed bytes, or the archive's bytes
    algorithm: str
    digest: str
    of: str = "content"

    def hash(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm)

    @property
    def served_as(self) -> str:
        """The file's name on the mirrors."""
        return self.name if self.of == "archive" else f"{self.name}.gz"


def _per_channel(value: object, field: str) -> tuple[float, ...]:
    """A number, or a list of numbers (one per channel), as a tuple of floats."""
    values = value if isinstance(value, (list, tuple)) else (value,)
    if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                             for v in values):
        raise TypeError(f"DatasetSpec {field} must be a finite number or one per channel, got {value!r}"[:200])
    return tuple(float(v) for v in values)


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: its name, its files and where to download them (none for one of your
    own), the mean and std of its training pixels scaled to [0, 1], per channel (what
    inputs are normalised with; one number for grey images), its class names in label
    order, and how a picture given to `xpcnn predict` is brought into its form
    (`pictures`: "digits", light ink centred by mass as in MNIST, or "resize", the
    picture's shorter side scaled to the image size and the middle cut out)."""

    name: str
    files: dict[str, DataFile]  # IDX: train_images, train_labels, test_images, test_labels; CIFAR: archive
    mirrors: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, of the training pixels scaled to [0, 1] (a number: one channel)
    std: tuple[float, ...]
    classes: tuple[str, ...]
    pictures: str = "resize"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"DatasetSpec name must be a non-empty string, got {self.name!r}")
        mean, std = _per_channel(self.mean, "mean"), _per_channel(self.std, "std")
        if len(mean) != len(std):
            raise ValueError(f"DatasetSpec mean and std must have one value per channel, got {mean} and {std}")
        if min(std) <= 0:
            raise ValueError(f"DatasetSpec std must be > 0 (inputs are divided by it), got {self.std}")
        classes = tuple(self.classes) if isinstance(self.classes, (list, tuple)) else None
        if not classes or not all(isinstance(name, str) for name in classes):
            raise TypeError(f"DatasetSpec classes must be a non-empty list of names, got {self.classes!r}"[:200])
        if len(set(classes)) != len(classes):
            raise ValueError(f"DatasetSpec class names must differ, got {list(classes)[:10]}"[:200])
        odd = next((name for name in classes if not printable_name(name)), None)
        if odd is not None:
            raise ValueError(f"DatasetSpec class names must be printable, of at most {MAX_CLASS_NAME} characters "
                             f"(they are printed), got {odd!r}"[:200])
        if self.pictures not in PICTURES:
            raise ValueError(f"DatasetSpec pictures must be one of {', '.join(map(repr, PICTURES))}, "
                             f"got {self.pictures!r}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "classes", classes)

    @property
    def channels(self) -> int:
        return len(self.mean)

    @classmethod
    def from_statistics(cls, known: dict[str, Any]) -> DatasetSpec:
        """The spec of data described by `known` (Dataset.statistics: what a network was
        trained on, model.data), without files to download."""
        return cls(known["name"], {}, (), known["mean"], known["std"], known["classes"],
                   known.get("pictures", "resize"))


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
    pictures="digits",
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
    pictures="digits",
)

# CIFAR's binary versions ("suitable for C programs": fixed-size records, no pickle). The
# MD5 sums are those published on https://www.cs.toronto.edu/~kriz/cifar.html (which gives
# sizes in MB only; the byte counts are those of the published archives as others who
# downloaded them record them, and a wrong one fails like a wrong MD5). The means and
# standard deviations per channel are the values commonly computed over the 50,000
# training images (this project has no copy of CIFAR to measure them).
CIFAR_MIRRORS = ("https://www.cs.toronto.edu/~kriz/", "https://cave.cs.toronto.edu/kriz/",
                 "http://www.cs.toronto.edu/~kriz/")


def _cifar(name: str, archive: str, size: int, md5: str, mean: tuple[float, ...], std: tuple[float, ...],
           classes: tuple[str, ...]) -> DatasetSpec:
    return DatasetSpec(name, {"archive": DataFile(archive, size, "md5", md5, "archive")}, CIFAR_MIRRORS, mean, std,
                       classes)


CIFAR10 = _cifar("cifar10", "cifar-10-binary.tar.gz", 170052171, "c32a1d4ab5d03f1284b67883e8d87530",
                 (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                 ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"))
CIFAR100 = _cifar("cifar100", "cifar-100-binary.tar.gz", 168513733, "03b5dce01913d631647c71ecec9e9cb8",
                  (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), tuple("""apple aquarium_fish baby bear beaver bed
    bee beetle bicycle bottle bowl boy bridge bus butterfly camel can castle caterpillar cattle chair chimpanzee clock
    cloud cockroach couch crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo
    keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree
    orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road
    rocket rose sea seal shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table
    tank telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman
    worm""".split()))

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (MNIST, FASHION_MNIST, CIFAR10, CIFAR100)}
MNIST_FAMILY = ("mnist", "fashion-mnist")  # IDX files of 28x28 grey images
IMAGE_SIDES = {"mnist": 28, "fashion-mnist": 28, "cifar10": 32, "cifar100": 32}  # each one's square images
FOLDER_IMAGE_SIDE = 32  # a folder of pictures is scaled to this by default (--image-size)
MAX_IMAGE_SIDE = 4096  # the largest side a folder's pictures are scaled to: what a run's record reads back


def image_side(dataset: str, image_size: int | None = None) -> int | None:
    """The side of the square images that `dataset` gives, known before any is read: a
    registered dataset's own, a folder's `image_size` (None: the default); else None."""
    if dataset == "images":
        return image_size or FOLDER_IMAGE_SIDE
    return IMAGE_SIDES.get(dataset)
