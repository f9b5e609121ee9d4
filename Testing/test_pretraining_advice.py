"""A pretrained start that is not expected to help is said so, at pretraining and before fine-tuning from it."""
from __future__ import annotations

import pytest
from conftest import seg_options, tiny_config

from pgl_engine.finetuning.trainer import finetune
from pgl_engine.pretraining.advice import FEW_SCANS, FEW_STEPS, pretraining_advice
from pgl_engine.pretraining.trainer import pretrain


def test_the_advice_names_what_is_too_little_and_nothing_otherwise():
    assert pretraining_advice(FEW_SCANS, FEW_STEPS) is None
    one = pretraining_advice(1, 5000)
    assert "on 1 scan (" in one and "steps" not in one.split("is not expected")[0]
    both = pretraining_advice(3, 20)
    assert "on 3 scans" in both and "for 20 steps" in both and both.count(".") == 1


@pytest.mark.slow
def test_pretraining_on_a_handful_of_scans_says_so_then_and_before_fine_tuning(cohort, tmp_path):
    said = []
    model = pretrain(tiny_config(cohort / "images", tmp_path / "pre", tmp_path / "cache"), progress=said.append)
    warnings = [e["message"] for e in said if e.get("event") == "warning"]
    assert any("is not expected to help fine-tuning" in m and "on 3 scans" in m for m in warnings), warnings
    later = []
    options = seg_options(cohort, tmp_path / "ft", tmp_path / "cache", init=str(model), steps=2)
    options.pop("network")
    finetune(progress=later.append, **options)
    assert any(str(model) in e["message"] and "not expected to help" in e["message"]
               for e in later if e.get("event") == "warning")
