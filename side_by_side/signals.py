"""Stopping a training run cleanly on Ctrl-C or SIGTERM: the signal is noted, the loop stops after its step."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class DeferredInterrupt:
    """While active, a first Ctrl-C (SIGINT) or SIGTERM (what ``timeout``, ``docker stop`` and batch schedulers
    send) only records the signal; the loop stops after the current step with a checkpoint, so both models are
    saved in a consistent state. A second signal of the same kind acts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signal_number: int | None = None
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.signal_number is not None

    @property
    def signal_name(self) -> str | None:
        return signal.Signals(self.signal_number).name if self.signal_number is not None else None

    def _handle(self, signum, frame):
        self.signal_number = signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {number: signal.signal(number, self._handle) for number in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous = {}
        return False


@contextmanager
def signals_held():
    """While active, Ctrl-C and SIGTERM are held back (noted, not acted on): for the short writes that must finish
    once begun, so that summary.json and the checkpoint describe the same step even after a second Ctrl-C. Outside
    the main thread (where handlers cannot be set) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, lambda signum, frame: None) for number in DeferredInterrupt.SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
