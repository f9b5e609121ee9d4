"""The step plan on its own: a time budget becomes a step count, a plateau ends the run sooner, a busy machine past
half way shrinks the plan, a resumed plan stays (a fake clock: no training)."""
from __future__ import annotations

import pytest

from pgl_engine.training.step_plan import StepPlan
from pgl_engine.training.time_budget import LOADER_STEPS, PROVISIONAL_STEPS


class FakeRun:
    """What a run gives the plan: its step count (which `apply` sets) and a clock the test moves."""

    def __init__(self, steps: int, agree=int):
        self.steps, self.now, self.applied, self.events = steps, 0.0, [], []
        self.plan = StepPlan(self.apply, agree, self.events.append, clock=lambda: self.now)

    def apply(self, total: int) -> None:
        self.applied.append(total)
        self.steps = total

    def train(self, seconds_per_step, until: int | None = None, step: int = 0) -> int:
        """Step until the plan's end (or `until`); step s takes seconds_per_step(s) seconds."""
        while step < min(self.steps, until or self.steps):
            self.now += seconds_per_step(step)
            step += 1
            self.plan.follow(step, self.steps)
        return step

    def infos(self) -> list[str]:
        return [e["message"] for e in self.events if e["event"] == "info"]


def first_slow_then(rate):
    return lambda step: 2.0 if step == 0 else rate(step)


def test_a_budget_becomes_steps_from_the_measured_step_time():
    run = FakeRun(steps=5)
    run.plan.start(60.0, 0, run.steps)
    assert run.applied == [PROVISIONAL_STEPS]  # the schedule's length until the first plan
    assert run.plan.planning and run.plan.loader_steps(run.steps) == LOADER_STEPS
    end = run.train(first_slow_then(lambda s: 0.5))
    assert run.applied == [PROVISIONAL_STEPS, 117]  # planned at step 10: 10 + (60 - 6.5) / 0.5
    assert end == 117 and run.now == pytest.approx(60.0)
    assert run.plan.planned
    assert run.infos() == ["time budget: 117 steps in about 1 min (0.50 s per step so far)"]


def test_past_half_way_a_busy_machine_shrinks_the_plan_to_the_budget_and_it_never_grows():
    run = FakeRun(steps=5)
    run.plan.start(60.0, 0, run.steps)
    end = run.train(first_slow_then(lambda s: 0.5 if s < 60 else 1.5))
    # the rate is judged over a tenth of the plan, so the slowdown shrinks it in two checks
    assert run.applied == [PROVISIONAL_STEPS, 117, 87, 79]
    assert end == 79 and run.now == pytest.approx(60.0)  # ends on the budget, not 58 steps x 1.5 s past it
    assert run.infos()[-1] == "time budget: 79 steps in about 1 min (1.50 s per step so far)"


def test_a_plateau_finish_shrinks_the_plan_once_and_ends_the_budget_s_replanning():
    run = FakeRun(steps=5)
    run.plan.start(60.0, 0, run.steps)
    step = run.train(first_slow_then(lambda s: 0.5), until=12)
    run.plan.finish_early(20, run.steps, "plateau: finishing at step 20")
    assert run.applied[-1] == 20 and run.infos()[-1] == "plateau: finishing at step 20"
    assert run.plan.planner is None and run.plan.planned
    assert run.train(first_slow_then(lambda s: 0.01), step=step) == 20  # a fast machine no longer re-plans
    run.plan.finish_early(30, run.steps, "later than the plan")  # a tail past the plan changes nothing
    assert run.applied[-1] == 20 and run.infos()[-1] == "plateau: finishing at step 20"


def test_without_a_budget_or_with_a_plan_from_the_checkpoint_the_steps_stay():
    for budget, planned in ((None, False), (60.0, True)):
        run = FakeRun(steps=40)
        run.plan.planned = planned  # as a resumed run's checkpoint says
        run.plan.start(budget, 10, run.steps)
        assert not run.plan.planning and run.plan.loader_steps(run.steps) == 40
        assert run.train(lambda s: 0.5, step=10) == 40 and run.applied == [] and run.infos() == []


def test_every_process_takes_the_agreed_count_and_excluded_time_is_not_counted():
    run = FakeRun(steps=5, agree=lambda total: 50)  # rank 0's count, whatever this process measured
    run.plan.start(60.0, 0, run.steps)
    assert run.train(first_slow_then(lambda s: 0.5)) == 50 and run.applied == [PROVISIONAL_STEPS, 50]
    run.now += 10.0
    run.plan.excluded_s = 4.0
    assert run.plan.elapsed_s() == pytest.approx(run.now - 4.0)
