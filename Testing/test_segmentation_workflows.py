"""The PGL Segmentation workflows without the panel: the parameter object, Apply and Refine driven through the logic
on a real MRML scene (engine answers stood in, so only the Slicer side's work runs), and the one error type both
modules raise for a user's mistake."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from panel_helpers import panel, replace_segments  # noqa: F401  (panel: a fixture)

from pgl_engine.contract import DEFAULT_FINETUNE_MINUTES, REFINE_MINUTES
from PGLCommon.errors import UserError
from PGLCommon.jobs import EngineJob
from PGLCommon.nodes import NodeError

NAMES = ["liver", "spleen"]
ANSWER = """import json, os, shutil, sys
command, answer, model, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
if command == "segment":
    output = args[args.index("--output") + 1]
    shutil.copyfile(answer, output)
    shutil.copyfile(answer[:-len(".nii")] + ".labels.json", output[:-len(".nii")] + ".labels.json")
    print(json.dumps({"event": "done"}), flush=True)
else:  # finetune: a model folder like the one it continues
    out = args[args.index("--out") + 1]
    os.makedirs(out)
    shutil.copyfile(os.path.join(model, "pgl_model.json"), os.path.join(out, "pgl_model.json"))
    print(json.dumps({"event": "done", "model_dir": out}), flush=True)
