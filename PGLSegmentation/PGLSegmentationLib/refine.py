"""Refine as one job: learn from the user's correction of a result (a short fine-tuning that continues the model),
segment the volume again with the new model, then score both results against the correction."""
from __future__ import annotations

from PGLCommon.agreement import dice_from_counts, joint_counts
from PGLCommon.errors import UserError
from PGLCommon.job_chain import JobChain
from PGLCommon.nodes import in_scene
from PGLCommon.staged_job import StagedJob
from PGLCommon.steps import StepGenerator

from .parameters import SegmentationParameters, SegmentationResult

TRAIN, SEGMENT, DICE = "train", "segment", "dice"


def check_refinable(result: SegmentationResult | None) -> None:
    """Refine needs a result of Apply whose volume and segmentation are still in the scene."""
    if result is None or not result.present():
        raise UserError("Apply a model to a volume first, correct the result in the Segment Editor, then press "
                        "Refine.")


def compare_with_correction(before: SegmentationResult, after: SegmentationResult, corrected) -> StepGenerator:
    """Dice of the results before and after Refine against the correction (value i+1 for the model's label i),
    per label name, a slab per step; returns (before, after)."""
    scores, names = [], before.names  # the correction's values follow the model's labels
    for result in (before, after):
        counts = yield from joint_counts(result.labels, corrected)
        scores.append(dice_from_counts(counts, {n: (result.values.get(n), i + 1) for i, n in enumerate(names)}))
    return tuple(scores)


class RefineJob(JobChain):
    """train (logic.refine) -> segment (into the corrected node, or a new one) -> Dice; the phases' outcomes are
    kept: `model` (the refined model), `after` (the new result), `dice` ((before, after) by label name)."""

    def __init__(self, logic, before: SegmentationResult, parameters: SegmentationParameters):
        check_refinable(before)
        self.logic, self.before, self.parameters = logic, before, parameters
        self.phase = TRAIN
        self.corrected = None  # the correction as exported for training (value i+1 for the model's label i)
        self.model = ""
        self.after: SegmentationResult | None = None
        self.dice: tuple[dict, dict] | None = None
        super().__init__(logic.refine(before.volume, before.segmentation, before.model,
                                      seconds=parameters.refineSeconds, earlierPairs=parameters.complete_pairs(),
                                      device=parameters.device, wait=False, onCorrectedLabels=self.keep_correction))

    def keep_correction(self, labels) -> None:
        self.corrected = labels

    def next_job(self, finished, done: dict):
        """Each phase's end starts the next; a volume gone from the scene ends the round."""
        if self.phase == TRAIN:
            self.model = done.get("model_dir", "")
            self.logic.remember(self.model)
            return self.segment_again() if in_scene(self.before.volume) else None
        if self.phase == SEGMENT:
            if not in_scene(self.before.volume):
                return None
            self.after = finished.result
            if self.corrected is None:
                return None
            self.phase = DICE
            return StagedJob(compare_with_correction(self.before, self.after, self.corrected))
        self.dice = finished.result
        return None

    def segment_again(self):
        p, volume = self.parameters, self.before.volume
        into = self.before.segmentation if p.refineReplace else None
        job = self.logic.start_apply(p, volume=volume, model=self.model, into=into)
        self.phase = SEGMENT
        return job
