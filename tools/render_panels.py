"""Render the real module panels, driven in the Qt harness against the real engine, to PNG.

    .venv/bin/python tools/render_panels.py [OUT_DIR]     (default: docs/images; about 2 minutes on 2 cores)

Writes pretrain_idle, pretrain_running, pretrain_done, pretrain_error, segmentation_idle, segmentation_running,
segmentation_done, segmentation_refined .png, and copies segmentation_done.png to Resources/Screenshots/pgl_segmentation.png (the
extension's screenshot).
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "Testing"), str(ROOT), str(ROOT / "PGLPretrain"), str(ROOT / "PGLSegmentation")]

from panel_helpers import TinyPretrainLogic, TinySegmentationLogic, replace_segments  # noqa: E402
from slicer_harness import SlicerHarness  # noqa: E402


def pretrain_pictures(harness, work: Path, out: Path) -> None:
    panel = harness.load_module("PGLPretrain").panel
    panel.logic = TinyPretrainLogic(work / "cache")
    frame = harness.frames[-1]
    harness.render(frame, out / "pretrain_idle.png")
    ui = panel.ui
    ui.scansPathLineEdit.currentPath = str(work / "sample" / "images")
    ui.outputPathLineEdit.currentPath = str(work / "pgl model")
    ui.stepsSpinBox.value = 40
    for box in (ui.patchXSpinBox, ui.patchYSpinBox, ui.patchZSpinBox):
        box.value = 16
    for box in (ui.spacingXSpinBox, ui.spacingYSpinBox, ui.spacingZSpinBox):
        box.value = 8.0
    ui.deviceComboBox.currentText = "CPU"
    ui.startButton.click()
    harness.wait_until(lambda: panel.monitor.state.step >= 12, 300, "pretraining progress")
    harness.render(frame, out / "pretrain_running.png")
    harness.wait_until(lambda: panel.monitor.state.state == "done", 300, "pretraining")
    harness.render(frame, out / "pretrain_done.png")
    (work / "empty").mkdir(exist_ok=True)
    ui.scansPathLineEdit.currentPath = str(work / "empty")
    ui.outputPathLineEdit.currentPath = str(work / "other model")
    ui.startButton.click()
    harness.wait_until(lambda: panel.monitor.state.state == "failed", 300, "the engine's refusal")
    harness.render(frame, out / "pretrain_error.png")


def segmentation_pictures(harness, work: Path, out: Path) -> None:
    panel = harness.load_module("PGLSegmentation", size=(460, 1420)).panel
    panel.logic = TinySegmentationLogic(work / "cache")
    frame = harness.frames[-1]
    ui = panel.ui
    ui.deviceComboBox.currentText = "CPU"
    ui.sampleFolderLineEdit.currentPath = str(work / "sample")
    harness.render(frame, out / "segmentation_idle.png")
    ui.sampleDataButton.click()
    ui.addPairButton.click()
    ui.initPathLineEdit.currentPath = str(work / "pgl model")
    ui.finetuneOutputPathLineEdit.currentPath = str(work / "organ model")
    ui.finetuneMinutesSpinBox.value = 0.5
    ui.finetuneButton.click()
    harness.wait_until(lambda: panel.finetune_monitor.state.step >= 25, 300, "fine-tuning progress")
    harness.render(frame, out / "segmentation_running.png")
    harness.wait_until(lambda: panel.finetune_monitor.state.state == "done", 600, "fine-tuning")
    ui.show3DCheckBox.checked = False
    ui.applyButton.click()
    harness.wait_until(lambda: panel.segment_monitor.state.state == "done", 300, "segmentation")
    harness.render(frame, out / "segmentation_done.png")
    # the user corrects the result (here: the truth replaces it), then presses Refine
    result = harness.scene.GetNodesByName("phantom_000 PGL").GetItemAsObject(0)
    replace_segments(result, ui.trainSegmentationSelector.currentNode())
    ui.refineSecondsSpinBox.value = 20
    ui.refineButton.click()
    harness.wait_until(lambda: panel.refine_monitor.state.state == "done" and not panel.refine_round, 600, "refine")
    harness.render(frame, out / "segmentation_refined.png")


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="pgl_render_"))
    harness = SlicerHarness(work / "slicer")
    try:
        from PGLCommon.sample_data import write_sample_data

        write_sample_data(str(work / "sample"), count=4)
        pretrain_pictures(harness, work, out)
        segmentation_pictures(harness, work, out)
    finally:
        errors = list(harness.slot_errors)
        harness.close()
        shutil.rmtree(work, ignore_errors=True)
    if errors:
        raise SystemExit("an exception escaped a slot:\n" + "\n".join(errors))
    shutil.copy(out / "segmentation_done.png", ROOT / "Resources" / "Screenshots" / "pgl_segmentation.png")
    print("\n".join(str(p) for p in sorted(out.glob("*.png"))))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "images")
