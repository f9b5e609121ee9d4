"""Finishing early on a plateau (--patience): the detector, the shortened schedule, the model and --resume."""
import json
import math
import os
import signal

import pytest
from conftest import seg_options

from pgl_engine.config import FinetuneConfig
from pgl_engine.errors import PGLError, TrainingInterrupted
from pgl_engine.finetuning.trainer import finetune
from pgl_engine.models.store import read_metadata
from pgl_engine.training.plateau import PlateauDetector, tail_end


def test_a_plateau_is_patience_checks_in_a_row_without_half_a_point_of_gain():
    detector = PlateauDetector(patience=2)
    assert [detector.check(d) for d in (0.50, 0.60, 0.604, 0.62, 0.621, 0.624)] == [
        False, False, False, False, False, True]
    assert detector.best == 0.62
    detector = PlateauDetector(patience=2)
    assert not any(detector.check(d) for d in (0.5, 0.503, 0.51, 0.512, 0.52))  # a gain resets the count
    assert not detector.check(math.nan) and detector.flat == 0  # no Dice (no structure seen): no verdict


def test_without_a_validation_dice_a_check_takes_the_mean_training_dice_since_the_last_one():
    detector = PlateauDetector(patience=1)
    for dice in (0.2, 0.4, math.nan):
        detector.add(dice)
    assert not detector.check() and detector.best == pytest.approx(0.3)
    for dice in (0.5, 0.1):
        detector.add(dice)
    assert detector.check()  # mean 0.3: no gain
    assert not detector.check()  # nothing added since: no verdict


def test_the_tail_is_a_fifth_of_the_steps_run_and_never_beyond_the_plan():
    assert tail_end(100, 1000) == 120 and tail_end(1, 1000) == 2 and tail_end(900, 1000) == 1000


def flat_run(cohort, tmp_path, **overrides) -> dict:
    """Fine-tuning options whose Dice cannot rise (a learning rate of 1e-9): a plateau from the first checks."""
    return seg_options(cohort, tmp_path / "model", tmp_path / "cache",
                       **{"steps": 60, "lr": 1e-9, "patience": 2, "val_every": 4, **overrides})


@pytest.mark.slow
@pytest.mark.parametrize("val_count, signal_name", [(0, "training Dice"), (1, "validation Dice")])
def test_a_plateau_finishes_the_run_early_on_an_annealed_learning_rate(cohort, tmp_path, val_count, signal_name):
    events = []
    finetune(progress=events.append, **flat_run(cohort, tmp_path, val_count=val_count))
    metadata = read_metadata(tmp_path / "model")
    # warm-up ends at step 3; checks at 4 (best), 8 and 12 (flat, flat): a plateau at 12, the tail to 12 + 3
    assert metadata["finished_early"] == {"step": 12, "end": 15, "planned": 60, "signal": signal_name,
                                          "best_dice": metadata["finished_early"]["best_dice"]}
    # the model: the last step's, or with validation the best one's (the first: the Dice never rose)
    assert metadata["training"]["steps"] == (metadata["validation"]["step"] if val_count else 15)
    steps = [e for e in events if e.get("event") == "progress" and e.get("stage") == "finetune"]
    assert [e["step"] for e in steps][-1] == 15 and steps[-1]["total"] == 15
    lrs = [e["lr"] for e in steps]
    assert lrs[12] < 0.1 * lrs[11] and lrs[-1] == 0.0  # annealed to 0 over the tail
    assert any(signal_name in e.get("message", "") and "finishing at step 15 instead of 60" in e["message"]
               for e in events if e.get("event") == "info")
    log = [json.loads(line) for line in (tmp_path / "model" / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 15


@pytest.mark.slow
def test_without_patience_the_run_keeps_its_plan(cohort, tmp_path):
    finetune(**flat_run(cohort, tmp_path, patience=0, steps=20))
    metadata = read_metadata(tmp_path / "model")
    assert metadata["finished_early"] is None and metadata["training"]["steps"] == 20


@pytest.mark.slow
def test_a_run_stopped_in_its_tail_resumes_to_the_tail_end(cohort, tmp_path):
    def stop_at_step_13(event):
        if event.get("event") == "progress" and event.get("step") == 13:
            os.kill(os.getpid(), signal.SIGINT)

    options = flat_run(cohort, tmp_path)
    with pytest.raises(TrainingInterrupted):
        finetune(progress=stop_at_step_13, **options)
    finetune(resume=True, **options)
    metadata = read_metadata(tmp_path / "model")
    assert metadata["training"]["steps"] == 15 and metadata["finished_early"]["end"] == 15


def test_a_negative_patience_is_refused_by_name():
    with pytest.raises(PGLError, match="--patience must be >= 0"):
        FinetuneConfig(dataset="x.json", out="m", patience=-1)
