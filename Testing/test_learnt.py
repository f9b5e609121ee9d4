"""A model says what it has not learnt: per-structure Dice at the end of fine-tuning, in the events, the done event,
the metadata and the panel's model description, with a warning for each structure below the threshold."""
import json
import math

import numpy as np
import pytest
import torch
from conftest import seg_options

from pgl_engine import load_model
from pgl_engine.finetuning.trainer import LEARNT_DICE, finetune
from pgl_engine.models.classes import class_map
from pgl_engine.training.running_dice import RunningDice
from PGLCommon.model_info import describe_model
from PGLCommon.output_folders import MODEL_FILE


def logits_of(prediction: list[int], classes: int) -> torch.Tensor:
    """(1, C, N) logits whose argmax is `prediction`."""
    return torch.nn.functional.one_hot(torch.tensor([prediction]), classes).permute(0, 2, 1).float()


def test_running_dice_per_class_on_a_hand_made_confusion():
    dice = RunningDice(4, window=2)
    assert all(math.isnan(d) for d in dice.per_class())  # nothing seen yet
    # class 1: 2 overlap, 2 predicted, 3 true -> 0.8; class 2: 2 true, never predicted -> 0; class 3: absent -> nan
    dice.add(logits_of([0, 1, 1, 0, 0, 0], 4), torch.tensor([[[0, 1, 1, 1, 2, 2]]]))
    per_class = dice.per_class()
    assert per_class[:2] == pytest.approx([0.8, 0.0]) and math.isnan(per_class[2])
    assert dice.dice() == pytest.approx(0.4)  # the mean leaves the unseen class out
    # class 3 predicted on background of a case that does not label it: not counted; labelled there: counted
    dice.add(logits_of([3, 0], 4), torch.tensor([[[0, 0]]]), torch.tensor([[True, True, True, False]]))
    assert math.isnan(dice.per_class()[2])
    dice.add(logits_of([3, 0], 4), torch.tensor([[[0, 0]]]), torch.tensor([[True, True, True, True]]))
    assert dice.per_class()[2] == 0.0
    assert math.isnan(dice.per_class()[0])  # the window (2 steps) has dropped the first step


def test_class_map_is_argmax_and_takes_the_first_class_on_ties():
    logits = torch.randn(2, 5, 6, 7, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(class_map(logits, 1), logits.argmax(1))
    assert torch.equal(class_map(logits[0], 0), logits[0].argmax(0))
    tied = torch.zeros(3, 4)
    tied[1:, 2:] = 1.0  # classes 1 and 2 tie on the last two voxels
    assert class_map(tied, 0).tolist() == [0, 0, 1, 1]


@pytest.fixture(scope="module")
def two_steps(cohort, tmp_path_factory):
    """A fine-tuning of 2 steps (it cannot have learnt anything) and its events."""
    work = tmp_path_factory.mktemp("two_steps")
    events = []
    out = finetune(**seg_options(cohort, work / "model", work / "cache", steps=2), progress=events.append)
    return out, events


def test_a_model_trained_two_steps_says_in_events_metadata_and_panel_what_it_has_not_learnt(two_steps):
    out, events = two_steps
    learnt = load_model(out).metadata["learnt"]
    assert learnt["source"] == "training patches" and learnt["window_steps"] == 2
    assert list(learnt["dice"]) == ["liver", "spleen", "right kidney", "left kidney", "tumour"]
    assert learnt["not_learnt"], learnt
    assert learnt["not_learnt"] == [n for n, d in learnt["dice"].items() if d is not None and d < LEARNT_DICE]
    warnings = [e["message"] for e in events if e["event"] == "warning" and "has not learnt" in e["message"]]
    assert len(warnings) == len(learnt["not_learnt"])
    for name, message in zip(learnt["not_learnt"], warnings):
        assert message == (f"the model has not learnt the {name} yet (Dice {learnt['dice'][name]:.2f} on its "
                           f"training patches): train longer, or label it in another scan")
    info = [e["message"] for e in events if e["event"] == "info" and e["message"].startswith("Dice per structure")]
    assert len(info) == 1 and "the training patches of the last 2 steps: liver " in info[0]
    done = [e for e in events if e["event"] == "done"]
    assert done[-1]["learnt"] == learnt  # the API's result
    # the panel words the same warnings (PGLCommon cannot import the engine)
    text, panel_warnings = describe_model(str(out))
    assert [w for w in panel_warnings if "has not learnt" in w] == warnings
    assert "Dice per structure on the training patches of the last 2 steps: liver " in text


def test_the_session_model_has_learnt_the_liver(seg_model):
    learnt = load_model(seg_model).metadata["learnt"]
    assert learnt["source"] == "training patches" and learnt["window_steps"] == 20
    assert learnt["dice"]["liver"] >= LEARNT_DICE and "liver" not in learnt["not_learnt"], learnt
    text, warnings = describe_model(str(seg_model))
    assert f"liver {learnt['dice']['liver']:.2f}" in text
    assert not [w for w in warnings if "the liver" in w]


@pytest.mark.slow
def test_with_validation_cases_the_structures_are_judged_on_them(cohort, tmp_path):
    events = []
    out = finetune(**seg_options(cohort, tmp_path / "model", tmp_path / "cache", steps=2, val_count=1),
                   progress=events.append)
    meta = load_model(out).metadata
    learnt = meta["learnt"]
    assert learnt["source"] == "validation" and set(learnt["training_dice"]) == set(learnt["dice"])
    # the per-structure means make up the validation Dice the model was kept for (one validation case)
    measured = [d for d in learnt["dice"].values() if d is not None]
    assert np.mean(measured) == pytest.approx(meta["validation"]["dice"], abs=1e-3)
    warnings = [e["message"] for e in events if e["event"] == "warning" and "has not learnt" in e["message"]]
    assert warnings and all("on the validation cases): train longer" in w for w in warnings)
    assert [w for w in describe_model(str(out))[1] if "has not learnt" in w] == warnings


def test_describe_model_shows_dice_per_structure_and_warns_of_those_not_learnt(tmp_path):
    meta = {"kind": "segmentation", "labels": {"1": {"name": "liver"}, "2": {"name": "left kidney"}},
            "init": {"path": "none"}, "cases": ["a", "b"], "training": {"steps": 40},
            "learnt": {"source": "training patches", "dice": {"liver": 0.91, "left kidney": 0.12, "tumour": None},
                       "not_learnt": ["left kidney"], "threshold": 0.3, "window_steps": 20}}
    (tmp_path / MODEL_FILE).write_text(json.dumps(meta))
    text, warnings = describe_model(str(tmp_path))
    assert ("Dice per structure on the training patches of the last 20 steps: liver 0.91, left kidney 0.12, "
            "tumour not measured (optimistic: the model learns from these patches; holding a scan out") in text
    assert warnings == ["the model has not learnt the left kidney yet (Dice 0.12 on its training patches): train "
                        "longer, or label it in another scan"]
    del meta["learnt"]  # a model from before PGL recorded it: no Dice line, no warning
    (tmp_path / MODEL_FILE).write_text(json.dumps(meta))
    text, warnings = describe_model(str(tmp_path))
    assert "Dice per structure" not in text and warnings == []
