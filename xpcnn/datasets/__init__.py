"""Datasets: IDX files with checksums, downloads with mirrors, the bundled MNIST subset,
and seeded mini-batches moved to any backend."""

from .batches import batches, epoch_order, num_batches
from .files import ChecksumError, DownloadError, cache_dir, download_file, load_verified
from .idx import IDXError, read_idx
from .loading import (
    DataNotFound,
    Dataset,
    Loaded,
    Selection,
    download,
    load_bundled,
    load_dataset,
    load_full,
    normalize,
)
from .sources import DATASETS, FASHION_MNIST, MNIST, DataFile, DatasetSpec

__all__ = [
    "batches", "epoch_order", "num_batches", "ChecksumError", "DownloadError", "cache_dir",
    "download_file", "load_verified", "IDXError", "read_idx", "DataNotFound", "Dataset",
    "Loaded", "Selection", "download", "load_bundled", "load_dataset", "load_full", "normalize",
    "DATASETS", "FASHION_MNIST", "MNIST", "DataFile", "DatasetSpec",
]
