"""TensorBoard writing that fails with one clear message instead of two tracebacks.

``SummaryWriter`` writes its event files from a background thread: on a full disk (or a directory that became
read-only) that thread dies with a traceback printed by ``threading.excepthook``, and the main thread gets the same
``OSError`` at some later call. ``GuardedLogger`` wraps a ``RunLogger``: the first ``OSError`` from any of its
methods becomes a ``LoggingError`` naming the run directory and the reason, later calls (``close`` in a ``finally``)
do nothing, and the writer thread's own traceback is not printed (the main thread reports the error).
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Callable

from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread


class LoggingError(Exception):
    """TensorBoard events could not be written."""


def _quiet_writer_threads(previous):
    def hook(args):
        if isinstance(args.thread, _AsyncWriterThread) and isinstance(args.exc_value, OSError):
            return  # the main thread gets the same error at its next call and reports it
        previous(args)
    hook.quiets_writer_threads = True
    return hook


def _install_quiet_hook() -> None:
    """Once per process, and left in place: a writer thread may die after its logger was closed."""
    if not getattr(threading.excepthook, "quiets_writer_threads", False):
        threading.excepthook = _quiet_writer_threads(threading.excepthook)


class GuardedLogger:
    """Forwards every method call to ``logger``; see the module docstring."""

    def __init__(self, run_dir: Path, factory: Callable[[], object]):
        self.run_dir = Path(run_dir)
        self.failed: LoggingError | None = None
        _install_quiet_hook()
        self.logger = self._guard(factory)()

    def _guard(self, method: Callable) -> Callable:
        def guarded(*args, **kwargs):
            if self.failed is not None:
                return None
            try:
                return method(*args, **kwargs)
            except OSError as error:
                reason = error.strerror or str(error)
                self.failed = LoggingError(f"cannot write TensorBoard events in {self.run_dir}: {reason}"
                                           f"{f' ({error.filename})' if error.filename else ''}; checkpoints "
                                           f"already written there are unchanged")
                raise self.failed from error
        return guarded

    def __getattr__(self, name: str):
        attribute = getattr(self.logger, name)
        return self._guard(attribute) if callable(attribute) else attribute

    def close(self) -> None:
        """Close the writers. Called in a ``finally`` while another error propagates (a full disk failing the
        checkpoint first, say), a failure here is not raised: the first error is the one to report."""
        if self.failed is None and sys.exc_info()[1] is None:
            self._guard(self.logger.close)()
            return
        try:  # stop the writer threads; an error is already on its way
            self.logger.close()
        except OSError:
            pass
