"""Checkpoints of a side-by-side run: both models, both optimizers, the data order and the RNG state.

Everything in a checkpoint is a tensor, a number, a string, or a list/dict of those, so it loads with
``torch.load(..., weights_only=True)`` (no pickled code runs). Files are written to a temporary name in the
same directory, flushed to disk, and renamed over the old checkpoint, so a crash mid-write leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"


class CheckpointError(Exception):
    """A checkpoint cannot be written, read, or used with the current settings."""


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` atomically to ``path``."""
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            torch.save({"format_version": FORMAT_VERSION, **state}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint with ``weights_only=True`` onto the CPU; a missing, truncated or foreign file raises
    CheckpointError naming the path."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"--resume {path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated or non-checkpoint files
        raise CheckpointError(f"--resume {path}: the file is truncated or not a checkpoint "
                              f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from error
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        found = state.get("format_version") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"--resume {path}: expected a manual-backprop checkpoint of format "
                              f"{FORMAT_VERSION}; found format {found!r}")
    return state


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
