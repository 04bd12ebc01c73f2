"""Checkpoints of a side-by-side run: both models, both optimizers, the data order and the RNG state.

Everything in a checkpoint is a tensor, a number, a string, or a list/dict of those, so it loads with
``torch.load(..., weights_only=True)`` (no pickled code runs). Files are written to a temporary name in the
same directory, flushed to disk, and renamed over the old checkpoint, so a crash mid-write (or a full disk)
leaves the previous checkpoint intact; a failed write removes its temporary file.

Format 2 adds a sha256 checksum of every top-level field, and a checkpoint is validated before anything in it is
used (``checkpoint_schema``); a state holding NaN or Inf is never written.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import torch

from side_by_side.checkpoint_schema import (  # noqa: F401
    CheckpointError,
    content_checksums,
    validate_for_run,
    validate_structure,
    verify_checksums,
)

FORMAT_VERSION = 2
CHECKPOINT_NAME = "checkpoint.pt"


def non_finite_field(value, field: str = "") -> str | None:
    """The dotted name of the first floating-point tensor in ``value`` holding NaN or Inf, or None (one sum per
    tensor; only a tensor whose sum is not finite is checked entry by entry)."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() and value.numel() and not torch.isfinite(value.sum()) and not torch.isfinite(
                value).all():
            return field
    elif isinstance(value, dict):
        for key, item in value.items():
            found = non_finite_field(item, f"{field}.{key}" if field else str(key))
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = non_finite_field(item, f"{field}[{index}]")
            if found:
                return found
    return None


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` atomically to ``path``, with a checksum of every field. Refuses a state holding NaN or Inf;
    a write that fails (a full disk, a read-only directory) raises CheckpointError, removes its temporary file and
    leaves the previous checkpoint at ``path`` as it was."""
    path = Path(path)
    kept = (f"the previous checkpoint {path} is unchanged" if path.exists()
            else "no checkpoint had been written yet")
    bad = non_finite_field(state)
    if bad:
        raise CheckpointError(f"refusing to write {path}: {bad} holds NaN or Inf; {kept}")
    content = {"format_version": FORMAT_VERSION, **state}
    content["checksums"] = content_checksums(content)
    buffer = io.BytesIO()  # serialised in memory first, so a full disk shows as ENOSPC, not as a zip-writer error
    torch.save(content, buffer)
    temporary = None
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(buffer.getbuffer())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise CheckpointError(f"cannot write the checkpoint {path}: {error.strerror or error}; {kept}") from error
        raise


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint with ``weights_only=True`` onto the CPU, verify its checksums and its structure; a
    missing, truncated, damaged, older or foreign file raises CheckpointError naming the path (and the field)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"--resume {path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated or non-checkpoint files
        raise CheckpointError(f"--resume {path}: the file is truncated or not a checkpoint "
                              f"({type(error).__name__}: "
                              f"{str(error).splitlines()[0] if str(error) else ''})") from error
    found = state.get("format_version") if isinstance(state, dict) else type(state).__name__
    if isinstance(found, int) and not isinstance(found, bool) and 0 < found < FORMAT_VERSION:
        raise CheckpointError(f"--resume {path}: the checkpoint is of format {found}, written by an older version "
                              f"without checksums; this version reads format {FORMAT_VERSION} only: start a new run")
    if found != FORMAT_VERSION:
        raise CheckpointError(f"--resume {path}: expected a manual-backprop checkpoint of format "
                              f"{FORMAT_VERSION}; found format {found!r}")
    content = {key: value for key, value in state.items() if key != "checksums"}
    if "checksums" not in state:
        raise CheckpointError(f"--resume {path}: checksums: missing")
    verify_checksums(path, content, state["checksums"])
    validate_structure(path, content)
    return content


def _flat(settings: dict, prefix: str = "") -> dict:
    """{"optimizer": {"lr": 0.1}} -> {"optimizer.lr": 0.1}, so a difference names the one setting."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_compatible(path: Path, saved: dict, current: dict) -> None:
    """Refuse to resume when anything that shapes the run differs; name every differing setting."""
    saved, current = _flat(saved), _flat(current)
    differences = [f"{key}: checkpoint has {saved.get(key)!r}, this run has {current.get(key)!r}"
                   for key in sorted(set(saved) | set(current)) if saved.get(key) != current.get(key)]
    if differences:
        raise CheckpointError(f"--resume {path}: the checkpoint is from a different config; "
                              + "; ".join(differences))
