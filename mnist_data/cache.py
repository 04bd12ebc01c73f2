"""The verified cache: files checked by sha256 before they are read, bad ones set aside, new ones written
atomically."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mnist_data.errors import DatasetError, Log


@dataclass(frozen=True)
class FileSpec:
    """One uncompressed file of a known dataset: its name in the raw directory, its size and its sha256."""

    name: str
    size: int
    sha256: str


def unverified_files(raw_dir: Path, specs: Iterable[FileSpec], log: Log) -> list[str]:
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
    found = sha256_file(path)
    if found == spec.sha256:
        return None
    size = path.stat().st_size
    return (
        f"checksum mismatch: expected sha256 {spec.sha256} ({spec.size} bytes); "
        f"found sha256 {found} ({size} bytes)"
    )


def _move_aside(path: Path, log: Log) -> None:
    """Rename a bad file to ``<name>.corrupt`` so it is never read, yet stays inspectable. An earlier aside file is
    never overwritten (it may be the one to look at): later ones are ``<name>.corrupt.2``, ``.corrupt.3``, ..."""
    if not path.is_file():
        return
    aside = path.with_name(path.name + ".corrupt")
    number = 1
    while aside.exists() or aside.is_symlink():
        number += 1
        aside = path.with_name(f"{path.name}.corrupt.{number}")
    try:
        os.replace(path, aside)
    except OSError as exc:
        log(f"WARNING: could not move {path} aside ({exc.strerror or exc}); it will not be used")
    else:
        log(f"moved the bad file to {aside}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(data: bytes, expected: str, what: str) -> None:
    found = hashlib.sha256(data).hexdigest()
    if found != expected:
        raise DatasetError(f"{what}: checksum mismatch: expected sha256 {expected}; found {found}")


def make_writable_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(
            f"data directory {directory}: expected to create it for the download; failed ({exc.strerror or exc})"
        ) from exc
    if not os.access(directory, os.W_OK | os.X_OK):
        raise DatasetError(f"data directory {directory}: expected it to be writable for the download; it is not")


def write_atomic(path: Path, data: bytes) -> None:
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
