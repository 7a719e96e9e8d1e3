"""Ctrl-C that waits for the training step under way, so that a checkpoint holds whole steps."""

from __future__ import annotations

import contextlib
import signal
import threading

__all__ = ["DeferredInterrupt"]


class DeferredInterrupt:
    """Ctrl-C (SIGINT) during a training step raises KeyboardInterrupt after the step, not inside it.

    Use it as a context manager around the loop and wrap each step in
    ``with interrupt.step():``; between steps, ``raise_if_requested()``
    raises the deferred KeyboardInterrupt. Outside a step a Ctrl-C raises at
    once, and so does a second Ctrl-C inside one; ``in_step`` then tells
    that a step was cut short. Outside the main thread, where Python
    delivers no signals, nothing is deferred.
    """

    def __init__(self):
        self.requested = self.in_step = False
        self._previous = None

    def __enter__(self):
        self.requested = self.in_step = False
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _on_sigint(self, signum, frame):
        if self.requested or not self.in_step:
            raise KeyboardInterrupt
        self.requested = True

    @contextlib.contextmanager
    def step(self):
        """The block of one step: a Ctrl-C inside it is deferred to its end."""
        self.in_step = True
        yield
        self.in_step = False  # not reached when the step raised: it stays marked as cut short

    def raise_if_requested(self):
        """Raise the KeyboardInterrupt of a Ctrl-C deferred during the last step."""
        if self.requested:
            raise KeyboardInterrupt
