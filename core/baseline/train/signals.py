"""Graceful stop on SIGINT/SIGTERM: finish the step, checkpoint, exit 130/143.

The first signal only sets a flag that the training loop checks after each step; a second
one raises ``KeyboardInterrupt`` at once (atomic writes leave no partial file behind).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType

log = logging.getLogger("baseline")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Set while a second signal's ``KeyboardInterrupt`` is on its way out: a write that fails
#: meanwhile failed because of it (torch.save's C++ writer turns an exception raised in its
#: write callback into a ``RuntimeError``), see :func:`aborting`.
_ABORTING = threading.Event()


def aborting() -> bool:
    """Whether a second stop signal has aborted training in this process (its
    ``KeyboardInterrupt`` may have been swallowed by a library and re-raised as another
    error, which should then be the abort, not a failure)."""
    return _ABORTING.is_set()


class StopRequest:
    """Set by the handler: the signal that asked training to stop, if any."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def name(self) -> str:
        """``SIGINT`` or ``SIGTERM``."""
        return signal.Signals(self.signum).name if self.signum is not None else ""

    @property
    def exit_code(self) -> int:
        """The conventional status: 128 + signal number."""
        return 128 + (self.signum or 0)


@contextlib.contextmanager
def graceful_stop() -> Iterator[StopRequest]:
    """Install the handlers for the duration of the block (main thread only)."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handle(signum: int, _frame: FrameType | None) -> None:
        if request.signum is not None:
            _ABORTING.set()
            raise KeyboardInterrupt  # second signal: abort now
        request.signum = signum
        log.warning(
            "%s received: stopping after this step and saving a checkpoint "
            "(send it again to abort at once)",
            signal.Signals(signum).name,
        )

    _ABORTING.clear()
    previous = {signum: signal.signal(signum, handle) for signum in STOP_SIGNALS}
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _ABORTING.clear()
