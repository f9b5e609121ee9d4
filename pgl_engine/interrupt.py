"""Turn Ctrl-C and SIGTERM into a flag the training loop checks between steps."""
from __future__ import annotations

import signal
import threading


class StopRequest:
    """Context manager: while active, SIGINT/SIGTERM set `requested`; a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
