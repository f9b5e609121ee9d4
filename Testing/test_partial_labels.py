"""Partial labels: a structure a case does not label is not taught as background in that case."""
import json

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import seg_options

from pgl_engine.errors import PGLError
from pgl_engine.finetuning.trainer import finetune
from pgl_engine.inference.evaluation import dice_per_label
from pgl_engine.inference.segmentation import segment
from pgl_engine.pretraining.losses import marginal_dice_ce_loss
from pgl_engine.training.running_dice import RunningDice

NAMES = ("right kidney", "left kidney")
PHANTOM_VALUES = (3, 4)  # their values in the phantoms' label maps


def labelled_cases(tmp_path, cohort, keep: dict[str, tuple[int, ...]], tables: bool, phantom: int | None = None):
    """images/ + labels/ with case `name` labelling only the organs keep[name] (values 1, 2 for NAMES; the rest
    background): phantom `phantom` for every case, else the phantom numbered like the case; with tables, each
    label map's sidecar lists the organs it labels."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    for case, values in keep.items():
        source, name = f"phantom_{int(case[-1]) if phantom is None else phantom:03d}", case
        (images / f"{name}.nii.gz").symlink_to(cohort / "images" / f"{source}.nii.gz")
        image = nib.load(cohort / "labels" / f"{source}.nii.gz")
        array = np.asarray(image.dataobj)
        kept = np.select([array == PHANTOM_VALUES[v - 1] for v in values], values, 0).astype(np.uint8)
        nib.save(nib.Nifti1Image(kept, image.affine), labels / f"{name}.nii.gz")
        if tables:
            table = {str(v): {"name": NAMES[v - 1]} for v in values}
            (labels / f"{name}.labels.json").write_text(json.dumps({"labels": table}))
    return images, labels


def test_the_marginal_loss_is_monai_dice_ce_with_every_class_labelled_and_ignores_unlabelled_classes():
    from monai.losses import DiceCELoss

    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6, 5, 4)
    target = torch.randint(0, 4, (2, 1, 6, 5, 4))
    every = torch.ones(2, 4, dtype=torch.bool)
    expected = DiceCELoss(to_onehot_y=True, softmax=True)(logits, target)
    assert marginal_dice_ce_loss(logits, target, every).item() == pytest.approx(expected.item(), rel=1e-5)
    # sample 0 does not label class 2: its class-2 logits may rise without cost where the truth is background
    labelled = every.clone()
    labelled[0, 2] = False
    partial = torch.where(target == 2, torch.zeros_like(target), target)
    raised = logits.clone()
    raised[0, 2] += 5.0 * (partial[0, 0] == 0)
    assert marginal_dice_ce_loss(raised, partial, labelled) < marginal_dice_ce_loss(logits, partial, labelled) + 1e-4
    assert marginal_dice_ce_loss(raised, partial, every) > marginal_dice_ce_loss(logits, partial, every) + 0.5


def test_the_running_dice_scores_a_class_only_on_samples_that_label_it():
    target = torch.zeros(2, 1, 4, 4, 4, dtype=torch.long)
    target[0, 0, :2] = 1
    logits = torch.zeros(2, 3, 4, 4, 4)
    logits[0, 1, :2] = 5  # sample 0: class 1 right
    logits[1, 2, :2] = 5  # sample 1: class 2 predicted where its case does not label class 2
    labelled = torch.tensor([[True, True, True], [True, True, False]])
    assert RunningDice(3).add(logits, target) == pytest.approx(0.5)  # class 2 counted as a false positive
    assert RunningDice(3).add(logits, target, labelled) == pytest.approx(1.0)


def organ_dice(model, cohort, tmp_path, phantom: int = 2):
    name = f"phantom_{phantom:03d}"
    predicted = segment(model, cohort / "images" / f"{name}.nii.gz", tmp_path / f"{model.parent.name}_{name}.nii.gz",
                        device="cpu")[0]
    truth = np.asarray(nib.load(cohort / "labels" / f"{name}.nii.gz").dataobj)
    truth = np.select([truth == v for v in PHANTOM_VALUES], [1, 2], 0)
    return dice_per_label(np.asarray(nib.load(predicted).dataobj), truth, {1: NAMES[0], 2: NAMES[1]})


@pytest.mark.slow
def test_two_cases_each_labelling_another_organ_teach_both(cohort, tmp_path):
    """One scan labelled twice, the right kidney in case_0 and the left one in case_1 (two annotators, or two
    segmentations of one volume). With their label tables a model learns both organs nearly as well as from full
    labels (on that scan and on another phantom). Taught as background instead, each organ is foreground in one
    case and background in the other on the same image: the model drops at least one organ (which one is a tie
    broken by chance, so the margin is asserted on the organ mean; docs/tests.md)."""
    partial_keep, full_keep = {"case_0": (1,), "case_1": (2,)}, {"case_0": (1, 2), "case_1": (1, 2)}
    runs = {"partial": (partial_keep, True), "as background": (partial_keep, False), "full": (full_keep, True)}
    dice, messages = {}, []
    for run, (keep, tables) in runs.items():
        folder = tmp_path / run.replace(" ", "_")
        images, labels = labelled_cases(folder, cohort, keep, tables, phantom=0)
        options = seg_options(cohort, folder / "model", tmp_path / "cache", dataset="", images=str(images),
                              labels=str(labels), label_names=NAMES, steps=400, spacing=(12.0, 12.0, 12.0))
        model = finetune(**options, progress=lambda e: messages.append(e.get("message", "")))
        dice[run] = {scan: organ_dice(model, cohort, tmp_path, phantom) for scan, phantom in (("labelled", 0),
                                                                                              ("held out", 2))}
    assert any("case_0 labels right kidney (not left kidney); case_1 labels left kidney (not right kidney)" in m
               for m in messages), messages
    for scan in ("labelled", "held out"):
        partial, background, full = (dice[run][scan] for run in ("partial", "as background", "full"))
        assert all(partial[organ] >= 0.8 * full[organ] for organ in (1, 2)), dice
        assert np.mean(list(partial.values())) >= np.mean(list(background.values())) + 0.2, dice
        assert min(background.values()) < 0.5 * min(partial.values()), dice


def test_a_structure_labelled_in_no_case_is_refused(cohort, tmp_path):
    images, labels = labelled_cases(tmp_path, cohort, {"case_0": (1,), "case_1": (1,)}, True)
    with pytest.raises(PGLError, match="left kidney are labelled in none of the cases"):
        finetune(**seg_options(cohort, tmp_path / "model", tmp_path / "cache", dataset="", images=str(images),
                               labels=str(labels), label_names=NAMES, steps=1))
