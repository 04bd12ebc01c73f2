"""The one exception of the data package, and the type of its progress callback."""

from __future__ import annotations

from collections.abc import Callable

Log = Callable[[str], None]
"""Receives progress lines and warnings (``load_splits`` defaults to printing them on stderr)."""


class DatasetError(Exception):
    """A dataset cannot be provided; the message names the file, directory or argument, what was expected
    and what was found."""
