"""The one argument-and-path policy of every command line (train_mnist, parity, labs, the benchmarks, check).

Each check is a small function that raises ``ValueError("--flag ...: what is wrong; what to do")``; a command
turns that into ``error: ...`` and exit status 2 (``usage_error``), before it does any work. The same idea is
never checked twice in two ways:

- numbers: ``integer`` and ``number`` (ranges, finiteness, the 64-bit limit of anything torch stores as int64),
  ``seed``;
- output paths: ``output_file`` before any work (a path that would overwrite a checkpoint, an input file, another
  run's files or anything that is not JSON is refused: a summary never costs the user a file), ``write_output``
  at the end (atomic: a failed write leaves the old file whole), ``writable_dir``;
- input paths: ``input_file`` (a directory or a FIFO where a file should be is said to be one, not "missing").
"""

from __future__ import annotations

import json
import math
import os
import stat
import sys
import tempfile
from pathlib import Path

from mnist_data.errors import path_kind

INT64_MAX = 2 ** 63 - 1  # torch stores sizes, steps and counts as int64
SEED_LIMIT = 2 ** 64  # torch.Generator.manual_seed takes 64 bits
# Files that mark a directory as a training run's own (side_by_side/checkpoint.py, side_by_side/run_directory.py).
RUN_MARKERS = ("checkpoint.pt", ".lock")
JSON_PROBE_BYTES = 64 * 2 ** 20  # an existing output larger than this is not a summary this project wrote


def usage_error(prog: str, message: str) -> int:
    """Print ``prog: error: message`` as argparse does and return exit status 2 (for commands without a parser)."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


# --- numbers ------------------------------------------------------------------------------------------------------

def integer(value, flag: str, low: int | None = None, high: int = INT64_MAX, expected: str | None = None) -> int:
    """``value`` as an int within [low, high] (by default at most the int64 limit). ``expected`` replaces "an
    integer >= low" in the message (e.g. "a number of images >= 1")."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{flag}: expected an integer; got {value!r}")
    if low is not None and value < low:
        raise ValueError(f"{flag}: expected {expected or f'an integer >= {low}'}; got {value}")
    if value > high:
        limit = "2**63 - 1" if high == INT64_MAX else str(high)
        raise ValueError(f"{flag}: expected an integer <= {limit}; got {value}")
    return value


def number(value, flag: str, low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False, expected: str | None = None) -> float:
    """``value`` as a finite float within the bounds (open bounds exclude the bound itself). ``expected`` replaces
    "a number > low" in the message (e.g. "a bucket size > 0 MiB")."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{flag}: expected a finite number; got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        bound = f"a number {'>' if low_open else '>='} {low:g}"
        raise ValueError(f"{flag}: expected {expected or bound}; got {value:g}")
    if high is not None and (value >= high if high_open else value > high):
        raise ValueError(f"{flag}: expected a number {'<' if high_open else '<='} {high:g}; got {value:g}")
    return float(value)


def seed(value: int, flag: str = "--seed") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < SEED_LIMIT:
        raise ValueError(f"{flag}: expected 0 <= seed < 2**64 (what torch's generators take); got {value}")
    return value


# --- paths --------------------------------------------------------------------------------------------------------

def nonempty_path(text: str | None, flag: str) -> None:
    """An empty string is not a path (``Path('')`` would silently mean the current directory)."""
    if text is not None and not str(text).strip():
        raise ValueError(f"{flag}: expected a path; got {text!r}")


def path_argument(text: str) -> Path:
    """An argparse type: a non-empty path, as a Path (``Path('')`` would silently mean the current directory)."""
    if not text.strip():
        import argparse

        raise argparse.ArgumentTypeError(f"expected a path; got {text!r}")
    return Path(text)


def input_file(path, flag: str, what: str = "file") -> Path:
    """``path`` exists and is a regular file; the message says what it is otherwise."""
    nonempty_path(str(path), flag)
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ValueError(f"{flag} {path}: no such {what}") from None
    except OSError as error:
        raise ValueError(f"{flag} {path}: cannot be read ({error.strerror or error})") from None
    if not stat.S_ISREG(mode):
        raise ValueError(f"{flag} {path}: is {path_kind(path)}, not a {what}")
    return path


def is_run_directory(directory: Path) -> bool:
    """A training run's directory (it holds a checkpoint or a run lock)."""
    return any((Path(directory) / marker).exists() for marker in RUN_MARKERS)


