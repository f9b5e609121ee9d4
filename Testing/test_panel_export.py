"""PGL Segmentation's Export section in a Qt event loop, driven by clicks against real engine subprocesses; each
export is judged by the field's own tool (MONAI's config parser builds the bundle's network and takes its weights;
nnU-Net's dataset-integrity check reads the dataset). Also: the chosen configuration shown before fine-tuning
trains, and Refine's default budget."""
import json
import sys

import pytest
from conftest import STALL_LIMIT_MS
from panel_helpers import click, panel  # noqa: F401  (panel: a fixture)
from slicer_harness import Heartbeat

from pgl_engine.config import DEFAULT_FINETUNE_MINUTES, REFINE_MINUTES
from PGLCommon.jobs import EngineJob
from PGLCommon.model_info import label_names, read_model_metadata
from PGLCommon.sample_data import load_sample_case


def choose_model(slicer_app, panel, model) -> None:
    slicer_app.folder_answers.append(str(model))
    click(slicer_app, panel.ui.browseModelButton)


def add_pairs(slicer_app, panel, cases) -> None:
    ui = panel.ui
    for volume, segmentation in cases:
        ui.trainVolumeSelector.setCurrentNode(volume)
        ui.trainSegmentationSelector.setCurrentNode(segmentation)
        click(slicer_app, ui.addPairButton)


@pytest.mark.slow
def test_export_model_writes_a_monai_bundle_monai_builds(slicer_app, panel, seg_model, tmp_path):
    import torch
    from monai.bundle import ConfigParser

    ui = panel.ui
    ui.exportModelPathLineEdit.currentPath = str(tmp_path / "bundle")
    click(slicer_app, ui.exportModelButton)  # no model chosen yet
    assert ui.exportModelStatusLabel.text == ("failed: Choose the segmentation model to export (the model list under "
                                              "Segment).") and panel.export.model_monitor.job is None
    choose_model(slicer_app, panel, seg_model)
    beat = Heartbeat().start()
    click(slicer_app, ui.exportModelButton)
    assert ui.exportModelButton.text == "Cancel"
    slicer_app.wait_until(lambda: not panel.export.model_monitor.busy, 180, "the bundle export")
    assert beat.stop() < STALL_LIMIT_MS
    assert panel.export.model_monitor.state.state == "done", ui.exportModelStatusLabel.text
    bundle = tmp_path / "bundle"
    assert ui.exportResultLabel.text.startswith(f"MONAI Bundle written to {bundle}. Run it with: python -m "
                                                f"monai.bundle run --config_file")
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    channels = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    names = label_names(read_model_metadata(str(seg_model)))
    assert names[:4] == ["liver", "spleen", "right kidney", "left kidney"]
    assert channels == {str(i): name for i, name in enumerate(["background", *names])}  # machine-readable labels
    assert "phantom" not in (bundle / "configs" / "metadata.json").read_text()  # neutral case names by default
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True), strict=True)
    assert ui.exportModelButton.text == "Export model" and ui.exportModelButton.enabled

    # the folder now holds the bundle: a second export into it is refused before anything runs
    click(slicer_app, ui.exportModelButton)
    assert f"{bundle}: already holds files; choose a new or empty folder" in ui.exportModelStatusLabel.text
    assert panel.export.model_monitor.job is None
    pretrained = tmp_path / "pretrained"
    pretrained.mkdir()
    (pretrained / "pgl_model.json").write_text(json.dumps({"format": "pgl-model", "kind": "pretrained"}))
    choose_model(slicer_app, panel, pretrained)
    ui.exportModelPathLineEdit.currentPath = str(tmp_path / "other")
    click(slicer_app, ui.exportModelButton)
    assert "is a pretrained model; a MONAI Bundle holds a segmentation model" in ui.exportModelStatusLabel.text
    assert not (tmp_path / "other").exists()
    assert len(slicer_app.shown()) == 3  # each refusal also in a dialog


