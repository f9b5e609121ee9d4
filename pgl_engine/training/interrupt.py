"""Turn Ctrl-C, SIGTERM, a stop file and a closed progress pipe into a flag the training loop checks between steps.

The stop file is how a GUI asks for a graceful stop on every OS (on Windows a child cannot be sent SIGTERM:
terminate() there is TerminateProcess, which runs no handler). A closed progress pipe means the GUI has gone
(Slicer quit): the run stops the same way, so its checkpoint and model are kept.
"""
from __future__ import annotations

import _thread
import os
import signal
import threading
import time


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


_asked = threading.Event()
_asking = threading.Lock()


def request_stop() -> None:
    """Interrupt the main thread as Ctrl-C would, once per process: the stop file and a closed pipe often both ask
    (Slicer cancels, then quits), and a second interrupt would cut short the checkpoint the first one started."""
    with _asking:
        if _asked.is_set():
            return
        _asked.set()
    _thread.interrupt_main()


def watch_stop_file(path: str, interval_s: float = 0.25) -> threading.Thread:
    """Once `path` exists, interrupt the main thread as Ctrl-C would (once): a training loop saves a checkpoint
    and stops, any other command stops with the cancelled exit code (contract.EXIT_CANCELLED)."""

    def watch() -> None:
        while not os.path.exists(path):
            time.sleep(interval_s)
        request_stop()

    watcher = threading.Thread(target=watch, name="pgl-stop-file", daemon=True)
    watcher.start()
    return watcher
