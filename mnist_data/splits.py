"""MNIST, Fashion-MNIST or user-provided IDX files as flat train / validation / test tensors.

Every image becomes a row of 784 pixels scaled to [0, 1] (optionally standardised, see
:mod:`mnist_data.standardization`); the result is a :class:`DatasetSplits` holding ``train_x (N_train, 784)``,
``val_x (N_val, 784)`` and ``test_x (N_test, 784)`` with int64 labels.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mnist_data.errors import DatasetError, Log, path_kind
from mnist_data.idx_format import (
    NUM_CLASSES,
    NUM_PIXELS,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    read_image_label_pair,
    user_idx_paths,
)
from mnist_data.sources import cached_known_dataset
from mnist_data.standardization import Statistic, apply_standardization, fit_standardization, standardize_mode

DATASET_NAMES = ("mnist", "fashion-mnist", "idx")
DATA_DIR_ENV = "MANUAL_BACKPROP_DATA"


def default_data_dir() -> Path:
    """``$MANUAL_BACKPROP_DATA`` if set, else ``<repository root>/data`` (git-ignored)."""
    from_env = os.environ.get(DATA_DIR_ENV)
    if from_env:
        return Path(from_env).expanduser()
    return Path(__file__).resolve().parent.parent / "data"


@dataclass(frozen=True)
class DatasetSplits:
    """Flattened images and labels of one dataset, ready for an MLP.

    ``*_x`` are ``(N, 784)`` floating tensors (pixels scaled to [0, 1], then standardised as ``standardize``
    says); ``*_y`` are ``(N,)`` int64 class indices in ``0..num_classes-1``. ``val_*`` hold 0 rows when no
    validation split was asked for. ``standardize`` is "none", "global" or "pixel"; ``mean`` and ``std`` are
    the training-split statistics that were applied: None for "none", floats for "global", ``(784,)`` float64
    CPU tensors for "pixel".
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    standardize: str
    mean: Statistic
    std: Statistic
    source: str


def load_splits(
    name: str = "mnist",
    data_dir: str | os.PathLike | None = None,
    *,
    device="cpu",
    dtype=torch.float32,
    standardize: str | bool = "none",
    val_size: int = 0,
    limit: int | None = None,
    allow_download: bool = True,
    log: Log | None = None,
) -> DatasetSplits:
    """Load ``name`` ("mnist", "fashion-mnist" or "idx") from ``data_dir`` as train/validation/test tensors.

    ``limit`` keeps the first ``limit`` training images; ``val_size`` then holds out the last ``val_size`` of
    those as the validation split. ``standardize`` ("none", "global" or "pixel"; True and False still mean
    "global" and "none") takes its statistics from the remaining training images and applies them to every
    split. For "mnist" and "fashion-mnist" a missing or corrupt cache is fetched unless ``allow_download`` is
    false; "idx" reads the four user-provided files (optionally ``.gz``) directly in ``data_dir``. ``log``
    receives progress and warnings (default: stderr). Raises :class:`DatasetError` for anything the caller
    can cause or fix.
    """
    log = log or _log_to_stderr
    if name not in DATASET_NAMES:
        raise DatasetError(f"dataset: expected one of {', '.join(DATASET_NAMES)}; got {name!r}")
    mode = standardize_mode(standardize)
    _check_split_arguments(limit, val_size)
    _check_dtype(dtype)
    root = _resolve_data_dir(data_dir)

    if name == "idx":
        paths, source = user_idx_paths(root), f"user-provided IDX files in {root}"
    else:
        paths, source = cached_known_dataset(name, root, allow_download, log)
    train_images, train_labels = read_image_label_pair(paths[TRAIN_IMAGES], paths[TRAIN_LABELS])
    test_images, test_labels = read_image_label_pair(paths[TEST_IMAGES], paths[TEST_LABELS])

    n_used = _resolve_limit(limit, len(train_images), paths[TRAIN_IMAGES])
    n_fit = n_used - _resolve_val_size(val_size, n_used)
    xs = {
        "train": _scaled_pixels(train_images[:n_fit]),
        "val": _scaled_pixels(train_images[n_fit:n_used]),
        "test": _scaled_pixels(test_images),
    }
    ys = {"train": train_labels[:n_fit], "val": train_labels[n_fit:n_used], "test": test_labels}

    mean, std = fit_standardization(mode, xs["train"])  # the training split only: never val or test
    xs = {split: apply_standardization(x, mean, std) for split, x in xs.items()}

    def x_out(split: str) -> torch.Tensor:
        # Cast on the CPU first so that only `dtype`-sized data travels to the device.
        return xs[split].to(dtype).to(device)

    def y_out(split: str) -> torch.Tensor:
        return torch.from_numpy(ys[split].astype(np.int64)).to(device)

    return DatasetSplits(
        name=name,
        train_x=x_out("train"),
        train_y=y_out("train"),
        val_x=x_out("val"),
        val_y=y_out("val"),
        test_x=x_out("test"),
        test_y=y_out("test"),
        num_classes=NUM_CLASSES,
        standardize=mode,
        mean=mean,
        std=std,
        source=source,
    )


def _log_to_stderr(message: str) -> None:
    print(message, file=sys.stderr)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_split_arguments(limit, val_size) -> None:
    """Reject non-integers before anything is fetched; the ranges are checked once the image count is known,
    so that their messages can state the whole allowed range."""
    if limit is not None and not _is_int(limit):
        raise DatasetError(f"--limit: expected a whole number of training images or None; got {limit!r}")
    if not _is_int(val_size):
        raise DatasetError(f"--val-size: expected a whole number of validation images; got {val_size!r}")


def _check_dtype(dtype) -> None:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise DatasetError(f"dtype: expected a floating-point torch.dtype such as torch.float32; got {dtype!r}")


def _resolve_limit(limit: int | None, n_train: int, train_file: Path) -> int:
    """Number of training images used: all of them, or the first ``limit``."""
    if limit is None:
        return n_train
    if not 1 <= limit <= n_train:
        raise DatasetError(
            f"--limit: expected 1..{n_train} (the training images in {train_file}); got {limit}"
        )
    return int(limit)


def _resolve_val_size(val_size: int, n_used: int) -> int:
    """Validation images held out of the ``n_used`` training images; at least one must stay for training."""
    if not 0 <= val_size < n_used:
        raise DatasetError(
            f"--val-size: expected 0..{n_used - 1} (it must leave at least one of the {n_used} training "
            f"images for training); got {val_size}"
        )
    return int(val_size)


def _resolve_data_dir(data_dir) -> Path:
    """The cache root as a Path; it may be missing (created when a fetch needs it) but not be a file or empty."""
    if data_dir is None:
        return default_data_dir()
    text = os.fspath(data_dir)
    # Path("") is ".", which would silently read (or fill) the current directory: an empty --data-dir is
    # almost always an unset shell variable, so it is refused instead.
    if isinstance(text, str) and not text.strip():
        raise DatasetError(
            f"--data-dir: expected a directory path (omit it for the default, {default_data_dir()}); got {text!r}"
        )
    root = Path(text).expanduser()
    if root.exists() and not root.is_dir():
        raise DatasetError(f"data directory {root}: expected a directory; found {path_kind(root)}")
    return root


def _scaled_pixels(images: np.ndarray) -> torch.Tensor:
    """``(N, 28, 28)`` uint8 -> ``(N, 784)`` float64 in [0, 1] (exactly k/255), in one vectorised step."""
    flat = images.reshape(len(images), NUM_PIXELS).astype(np.float64)  # astype copies: writable for torch
    return torch.from_numpy(flat).div_(255.0)
