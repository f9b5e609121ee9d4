"""A training time budget ("train for about N minutes") turned into a number of steps.

The step count is set from the wall-clock time of the steps run so far: first after CALIBRATION steps, then
again at twice, four times, ... as many, so that validations and a machine that slows down are counted; from
half the planned steps on the plan stays, so the end of the learning-rate schedule does not move, unless the
recent steps say the run would end more than OVERRUN past the budget (a machine that got busy) or more than
UNDERRUN before it (one that got faster: a five-minute run planned at 0.15 s per step then ran 0.12 and ended 31 s
early): then it is fitted to what is left. "Recent" is a tenth of the plan, not the last few steps: a checkpoint
written among ten steps made them look a third slower and ended five-minute runs 4 % early. The first step
(start-up of the data workers) is left out of the rate.
"""
from __future__ import annotations

import math

CALIBRATION = 10  # steps timed before the first plan
LOADER_STEPS = 10 ** 7  # the data loader's length while the step count is not yet known
PROVISIONAL_STEPS = 10 * CALIBRATION  # at least the schedule's length until the first plan
OVERRUN = 1.03  # from half way on, the plan shrinks only when it would end this far past the budget
UNDERRUN = 0.98  # ... and grows only when it would end this far short of it
LATE_CHECK = 10  # steps between those checks
LATE_WINDOW = 0.1  # ... each judging the rate over this fraction of the planned steps (at least LATE_CHECK)


class StepPlanner:
    def __init__(self, budget_s: float, start_step: int, calibration: int = CALIBRATION):
        self.budget_s, self.start = float(budget_s), int(start_step)
        self.reference: tuple[int, float] | None = None  # (step, elapsed) after the first step
        self.next_plan = start_step + calibration
        self.total: int | None = None
        self.per_step = 0.0  # seconds per step at the latest plan
        self.latest: tuple[int, float] | None = None  # (step, elapsed) at the latest plan or late check
        self.checked: list[tuple[int, float]] = []  # (step, elapsed) at the latest plan and the late checks since

    def observe(self, step: int, elapsed_s: float) -> int | None:
        """After `step` steps and `elapsed_s` seconds of training (this run's part): a new total, or None."""
        if self.reference is None:
            self.reference = (step, elapsed_s)
            return None
        if self.total is not None and step >= self.total / 2:
            return self.keep_to_budget(step, elapsed_s)
        if step < self.next_plan:
            return None
        self.latest = (step, elapsed_s)
        self.checked = [self.latest]
        self.next_plan = self.start + 2 * (self.next_plan - self.start)
        ref_step, ref_elapsed = self.reference
        per_step = self.per_step = (elapsed_s - ref_elapsed) / max(1, step - ref_step)
        left = max(0.0, self.budget_s - elapsed_s)
        self.total = step + (int(math.floor(left / per_step)) if per_step > 0 else 0)
        return self.total

    def keep_to_budget(self, step: int, elapsed_s: float) -> int | None:
        """Past half way: a new total when the recent steps would take the run more than OVERRUN past the budget
        or end it more than UNDERRUN short of it, else None."""
        last_step, _ = self.latest or self.reference
        if step - last_step < LATE_CHECK:
            return None
        window = max(LATE_CHECK, int(LATE_WINDOW * self.total))
        since = [c for c in self.checked if c[0] <= step - window]
        from_step, from_elapsed = since[-1] if since else (self.checked or [self.reference])[0]
        self.latest = (step, elapsed_s)
        self.checked.append(self.latest)
        per_step = (elapsed_s - from_elapsed) / (step - from_step)
        if self.budget_s * UNDERRUN <= elapsed_s + (self.total - step) * per_step <= self.budget_s * OVERRUN:
            return None
        self.per_step = per_step
        self.total = step + max(0, int(math.floor((self.budget_s - elapsed_s) / per_step)))
        return self.total
