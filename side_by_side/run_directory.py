"""One training process per run directory, and no leftovers from killed or failed runs in it.

Two ``--resume``s of the same checkpoint at once would both train, both write event files and overwrite each
other's checkpoints. ``RunLock`` takes an exclusive ``fcntl.flock`` on ``<run_dir>/.lock`` (the kernel drops it
when the process dies, however it dies, so a stale lock never blocks anyone); the second process fails at once,
naming the holder's pid. While holding the lock it is safe to remove ``.checkpoint.pt.*.tmp`` files: they can only
be orphans of a write that was killed (kill -9, power loss) before its rename.

``RunLock(..., fresh=True)`` is for a directory this run has just created: when the run fails before its first
training step (nothing but the config text would be in it), ``release(failed=True, steps=0)`` removes the whole
directory, so failed runs leave no empty run directories behind; a directory that already held files when the
lock was taken is never removed.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

LOCK_NAME = ".lock"
ORPHAN_PATTERN = ".checkpoint.pt.*.tmp"  # the temporary name checkpoint.save_checkpoint writes before its rename


class RunLockError(Exception):
    """The run directory is in use by another process, or cannot be locked at all."""


class RunLock:
    """An exclusive lock on ``run_dir`` for the life of one training process."""

    def __init__(self, run_dir: Path, fresh: bool = False):
        self.run_dir, self.fresh = Path(run_dir), fresh
        self.path = self.run_dir / LOCK_NAME
        self._descriptor: int | None = None
        self._was_empty = False
        self.removed_orphans: list[Path] = []

    def acquire(self) -> "RunLock":
        try:
            return self._acquire()
        except RunLockError:
            if self._was_empty:  # a directory this run has just made, that nobody else can be using
                shutil.rmtree(self.run_dir, ignore_errors=True)
            raise

    def _acquire(self) -> "RunLock":
        # Only a directory that was empty when the run began is ever removed: a caller's own files are never touched.
        self._was_empty = self.fresh and self.run_dir.is_dir() and not any(self.run_dir.iterdir())
        try:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise RunLockError(f"run directory {self.run_dir}: cannot open its lock file {LOCK_NAME} "
                               f"({error.strerror or error}); is the directory read-only or the disk full?") from error
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = _read_pid(descriptor)
            os.close(descriptor)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunLockError(f"run directory {self.run_dir} is in use by another training process"
                                   f"{f' (pid {holder})' if holder else ''}; wait for it to finish or stop it "
                                   f"first") from None
            raise RunLockError(f"run directory {self.run_dir}: cannot lock {self.path} ({error.strerror})") from error
        self._descriptor = descriptor
        try:  # the holder's pid, for the message of the process that is turned away
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # a full disk: the lock holds all the same, the message just names no pid
        try:  # root ignores permission bits: only a real write shows a read-only mount or an immutable directory
            probe, name = tempfile.mkstemp(prefix=".write-test.", dir=self.run_dir)
            os.close(probe)
            os.unlink(name)
        except OSError as error:
            self.release()
            raise RunLockError(f"run directory {self.run_dir}: cannot write in it ({error.strerror or error}); "
                               f"its checkpoint and event files stay as they are") from error
        self.removed_orphans = remove_orphaned_temporaries(self.run_dir)
        return self

    def release(self, failed: bool = False, steps: int = 0) -> bool:
        """Drop the lock; for a fresh directory of a run that failed before any step, remove the directory.
        Returns whether the directory was removed."""
        if self._descriptor is not None:
            fcntl.flock(self._descriptor, fcntl.LOCK_UN)
            os.close(self._descriptor)
            self._descriptor = None
        if self._was_empty and failed and steps == 0 and self.run_dir.is_dir():
            shutil.rmtree(self.run_dir, ignore_errors=True)
            return not self.run_dir.exists()
        return False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, kind, error, traceback) -> bool:
        self.release()  # the directory is only ever removed by an explicit release(failed=True, steps=0)
        return False


def remove_orphaned_temporaries(run_dir: Path) -> list[Path]:
    """Delete the temporary checkpoint files of killed writes in ``run_dir``; call only with the lock held."""
    removed = []
    for path in sorted(Path(run_dir).glob(ORPHAN_PATTERN)):
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            pass  # a read-only directory: the next write will fail with a clear message anyway
    return removed


def _read_pid(descriptor: int) -> int | None:
    try:
        text = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None
