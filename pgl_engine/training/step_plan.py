"""How many steps a run trains: --steps, or a count fitted to a time budget as it runs, or fewer once it finishes
early (a plateau). The plan decides the count; the run it was given applies it (`apply`: the config's step count
and the learning-rate schedules)."""
from __future__ import annotations

import time
from typing import Callable

from ..progress import ProgressCallback, emit
from .time_budget import LOADER_STEPS, PROVISIONAL_STEPS, StepPlanner


class StepPlan:
    def __init__(self, apply: Callable[[int], None], agree: Callable[[int], int] = int,
                 progress: ProgressCallback | None = None, clock: Callable[[], float] = time.perf_counter):
        """`apply(total)` makes `total` the run's step count; `agree(total)` returns the count every process takes
        (rank 0's), so that all of them end at the same step; `clock` gives seconds (tests pass their own)."""
        self.apply, self.agree, self.progress, self.clock = apply, agree, progress, clock
        self.planner: StepPlanner | None = None  # fits the count to the budget while it is planning
        self.planning = False  # the count is being set from a time budget
        self.planned = False  # ... and was set (kept by checkpoints, so a resumed run keeps its plan)
        self.started = 0.0
        self.excluded_s = 0.0  # seconds inside the loop the budget does not count (work a subclass adds)

    def start(self, budget_s: float | None, step: int, steps: int) -> None:
        """At the loop's start (step `step` of `steps`): fit the count to `budget_s` seconds from now, unless a
        resumed run planned it already."""
        self.planner = StepPlanner(budget_s, step) if budget_s and not self.planned else None
        self.planning = self.planner is not None
        if self.planner and steps < PROVISIONAL_STEPS:
            self.apply(PROVISIONAL_STEPS)  # the schedule until the first plan
        self.started = self.clock()

    def loader_steps(self, steps: int) -> int:
        """How many steps the data loader is built for while the count is `steps`."""
        return LOADER_STEPS if self.planning else steps

    def elapsed_s(self) -> float:
        """Seconds of training the budget counts so far."""
        return self.clock() - self.started - self.excluded_s

    def follow(self, step: int, steps: int) -> None:
        """After step `step` of `steps`: fit the count to the time left, when the planner says so."""
        if self.planner is None:
            return
        total = self.planner.observe(step, self.elapsed_s())
        if total is None:
            return
        total = self.planner.total = self.agree(total)
        if total != steps:
            self.apply(total)
            emit(self.progress, "info", message=f"time budget: {total} steps in about {self.planner.budget_s / 60:.3g} "
                                                f"min ({self.planner.per_step:.2f} s per step so far)")
        self.planned = True

    def finish_early(self, total: int, steps: int, message: str) -> None:
        """End at step `total` instead of `steps`: the schedule shrinks to it and a time budget no longer re-plans
        (every process must call this at the same step)."""
        self.planner, self.planned = None, True
        if total < steps:
            self.apply(total)
            emit(self.progress, "info", message=message)
