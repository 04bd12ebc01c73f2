"""TensorBoard writing that fails with one clear message instead of two tracebacks.

``SummaryWriter`` writes its event files from a background thread: on a full disk (or a directory that became
read-only) that thread dies with a traceback printed by ``threading.excepthook``, and the main thread gets the same
``OSError`` at some later call. ``GuardedLogger`` wraps a ``RunLogger``: the first ``OSError`` from any of its
methods becomes a ``LoggingError`` naming the run directory and the reason, later calls (``close`` in a ``finally``)
do nothing, and the writer thread's own traceback is not printed (the main thread reports the error).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread


class LoggingError(Exception):
    """TensorBoard events could not be written."""


class GuardedLogger:
    """Forwards every method call to ``logger``; see the module docstring."""

    def __init__(self, run_dir: Path, factory: Callable[[], object]):
        self.run_dir = Path(run_dir)
        self.failed: LoggingError | None = None
        self._previous_hook = threading.excepthook
        threading.excepthook = self._quiet_writer_thread
        try:
            self.logger = self._guard(factory)()
        except BaseException:
            threading.excepthook = self._previous_hook
            raise

    def _quiet_writer_thread(self, args) -> None:
        if isinstance(args.thread, _AsyncWriterThread) and isinstance(args.exc_value, OSError):
            return  # the main thread gets the same error at its next call and reports it
        self._previous_hook(args)

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
        try:
            if self.failed is None:
                self._guard(self.logger.close)()
            else:  # stop the writer threads; the error is already on its way
                try:
                    self.logger.close()
                except OSError:
                    pass
        finally:
            if threading.excepthook == self._quiet_writer_thread:
                threading.excepthook = self._previous_hook
