"""Jobs run one after another as one job (Refine: fine-tune, then segment again, then compare): the end of each
decides the next. JobMonitor and wait_for see one job, so one Start/Cancel button, one log and one outcome
cover every phase, and no panel keeps track of which phase runs.
"""
from __future__ import annotations

from typing import Callable

from .jobs import EXIT_CANCELLED, poll_until_finished
from .staged_job import FAILURES


class JobChain:
    """Runs `first`, then whatever next_job() makes of each finished job, until next_job() returns None."""

    def __init__(self, first):
        self.current = first
        self.done: dict = {}  # the current job's `done` event
        self.cancelled = False
        self.error: Exception | None = None  # what ended it on the GUI side (wait_for raises it as it is)
        self._code: int | None = None
        self._message = ""

    def next_job(self, finished, done: dict):
        """The job after `finished`, which ended well (`done`: its done event); None ends the chain well."""
        return None

    # --- what JobMonitor and wait_for use: the current job's, or the chain's own ----------------------------
    @property
    def stepping(self) -> bool:
        return getattr(self.current, "stepping", False)

    @property
    def preparing(self) -> bool:
        return getattr(self.current, "preparing", False)

    @property
    def engine(self):
        return getattr(self.current, "engine", None)

    @property
    def args(self) -> list:
        return getattr(self.current, "args", [])

    @property
    def exit_code(self) -> int | None:
        return self._code

    def finished(self) -> bool:
        return self._code is not None

    def poll(self, *args) -> list[dict]:
        if self.finished():
            return []
        events = self.current.poll(*args)
        self.done = next((e for e in reversed(events) if e.get("event") == "done"), self.done)
        if self.current.finished():
            self._advance()
        return events

    def _advance(self) -> None:
        job, code = self.current, self.current.exit_code
        if code != 0 or self.cancelled:
            self.error = getattr(job, "error", None)
            self._end(code or EXIT_CANCELLED, job.failure_message())
            return
        try:
            following = self.next_job(job, self.done)
        except FAILURES as e:  # the next phase could not start (e.g. a NodeError): its message goes to the user
            self.error = e
            self._end(1, str(e))
            return
        if following is None:
            self._end(0)
            return
        job.release()
        self.current, self.done = following, {}

    def _end(self, code: int, message: str = "") -> None:
        self._code, self._message = code, message

    def failure_message(self) -> str:
        return self._message or ("cancelled" if self.cancelled else "")

    def cancel(self, grace_s: float | None = None) -> None:
        self.cancelled = True
        if not self.current.finished():
            self.current.cancel(grace_s)

    def release(self) -> None:
        """The current job's folders go (each earlier job's went when the next started)."""
        self.current.release()

    def wait(self, on_event: Callable[[dict], None] | None = None, timeout: float | None = None,
             interval: float = 0.05, keep_alive: Callable[[], None] | None = None) -> int:
        return poll_until_finished(self, on_event, timeout, interval, keep_alive)