@pytest.mark.slow
def test_export_for_nnunet_writes_the_pairs_as_a_dataset_nnunet_verifies(slicer_app, panel, cohort, tmp_path, capfd):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    ui = panel.ui
    raw = tmp_path / "nnUNet_raw"
    ui.nnunetFolderLineEdit.currentPath = str(raw)
    click(slicer_app, ui.exportNNUNetButton)  # nothing chosen
    assert ui.exportNNUNetStatusLabel.text.startswith("failed: pair 1: choose both")
    cases = [load_sample_case(str(cohort), slicer_app.scene, i) for i in (0, 1, 2)]
    segmentation = cases[2][1].GetSegmentation()  # the third pair lacks the spleen: not a complete case for nnU-Net
    segmentation.RemoveSegment(segmentation.GetSegmentIdBySegmentName("spleen"))
    add_pairs(slicer_app, panel, cases)
    widget = ui.segmentsListWidget
    import qt

    for i in range(widget.count):
        widget.item(i).setCheckState(qt.Qt.Checked if widget.item(i).text() in ("liver", "spleen") else
                                     qt.Qt.Unchecked)
    ui.nnunetNameLineEdit.text = "Abdomen CT"
    click(slicer_app, ui.exportNNUNetButton)
    assert "The dataset name may hold letters, digits, '_' and '-' only" in ui.exportNNUNetStatusLabel.text
    ui.nnunetNameLineEdit.text = "Abdomen"
    assert ui.nnunetIdSpinBox.value == 0  # "next free": the first from 500 up
    beat = Heartbeat().start()
    click(slicer_app, ui.exportNNUNetButton)
    assert ui.exportNNUNetButton.text == "Cancel"
    slicer_app.wait_until(lambda: not panel.export.nnunet_monitor.busy, 180, "the nnU-Net export")
    assert beat.stop() < STALL_LIMIT_MS
    assert panel.export.nnunet_monitor.state.state == "done", ui.exportNNUNetStatusLabel.text
    dataset = raw / "Dataset500_Abdomen"
    data = json.loads((dataset / "dataset.json").read_text())
    assert data["labels"] == {"background": 0, "liver": 1, "spleen": 2} and data["numTraining"] == 2
    assert sorted(p.name for p in (dataset / "imagesTr").iterdir()) == ["Abdomen_001_0000.nii.gz",
                                                                       "Abdomen_002_0000.nii.gz"]
    assert sorted(p.name for p in (dataset / "labelsTr").iterdir()) == ["Abdomen_001.nii.gz", "Abdomen_002.nii.gz"]
    log = ui.exportNNUNetLogTextEdit.toPlainText()
    assert "phantom_002 lacks spleen" in log and "not taught as background" not in log  # the engine's note only
    text = ui.exportResultLabel.text
    assert text.startswith(f"nnU-Net dataset written to {dataset} (2 case(s); left out, as they do not label every "
                           f"segment: phantom_002 lacks spleen).") and "nnUNetv2_plan_and_preprocess -d 500" in text
    capfd.readouterr()
    verify_dataset_integrity(str(dataset), num_processes=1)
    printed = capfd.readouterr().out
    assert "verify_dataset_integrity Done" in printed and "Error" not in printed, printed

    # the same name and ID again: refused before anything is written; the next export gets the next free ID
    ui.nnunetIdSpinBox.value = 500
    click(slicer_app, ui.exportNNUNetButton)
    assert f"{dataset}: already holds files; choose a new or empty folder" in ui.exportNNUNetStatusLabel.text
    ui.nnunetNameLineEdit.text = "Other"
    click(slicer_app, ui.exportNNUNetButton)
    assert "already holds Dataset500_Abdomen with the ID 500" in ui.exportNNUNetStatusLabel.text
    assert panel.export.nnunet_monitor.job is None
    assert slicer_app.shown() == [
        "pair 1: choose both a volume and a segmentation.",
        "The dataset name may hold letters, digits, '_' and '-' only (it becomes the folder DatasetNNN_NAME), got "
        "'Abdomen CT'.",
        f"{dataset}: already holds files; choose a new or empty folder for the nnU-Net dataset (nothing was "
        f"written).",
        f"{raw}: already holds Dataset500_Abdomen with the ID 500; nnU-Net finds datasets by ID, so choose another "
        f"ID (or leave it to the panel: the next free one)."]


# an engine that announces its configuration, then trains only once the test opens the gate
CONFIGURED = """import json, os, sys, time
args = sys.argv[2:]
out, gate = args[args.index("--out") + 1], sys.argv[1]
say = lambda **event: print(json.dumps(event), flush=True)
say(event="info", message="configuration chosen for this machine and the 5-minute budget: 3 x 3 x 6 mm voxels, "
                          "48 x 48 x 32 patch, half width: about 900 steps fit")
end = time.monotonic() + 60
while not os.path.exists(gate) and time.monotonic() < end:
    time.sleep(0.02)
say(event="progress", stage="finetune", step=1, total=2, loss=0.5)
say(event="done", model_dir=out)
"""


def gated_engine(gate, seen):
    class StandIn(EngineJob):
        @classmethod
        def for_engine(cls, command, args, env=None, **options):
            job = super().for_engine(command, args, env=env, **options)
            seen.append([str(a) for a in args])
            job.args = [sys.executable, "-c", CONFIGURED, str(gate), *job.args[job.args.index(command) + 1:]]
            return job

    return StandIn


def test_fine_tune_shows_the_chosen_configuration_before_training_starts(slicer_app, panel, cohort, tmp_path):
    ui, seen, gate = panel.ui, [], tmp_path / "gate"
    panel.logic.job_class = gated_engine(gate, seen)
    assert ui.finetuneMinutesSpinBox.value == DEFAULT_FINETUNE_MINUTES == 5.0
    add_pairs(slicer_app, panel, [load_sample_case(str(cohort), slicer_app.scene, 0)])
    ui.finetuneOutputPathLineEdit.currentPath = str(tmp_path / "model")
    click(slicer_app, ui.finetuneButton)
    job = panel.finetune_monitor.job
    slicer_app.wait_until(lambda: ui.finetuneStatusLabel.text.startswith("Configuration chosen"), 60,
                          "the chosen configuration in the status line")
    assert not job.finished() and not gate.exists()  # shown while the engine waits, before any training step
    assert ui.finetuneStatusLabel.text.startswith("Configuration chosen for this machine and the 5-minute budget: "
                                                  "3 x 3 x 6 mm voxels")
    assert "info: configuration chosen for this machine" in ui.finetuneLogTextEdit.toPlainText()
    assert seen[0][seen[0].index("--minutes") + 1] == "5.0" and "--steps" not in seen[0]
    gate.write_text("")
    slicer_app.wait_until(lambda: not panel.finetune_monitor.busy, 60, "the stand-in fine-tuning")
    assert panel.finetune_monitor.state.state == "done"
    assert "info: configuration chosen" in ui.finetuneLogTextEdit.toPlainText()  # kept in the log


def test_refine_trains_for_the_engines_refine_budget_by_default(slicer_app, panel):
    assert panel.ui.refineSecondsSpinBox.value == round(REFINE_MINUTES * 60) == 30