"""


def answering_engine(answers: list, model, seen: list):
    """Jobs whose engine answers at once: a segmentation answers with the next of `answers` (a label map file)."""

    class StandIn(EngineJob):
        @classmethod
        def for_engine(cls, command, args, env=None, **options):
            job = super().for_engine(command, args, env=env, **options)
            seen.append(command)
            answer = str(answers.pop(0)) if command == "segment" else ""
            job.args = [sys.executable, "-c", ANSWER, command, answer, str(model),
                        *job.args[job.args.index(command) + 1:]]
            return job

    return StandIn


def write_answer(path: Path, labels: np.ndarray, volume) -> Path:
    from PGLCommon import nifti_slabs
    from PGLCommon.nodes import write_label_table
    from PGLCommon.segment_labels import ijk_to_ras
    from PGLCommon.steps import run_all

    run_all(nifti_slabs.write_steps(path, labels, ijk_to_ras(volume)))
    write_label_table(path.with_name(path.stem + ".labels.json"),
                      {str(i + 1): {"name": n, "color": [200, 40 * i, 40]} for i, n in enumerate(NAMES)})
    return path


@pytest.fixture
def fake_model(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    labels = {str(i + 1): {"name": n, "color": [200, 40 * i, 40]} for i, n in enumerate(NAMES)}
    (model / "pgl_model.json").write_text(json.dumps({"format": "pgl-model", "kind": "segmentation",
                                                      "labels": labels}))
    return model


def test_the_parameter_object_holds_the_engines_defaults_and_the_pairs_each_workflow_uses():
    from PGLSegmentationLib.parameters import SegmentationParameters

    p = SegmentationParameters()
    assert p.finetuneMinutes == DEFAULT_FINETUNE_MINUTES and p.refineSeconds == round(REFINE_MINUTES * 60) == 30
    assert p.device == "auto" and p.segmentNames is None and p.refineReplace and p.largestComponent
    assert p.training_pairs() == ([None], [None])  # nothing listed: the selectors' pair (here: none chosen)
    p = SegmentationParameters(pairs=[("v1", "s1"), (None, "s2")], selectedPair=("v", "s"))
    assert p.training_pairs() == (["v1", None], ["s1", "s2"])  # listed pairs win over the selectors
    assert p.listed_pairs() == p.training_pairs() and p.complete_pairs() == [("v1", "s1")]
    assert SegmentationParameters().pairs is not SegmentationParameters().pairs  # no list shared by instances


def test_the_largest_component_checkbox_asks_the_engine_for_one_piece_labels_only():
    from PGLSegmentationLib.logic import largest_component_choice

    assert largest_component_choice(True) == "auto" and largest_component_choice(False) == "none"
    assert largest_component_choice("all") == "all"


def test_one_user_error_type_for_both_modules_with_a_message_that_says_what_to_do(mrml, tmp_path):
    from PGLPretrainLib.logic import PGLPretrainLogic
    from PGLSegmentationLib.logic import PGLSegmentationLogic
    from PGLSegmentationLib.parameters import SegmentationParameters

    assert NodeError is UserError and issubclass(UserError, ValueError)  # what scripts caught so far still works
    with pytest.raises(UserError, match=r"^Choose the folder of scans to pretrain on \(got ''\)\.$"):
        PGLPretrainLogic().pretrain("", str(tmp_path / "model"))
    with pytest.raises(UserError, match=r"^Choose the folder of scans to pretrain on"):
        PGLPretrainLogic().scan_list(str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="^Choose an output model folder.$"):
        PGLPretrainLogic().pretrain(str(tmp_path), "")
    logic = PGLSegmentationLogic()
    with pytest.raises(UserError, match=r"^pair 1: choose both a volume and a segmentation\.$"):
        logic.start_finetune(SegmentationParameters())
    with pytest.raises(UserError, match="^Choose an input volume.$"):
        logic.start_apply(SegmentationParameters())
    with pytest.raises(UserError, match="^Apply a model to a volume first, correct the result in the Segment "
                                        "Editor, then press Refine.$"):
        logic.start_refine(None, SegmentationParameters())


def test_apply_then_refine_through_the_logic_without_the_panel(mrml, cohort, fake_model, tmp_path):
    """Apply gives a SegmentationResult; Refine is one job: train on the correction, segment again into the same
    node, then the Dice of both results against the correction."""
    from PGLSegmentationLib.logic import PGLSegmentationLogic
    from PGLSegmentationLib.parameters import SegmentationParameters

    from PGLCommon.nodes import label_array
    from PGLCommon.sample_data import load_sample_case

    volume, truth = load_sample_case(str(cohort), mrml.scene, 2)
    truth_labels, missing = label_array(truth, NAMES, volume)
    assert not missing
    answers = [write_answer(tmp_path / "empty.nii", np.zeros_like(truth_labels), volume),
               write_answer(tmp_path / "truth.nii", truth_labels, volume)]
    seen = []
    logic = PGLSegmentationLogic(job_class=answering_engine(answers, fake_model, seen))
    p = SegmentationParameters(inputVolume=volume, model=str(fake_model), device="cpu", refineSeconds=6)

    job = logic.start_apply(p)
    assert job.wait(timeout=120) == 0, job.failure_message()
    before = job.result
    job.release()
    assert before.volume is volume and before.model == str(fake_model) and before.names == NAMES
    assert before.values == {"liver": 1, "spleen": 2} and not before.labels.any() and before.present()

    replace_segments(before.segmentation, truth)  # the user's correction
    round_ = logic.start_refine(before, p)
    assert round_.wait(timeout=180) == 0, round_.failure_message()
    round_.release()
    assert seen == ["segment", "finetune", "segment"]
    assert round_.model == f"{fake_model} refined 1" and logic.models[-1] == round_.model
    after = round_.after
    assert after.segmentation is before.segmentation and after.model == round_.model  # the same node, refilled
    assert np.array_equal(after.labels, truth_labels)
    dice_before, dice_after = round_.dice
    assert dice_before == {"liver": 0.0, "spleen": 0.0} and dice_after == pytest.approx({"liver": 1.0, "spleen": 1.0})


def test_refine_stops_after_training_when_the_volume_left_the_scene(mrml, cohort, fake_model, tmp_path):
    from PGLSegmentationLib.logic import PGLSegmentationLogic
    from PGLSegmentationLib.parameters import SegmentationParameters, SegmentationResult

    from PGLCommon.sample_data import load_sample_case

    volume, truth = load_sample_case(str(cohort), mrml.scene, 2)

    class VolumeGoesAsTrainingEnds(PGLSegmentationLogic):
        def remember(self, modelDir):
            super().remember(modelDir)
            mrml.scene.RemoveNode(volume)

    seen = []
    logic = VolumeGoesAsTrainingEnds(job_class=answering_engine([], fake_model, seen))
    round_ = logic.start_refine(SegmentationResult(volume, truth, str(fake_model), NAMES, None, {}),
                                SegmentationParameters(device="cpu"))
    assert round_.wait(timeout=180) == 0, round_.failure_message()
    round_.release()
    assert seen == ["finetune"] and round_.model == f"{fake_model} refined 1"
    assert round_.after is None and round_.dice is None


def test_the_panel_binds_its_fields_to_one_parameter_object(slicer_app, panel, cohort):  # noqa: F811  (fixture)
    import qt

    from PGLCommon.sample_data import load_sample_case

    ui = panel.ui
    assert (ui.checkStepsSpinBox.value, ui.refineSecondsSpinBox.value, ui.nnunetNameLineEdit.text) == (300, 30, "PGL")
    volume, segmentation = load_sample_case(str(cohort), slicer_app.scene, 0)
    ui.trainVolumeSelector.setCurrentNode(volume)
    ui.trainSegmentationSelector.setCurrentNode(segmentation)
    ui.addPairButton.click()
    ui.inputVolumeSelector.setCurrentNode(volume)
    ui.refineSecondsSpinBox.value = 6
    ui.initPathLineEdit.currentPath = "/models/pgl"
    ui.largestComponentCheckBox.checked = False
    ui.segmentsListWidget.item(0).setCheckState(qt.Qt.Unchecked)
    p = panel.parameters()
    assert p.device == "cpu" and p.refineSeconds == 6 and p.initModel == "/models/pgl" and not p.largestComponent
    assert p.pairs == [(volume, segmentation)] and p.selectedPair == (volume, segmentation) and p.inputVolume is volume
    listed = [ui.segmentsListWidget.item(i).text() for i in range(ui.segmentsListWidget.count)]
    assert p.segmentNames == listed[1:]
