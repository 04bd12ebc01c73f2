"""The IDX format of MNIST's files: reading (plain or ``.gz``, with the size bounded by the header) and writing.

IDX layout: the magic number ``00 00 08 ndim`` (unsigned bytes, ``ndim`` dimensions), then ``ndim`` big-endian
uint32 sizes, then the bytes in row-major order. Images are ``N x 28 x 28``, labels ``N``.

A ``.gz`` file is decompressed incrementally and never past the size its header announces: a small file that
inflates to gigabytes (a gzip bomb, or plain corruption) is refused after reading one byte more than announced,
and a header announcing more than :data:`MAX_IDX_BYTES` is refused before any data is read.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mnist_data.errors import DatasetError, path_kind

IMAGE_SHAPE = (28, 28)
NUM_PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
NUM_CLASSES = 10

# The four files of every dataset, with torchvision's (and LeCun's) names, uncompressed.
TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
IDX_FILE_NAMES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

# The largest IDX file this tool reads (header included). MNIST's largest file has 47 040 016 bytes; 1 GiB
# is 1.3 million 28x28 images, more than any MNIST-like set, and its float64 copy alone takes 8 GiB.
MAX_IDX_BYTES = 1 << 30

_IDX_UBYTE = 0x08


def read_image_label_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 28, 28)`` uint8 and labels ``(N,)`` uint8 from two IDX files that must agree on N."""
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    if images.shape[1:] != IMAGE_SHAPE:
        raise DatasetError(
            f"{images_path}: expected images of {IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]} pixels; "
            f"found {images.shape[1]}x{images.shape[2]}"
        )
    if len(images) != len(labels):
        raise DatasetError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels; "
            "expected the same count"
        )
    if len(images) == 0:
        raise DatasetError(f"{images_path}: expected at least one image; found 0")
    if labels.max() >= NUM_CLASSES:
        bad = int(np.argmax(labels >= NUM_CLASSES))
        raise DatasetError(
            f"{labels_path}: expected labels 0..{NUM_CLASSES - 1}; found {int(labels[bad])} at index {bad}"
        )
    return images, labels


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An unsigned-byte IDX file (``.gz`` allowed) as a read-only uint8 array of the shape in its header."""
    compressed = path.suffix == ".gz"
    try:
        stream = gzip.open(path, "rb") if compressed else open(path, "rb")
    except OSError as exc:
        raise DatasetError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    with stream:
        try:
            return _parse_idx(stream, path, ndim, compressed)
        except (OSError, EOFError, zlib.error) as exc:  # gzip reports bad data at whichever read meets it
            if compressed:
                raise DatasetError(f"{path}: expected a gzip file; it does not decompress ({exc})") from exc
            raise DatasetError(f"{path}: cannot be read ({exc.strerror or exc})") from exc


def _parse_idx(stream: BinaryIO, path: Path, ndim: int, compressed: bool) -> np.ndarray:
    """Header, size checks and data from an open stream; reads at most one byte past the announced size."""
    magic = bytes([0, 0, _IDX_UBYTE, ndim])
    head = stream.read(4)
    if len(head) < 4:
        raise DatasetError(f"{path}: expected an IDX file; found only {len(head)} bytes (truncated?)")
    if head != magic:
        raise DatasetError(
            f"{path}: expected IDX magic number 0x{magic.hex()} (unsigned bytes, {ndim} dimension(s)); "
            f"found 0x{head.hex()} - not an IDX {'image' if ndim == 3 else 'label'} file, or corrupt"
        )
    header_size = 4 + 4 * ndim
    sizes = stream.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise DatasetError(f"{path}: expected a {header_size}-byte IDX header; the file has {4 + len(sizes)} bytes")
    shape = struct.unpack(f">{ndim}I", sizes)
    dims = "x".join(map(str, shape))
    payload = int(np.prod(shape, dtype=np.int64))
    expected_size = header_size + payload
    uncompressed = " uncompressed" if compressed else ""
    if expected_size > MAX_IDX_BYTES:
        raise DatasetError(
            f"{path}: the header announces {dims} bytes of data ({expected_size} bytes{uncompressed} in all), "
            f"more than the {MAX_IDX_BYTES} bytes this tool reads from one IDX file; corrupt, or not MNIST-like"
        )

    data = bytearray(payload)  # filled in place: the announced size is the most ever held in memory
    view, filled = memoryview(data), 0
    while filled < payload:
        n = stream.readinto(view[filled:])
        if not n:
            break
        filled += n
    if filled < payload:
        raise DatasetError(
            f"{path}: the header announces {dims} bytes of data, so expected {expected_size} bytes{uncompressed}; "
            f"found {header_size + filled} (truncated)"
        )
    if stream.read(1):
        if compressed:  # never inflate further: the rest could be gigabytes
            raise DatasetError(
                f"{path}: the header announces {dims} bytes of data, so expected {expected_size} bytes "
                "uncompressed; the gzip stream holds more and was not decompressed further (trailing data, "
                "or a gzip bomb)"
            )
        raise DatasetError(
            f"{path}: the header announces {dims} bytes of data, so expected {expected_size} bytes; "
            f"found {os.fstat(stream.fileno()).st_size} (trailing data)"
        )
    array = np.frombuffer(data, dtype=np.uint8).reshape(shape)
    array.flags.writeable = False
    return array


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array (magic, big-endian sizes, data)."""
    header = bytes([0, 0, _IDX_UBYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def user_idx_paths(directory: Path) -> dict[str, Path]:
    """The four files in a user's directory; each may be plain or ``.gz`` (plain wins when both exist)."""
    if not directory.is_dir():
        kind = path_kind(directory)
        raise DatasetError(f"data directory {directory}: expected a directory holding IDX files; "
                           + ("it does not exist" if kind == "nothing" else f"found {kind}"))
    paths, missing = {}, []
    for name in IDX_FILE_NAMES:
        candidates = [directory / name, directory / f"{name}.gz"]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            wrong = next((p for p in candidates if p.exists()), None)
            if wrong is not None:  # there, but a directory or a FIFO: not "missing"
                raise DatasetError(f"data directory {directory}: {wrong.name} is {path_kind(wrong)}; expected an "
                                   "IDX file")
            missing.append(name)
        else:
            paths[name] = found
    if missing:
        raise DatasetError(
            f"data directory {directory}: expected the IDX files {', '.join(IDX_FILE_NAMES)} (each may end in "
            f".gz); missing {', '.join(missing)}"
        )
    return paths
