"""Ctrl-C and SIGTERM: the one home of enrich's signal handling.

A batch run stopped by cron's `timeout`, systemd or a user saves what it did and exits 130, so the next start
resumes: SIGTERM acts as Ctrl-C. Handlers belong to the main thread; elsewhere (a test's thread, an
embedding program's worker) these change nothing and a signal does what it did before.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt in the main thread, as Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class StopRequest:
    """Within `armed()`, the first Ctrl-C or SIGTERM only sets `requested` (the work under way finishes and is
    saved: a training step and its checkpoint); a second one stops at once (KeyboardInterrupt).

    A signal the process was started ignoring stays ignored (SIGINT in a background job: `nohup ... &`). The
    handler only sets a flag: it runs between two bytecodes of the main thread, which may hold a lock (a log
    line's) at that instant, so it must not print or wait on anything.
    """

    def __init__(self) -> None:
        self.requested = False

    def _request(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    @contextlib.contextmanager
    def armed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {
            sig: handler
            for sig in (signal.SIGINT, signal.SIGTERM)
            if (handler := signal.getsignal(sig)) is not signal.SIG_IGN
        }
        for sig in previous:
            signal.signal(sig, self._request)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
