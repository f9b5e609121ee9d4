"""`--minutes`: a training time budget becomes a step count, planned from the measured step time."""
import json
import os
import re
import signal

import pytest
from conftest import seg_options

from pgl_engine.errors import TrainingInterrupted
from pgl_engine.finetuning.trainer import finetune
from pgl_engine.models.store import read_metadata
from pgl_engine.training.time_budget import StepPlanner
from PGLCommon.model_info import describe_finetune_time


def test_the_plan_follows_the_step_time_then_stays_from_half_way_unless_it_would_miss_the_budget():
    planner = StepPlanner(60.0, 0, calibration=10)
    assert planner.observe(1, 2.0) is None  # the first step (worker start-up) only starts the clock
    assert all(planner.observe(s, 2.0 + 0.5 * (s - 1)) is None for s in range(2, 10))
    assert planner.observe(10, 6.5) == 10 + int((60 - 6.5) / 0.5)  # 117 at 0.5 s per step
    assert planner.observe(15, 9.0) is None  # next plan at twice the calibration
    # the machine slows down to 1 s per step: the plan shrinks (the rate counts from the reference step)
    assert planner.observe(20, 16.0) == 20 + int((60 - 16.0) / ((16.0 - 2.0) / 19)) == 79
    # from half the planned steps on the plan stays, so the end of the schedule does not move: 0.75 s per step
    # would end at 60.25 s, within 3 % of the budget
    assert all(planner.observe(s, 16.0 + 0.75 * (s - 20)) is None for s in range(21, 41))
    # ... but a machine that gets busy (1.5 s per step: 89.5 s) shrinks it, at the next check, to what is left
    busy = [planner.observe(s, 31.0 + 1.5 * (s - 40)) for s in range(41, 51)]
    assert busy[:-1] == [None] * 9 and busy[-1] == 50 + int((60 - 46.0) / 1.5) == 59
    # ... and a machine that gets fast again (0.1 s per step: 59 steps would end at 46.9 s) grows it to what is left
    assert all(planner.observe(s, 46.0 + 0.1 * (s - 50)) is None for s in range(51, 60))
    assert planner.observe(60, 47.0) == 60 + int((60 - 47.0) / 0.1)


def run_to_the_end(planner: StepPlanner, elapsed_at, longest: int = 100_000) -> tuple[int, float]:
    """Step until the plan's total: (steps, seconds) at the end."""
    total = None
    for step in range(1, longest):
        total = planner.observe(step, elapsed_at(step)) or total
        if total is not None and step >= total:
            return step, elapsed_at(step)
    raise AssertionError("the plan never ended")


def test_a_checkpoint_every_hundred_steps_does_not_end_the_run_early():
    # 0.14 s per step and a 0.6 s checkpoint every 100 steps, 280 s: about 1900 steps fit. Judged over the last
    # ten steps, a checkpoint among them looked like 0.2 s per step and cut the plan by hundreds of steps
    steps, seconds = run_to_the_end(StepPlanner(280.0, 0), lambda s: 0.14 * s + 0.6 * (s // 100))
    assert 0.97 * 280 <= seconds <= 280 * 1.03, (steps, seconds)


def test_a_machine_that_gets_faster_after_the_plan_is_fixed_still_fills_its_budget():
    # a five-minute run here: planned at 0.153 s per step by step 640, then the machine ran 0.12 s per step; the
    # plan stayed at 1865 steps and training ended at 245 of its 287.5 s
    def elapsed(step):
        return 0.153 * min(step, 640) + 0.12 * max(0, step - 640)

    steps, seconds = run_to_the_end(StepPlanner(287.5, 0), elapsed)
    assert 0.97 * 287.5 <= seconds <= 287.5 * 1.03, (steps, seconds)


def test_a_spent_budget_ends_the_run_at_once():
    planner = StepPlanner(1.0, 0, calibration=2)
    planner.observe(1, 0.1)
    assert planner.observe(2, 5.0) == 2


@pytest.mark.slow
def test_fine_tuning_for_minutes_fits_the_schedule_to_its_planned_steps_and_a_resume_keeps_them(cohort, tmp_path):
    events = []

    def stop_at_step_15(event):
        events.append(event)
        if event.get("event") == "progress" and event.get("step") == 15:
            os.kill(os.getpid(), signal.SIGINT)

    options = seg_options(cohort, tmp_path / "model", tmp_path / "cache", minutes=0.3, steps=5)  # wall clock: reading the scans included
    with pytest.raises(TrainingInterrupted):
        finetune(progress=stop_at_step_15, **options)
    plans = [int(re.match(r"time budget: (\d+) steps", e["message"]).group(1)) for e in events
             if e.get("event") == "info" and e["message"].startswith("time budget")]
    assert len(plans) == 1 and plans[0] > 15, plans  # planned at step 10; --steps 5 is not what the run trains for
    resumed = []
    finetune(resume=True, progress=resumed.append, **options)
    assert not [e for e in resumed if e.get("event") == "info" and "time budget" in e["message"]]  # plan kept
    metadata = read_metadata(tmp_path / "model")
    log = [json.loads(line) for line in (tmp_path / "model" / "train_log.jsonl").read_text().splitlines()]
    assert metadata["training"]["steps"] == log[-1]["step"] == log[-1]["total"] == plans[0]
    assert metadata["training"]["minutes"] == 0.3
    peak = max(r["lr"] for r in log)
    assert log[-1]["lr"] < 0.01 * peak  # the cosine reaches its end at the planned last step
    assert 0 <= log[-1]["train_dice"] <= 1 and log[-1]["train_dice"] > log[0]["train_dice"]
    timing = metadata["timing"]
    assert timing["device"] == "cpu" and timing["scans"] == 2 and timing["seconds_per_step"] > 0


def test_the_panel_estimate_comes_from_the_latest_timing():
    assert "set from how long the first steps take" in describe_finetune_time(5, 2, [{}, {"kind": "segmentation"}])
    timing = {"prepare_s": 10.0, "scans": 2, "seconds_per_step": 0.5, "measure_s": 4.0, "device": "cpu"}
    text = describe_finetune_time(5, 3, [{"kind": "pretrained"}, {"timing": timing}, {"timing": {**timing,
                                                                                              "seconds_per_step": 9}}])
    # 600 steps in 5 min at 0.5 s; 5 s start-up + 3 x 5 s preparing + 300 s + 4 s measuring = 324 s
    assert "about 600 steps at the 0.50 s per step" in text and "about 5.4 min in all" in text, text
