"""Datasets: MNIST's IDX files and CIFAR's archives with checksums, downloads with
mirrors, the bundled MNIST subset, folders of pictures, your own arrays
(Dataset.from_arrays), and seeded mini-batches, augmented, moved to any backend."""

from .batches import Augment, batches, epoch_order, num_batches
from .dataset import Dataset, normalize
from .files import ChecksumError, DownloadError, cache_dir, download_file, load_verified
from .idx import IDXError, read_idx
from .loading import DataNotFound, Loaded, Selection, download, load_bundled, load_dataset, load_full, load_images
from .sources import CIFAR10, CIFAR100, DATASETS, FASHION_MNIST, MNIST, DataFile, DatasetSpec

__all__ = [
    "Augment", "batches", "epoch_order", "num_batches", "ChecksumError", "DownloadError", "cache_dir",
    "download_file", "load_verified", "IDXError", "read_idx", "DataNotFound", "Dataset",
    "Loaded", "Selection", "download", "load_bundled", "load_dataset", "load_full", "load_images", "normalize",
    "DATASETS", "FASHION_MNIST", "MNIST", "CIFAR10", "CIFAR100", "DataFile", "DatasetSpec",
]
