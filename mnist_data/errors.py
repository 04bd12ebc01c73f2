"""The one exception of the data package, the type of its progress callback, and how its messages (and every
command's, through experiments/arguments.py) name what was found at a path."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable

Log = Callable[[str], None]
"""Receives progress lines and warnings (``load_splits`` defaults to printing them on stderr)."""


class DatasetError(Exception):
    """A dataset cannot be provided; the message names the file, directory or argument, what was expected
    and what was found."""


def path_kind(path) -> str:
    """What is at ``path``, for a message: "a regular file", "a directory", "a FIFO (named pipe)", "a socket",
    "a device", or "nothing" (a directory or FIFO where a file should be is said to be one, not "missing")."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "nothing"
    except OSError as error:
        return f"something that cannot be examined ({error.strerror or error})"
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"
