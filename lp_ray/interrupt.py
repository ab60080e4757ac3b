"""Ctrl-C that is not lost.

Python raises KeyboardInterrupt at whatever bytecode the main thread runs when SIGINT arrives. If that is
a `__del__` method, a gc or weakref callback, or library code with a broad `except`, the exception is
swallowed and a long command carries on as if nothing had happened (seen in the test suite: `lp-ray imp`
ignored a Ctrl-C and trained the rest of its rounds). So the handler installed here also records the
signal, and the wait loops of long commands call `check()`, which raises it again.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_requested = threading.Event()


def _handler(signum, frame) -> None:
    _requested.set()
    raise KeyboardInterrupt


@contextlib.contextmanager
def recorded_sigint() -> Iterator[None]:
    """Install the recording SIGINT handler for the duration of a command (main thread only: that is
    where Python runs signal handlers; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _requested.clear()
    previous = signal.signal(signal.SIGINT, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def check() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed, even if its first KeyboardInterrupt was swallowed."""
    if _requested.is_set():
        raise KeyboardInterrupt
