"""A small, learnable dataset written in MNIST's IDX format, for tests that must not depend on real data.

Image ``i`` has label ``i % 10``; its class shows as a bright 5x5 block whose position depends on the label
(two rows of five positions) over a dim noisy background, so even a tiny MLP beats chance quickly.

This writer is deliberately independent of ``mnist_data`` so that it can test that parser.
"""

from __future__ import annotations

import gzip as gzip_module
import os
import struct
from pathlib import Path

import numpy as np

SIDE = 28
NUM_CLASSES = 10
BLOCK = 5


def write_fake_idx(directory, n_train: int = 64, n_test: int = 32, seed: int = 0, gzip: bool = False) -> None:
    """Write train/t10k images and labels (IDX, optionally ``.gz``) into ``directory`` (created if needed)."""
    directory = Path(os.fspath(directory))
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % NUM_CLASSES).astype(np.uint8)
        images = fake_images(labels, rng)
        _write(directory / f"{prefix}-images-idx3-ubyte", _idx(images), gzip)
        _write(directory / f"{prefix}-labels-idx1-ubyte", _idx(labels), gzip)


def fake_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(N, 28, 28)`` uint8: noise in 0..59 plus, for label k, a 5x5 block of 200..255 at a k-dependent place."""
    n = len(labels)
    images = rng.integers(0, 60, size=(n, SIDE, SIDE), dtype=np.uint8)
    rows = 3 + (labels // 5).astype(np.int64) * 14  # two bands of blocks: rows 3..7 and 17..21
    cols = 1 + (labels % 5).astype(np.int64) * 5  # five blocks per band: cols 1..5, 6..10, ..., 21..25
    offsets = np.arange(BLOCK)
    row_index = (rows[:, None] + offsets)[:, :, None]  # (N, 5, 1)
    col_index = (cols[:, None] + offsets)[:, None, :]  # (N, 1, 5)
    images[np.arange(n)[:, None, None], row_index, col_index] = rng.integers(
        200, 256, size=(n, BLOCK, BLOCK), dtype=np.uint8
    )
    return images


def _idx(array: np.ndarray) -> bytes:
    """IDX: magic 00 00 08 ndim, big-endian uint32 sizes, then the unsigned bytes row-major."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write(path: Path, data: bytes, compress: bool) -> None:
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip_module.compress(data)
    path.write_bytes(data)
