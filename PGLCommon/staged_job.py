"""An engine job with GUI-thread work before it starts and after it ends, done a slice at a time in poll().

prepare (e.g. writing the scan) -> the engine subprocess -> finish (e.g. reading its result into segments). poll()
is what the panel's QTimer and wait() already call, so the event loop runs between the slices (steps.py). It
looks like an EngineJob to JobMonitor and wait_for; `result` holds what finish returned. Without `start` it is just
the prepare work (e.g. a Dice computed after a job).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from .jobs import EXIT_CANCELLED, poll_until_finished
from .steps import SLICE_S, StepGenerator, Steps

PREPARE, ENGINE, FINISH, ENDED = "prepare", "engine", "finish", "ended"
FAILURES = (ValueError, OSError, RuntimeError)  # NodeError, file and VTK failures: the message goes to the user


class StagedJob:
    def __init__(self, prepare: StepGenerator, start: Callable[[], object] | None = None,
                 finish: Callable[[object], StepGenerator] | None = None, work: Path | None = None):
        """`prepare` returns warning messages (shown once the engine runs) or None; `start()` starts the engine
        job (owning `work` from then on); `finish(engine_job)` reads what it wrote, before the job releases it."""
        self.steps = Steps(prepare)
        self._start, self._finish = start, finish
        self.work = Path(work) if work else None
        self.stage = PREPARE
        self.engine = None
        self.result = None
        self.cancelled = False
        self._code: int | None = None
        self._message = ""
        self.error: Exception | None = None  # what ended it on the GUI side (wait_for raises it as it is)

    # --- what JobMonitor and wait_for use ----------------------------------------------------------------
    @property
    def stepping(self) -> bool:
        """GUI-thread work is waiting: poll again soon."""
        return self.stage in (PREPARE, FINISH)

    @property
    def preparing(self) -> bool:
        return self.stage == PREPARE

    @property
    def args(self) -> list:
        return self.engine.args if self.engine is not None else []

    @property
    def cleanup(self) -> list:
        return self.engine.cleanup if self.engine is not None else [p for p in [self.work] if p]

    @property
    def exit_code(self) -> int | None:
        if self.stage != ENDED:
            return None
        return self._code if self._code is not None else self.engine.exit_code

    def finished(self) -> bool:
        return self.stage == ENDED

    def poll(self, budget_s: float = SLICE_S) -> list[dict]:
        events: list[dict] = []
        try:
            if self.stage == PREPARE and self.steps.advance(budget_s):
                self._begin_engine()
            elif self.stage == ENGINE:
                events += self.engine.poll()
                if self.engine.finished():
                    if self.engine.exit_code == 0 and self._finish is not None:
                        self.stage, self.steps = FINISH, Steps(self._finish(self.engine))
                    else:
                        self.stage = ENDED
            elif self.stage == FINISH and self.steps.advance(budget_s):
                self.result, self.stage = self.steps.value, ENDED
        except FAILURES as e:
            self.error = e
            self._end(1, str(e))
        return events

    def _begin_engine(self) -> None:
        warnings = self.steps.value or []
        if self._start is None:
            self.result = self.steps.value
            self._end(0)
            return
        self.engine = self._start()
        self.stage = ENGINE
        for message in warnings:  # shown with the engine's own warnings, in order
            self.engine.events.put({"event": "warning", "message": message})

    def _end(self, code: int, message: str = "") -> None:
        self.steps.close()
        self._code, self._message, self.stage = code, message, ENDED

    def failure_message(self) -> str:
        if self._message or self.engine is None:
            return self._message or ("cancelled" if self.cancelled else "")
        return self.engine.failure_message()

    def cancel(self, grace_s: float | None = None) -> None:
        """Stop now while GUI-side work is under way (nothing half-made is kept); otherwise ask the engine."""
        if self.stage in (PREPARE, FINISH):
            self.cancelled = True
            self._end(EXIT_CANCELLED)
        elif self.stage == ENGINE:
            self.cancelled = True
            self.engine.cancel(grace_s)

    def release(self) -> None:
        """Remove the work folder (the engine job's own release once it ran)."""
        if self.engine is not None:
            self.engine.release()
        elif self.stage == ENDED and self.work is not None:
            shutil.rmtree(self.work, ignore_errors=True)

    def wait(self, on_event: Callable[[dict], None] | None = None, timeout: float | None = None,
             interval: float = 0.05, keep_alive: Callable[[], None] | None = None) -> int:
        """Block until done (scripts and self-tests), as EngineJob.wait; GUI-side work runs without pauses."""
        return poll_until_finished(self, on_event, timeout, interval, keep_alive)