def _holds_json(path: Path, size: int) -> bool:
    """An empty file or one whose whole content parses as JSON: what a summary this project wrote looks like."""
    if size == 0:
        return True
    if size > JSON_PROBE_BYTES:
        return False
    try:
        json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return True


def output_file(path, flag: str, own: tuple = ()) -> Path:
    """Check an output path before any work: a file can be written there, and writing it loses nothing.

    Refused: an empty path, a directory, a FIFO/device/socket, a missing or unwritable parent directory, an existing
    file that is not JSON (a checkpoint, an IDX or CSV input, an event file: anything this command did not write),
    and any existing file in a training run's directory other than the paths in ``own`` (the run's own
    ``summary.json``), since another run's summary is that run's record. Returns the path."""
    nonempty_path(None if path is None else str(path), flag)
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        info = None
    except OSError as error:
        raise ValueError(f"{flag} {path}: cannot be checked ({error.strerror or error})") from None
    owned = any(_same_path(path, mine) for mine in own)
    if info is not None:
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{flag} {path}: is {path_kind(path)}; expected a file path")
        if not owned and is_run_directory(path.resolve().parent):
            raise ValueError(f"{flag} {path}: is a file of the training run in {path.resolve().parent}; refusing "
                             "to overwrite it (give a path outside that run directory)")
        if not owned and not _holds_json(path, info.st_size):
            raise ValueError(f"{flag} {path}: exists and is not a JSON file this command could have written "
                             "(a checkpoint, a data file?); refusing to overwrite it: give another path")
    parent = path.parent
    if not parent.is_dir():
        raise ValueError(f"{flag} {path}: the directory {parent} does not exist")
    # A real (removed again) file: root passes every permission check, even on a read-only mount. The write is
    # atomic (write_output: a temporary file, then a rename), so the directory must take new files.
    try:
        descriptor, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=parent)
        os.close(descriptor)
        os.unlink(probe)
    except OSError as error:
        raise ValueError(f"{flag} {path}: cannot be written: its directory {parent} takes no new files "
                         f"({error.strerror or error})") from None
    return path


def _same_path(a: Path, b) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def write_output(path, text: str, flag: str) -> None:
    """Write ``text`` to ``path`` atomically (a temporary file in the same directory, then a rename), so a full
    disk or a kill leaves the old file whole. Raises OSError with the flag and path in its message."""
    path = Path(path)
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise OSError(f"{flag} {path}: cannot be written ({error.strerror or error})") from None
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except OSError as error:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise OSError(f"{flag} {path}: cannot be written ({error.strerror or error})") from None


def writable_dir(path, flag: str) -> Path:
    """Create the directory ``path`` if needed and make sure files can be created in it (with a real file, as in
    ``output_file``)."""
    nonempty_path(str(path), flag)
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path}: exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"{flag} {path}: cannot create the directory ({error.strerror or error})") from None
    try:
        descriptor, probe = tempfile.mkstemp(prefix=".probe.", dir=path)
        os.close(descriptor)
        os.unlink(probe)
    except OSError as error:
        raise ValueError(f"{flag} {path}: cannot create files in this directory ({error.strerror or error})") from None
    return path


def given_flags(fresh_parser, argv: list[str]) -> set[str]:
    """The dests of the options that ``argv`` gives explicitly, by argparse's own matching (abbreviations and
    ``--flag=value`` included). ``fresh_parser`` is changed: pass one built for this call only."""
    import argparse

    for action in fresh_parser._actions:
        action.default = argparse.SUPPRESS
    namespace, _ = fresh_parser.parse_known_args(argv)
    return set(vars(namespace))
