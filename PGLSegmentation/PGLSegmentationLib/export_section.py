"""The Export section of the PGL Segmentation panel: GUI wiring only. The work is the logic's exportModel (a MONAI
Bundle) and exportForNNUNet (an nnU-Net v2 raw dataset of the fine-tuning pairs), engine jobs shown by JobMonitor."""
from __future__ import annotations

import re
from pathlib import Path

import slicer

from PGLCommon.dependencies import DependencyError, ensure_dependencies
from PGLCommon.engine_runs import EngineError
from PGLCommon.job_monitor import JobMonitor
from PGLCommon.nodes import NodeError

FAILURES = (DependencyError, NodeError, EngineError, OSError)


def describe_bundle(done: dict) -> str:
    out = done.get("out", "")
    return (f"MONAI Bundle written to {out}. Run it with: python -m monai.bundle run --config_file "
            f"\"{Path(out) / 'configs' / 'inference.json'}\" --dataset_dir <scans> --output_dir <results>")


def describe_dataset(done: dict) -> str:
    out = done.get("out", "")
    left_out = done.get("left_out") or []
    found = re.match(r"Dataset(\d{3})_", Path(out).name)
    text = f"nnU-Net dataset written to {out} ({done.get('cases', '?')} case(s)"
    text += f"; left out, as they do not label every segment: {'; '.join(left_out)})." if left_out else ")."
    if found:
        text += (f" Next: nnUNetv2_plan_and_preprocess -d {int(found.group(1))} --verify_dataset_integrity, with "
                 f"nnUNet_raw={Path(out).parent}")
    return text


class ExportSection:
    """Export model / Export for nnU-Net, each with its own button, progress, status and log."""

    def __init__(self, panel):
        self.panel, self.ui = panel, panel.ui
        ui = self.ui
        self.model_monitor = JobMonitor(ui.exportModelButton, ui.exportModelProgressBar, ui.exportModelStatusLabel,
                                        ui.exportModelLogTextEdit, "Export model", self.on_model_exported)
        self.nnunet_monitor = JobMonitor(ui.exportNNUNetButton, ui.exportNNUNetProgressBar, ui.exportNNUNetStatusLabel,
                                         ui.exportNNUNetLogTextEdit, "Export for nnU-Net", self.on_dataset_exported)
        ui.exportModelButton.connect("clicked()", self.on_export_model)
        ui.exportNNUNetButton.connect("clicked()", self.on_export_nnunet)

    def on_export_model(self) -> None:
        if self.model_monitor.busy:
            self.model_monitor.cancel()
            return
        try:
            ensure_dependencies()
            job = self.panel.logic.exportModel(self.panel.chosen_model(), self.ui.exportModelPathLineEdit.currentPath,
                                               keepCaseNames=self.ui.exportKeepNamesCheckBox.checked)
        except FAILURES as e:
            self.panel.report(self.model_monitor, str(e))
            return
        self.ui.exportResultLabel.text = ""
        self.model_monitor.start(job)

    def on_export_nnunet(self) -> None:
        if self.nnunet_monitor.busy:
            self.nnunet_monitor.cancel()
            return
        volumes, segmentations = self.panel.chosen_pairs()
        try:
            ensure_dependencies()
            job = self.panel.logic.exportForNNUNet(volumes, segmentations, self.ui.nnunetFolderLineEdit.currentPath,
                                                   name=self.ui.nnunetNameLineEdit.text.strip() or "PGL",
                                                   datasetId=self.ui.nnunetIdSpinBox.value or None,
                                                   segmentNames=self.panel.chosen_segments(),
                                                   keepCaseNames=self.ui.exportKeepNamesCheckBox.checked)
        except FAILURES as e:
            self.panel.report(self.nnunet_monitor, str(e))
            return
        self.ui.exportResultLabel.text = ""
        self.nnunet_monitor.start(job)

    def on_model_exported(self, state, job) -> None:
        self.finished(state, describe_bundle)

    def on_dataset_exported(self, state, job) -> None:
        self.finished(state, describe_dataset)

    def finished(self, state, describe) -> None:
        if state.state == "done":
            self.ui.exportResultLabel.text = describe(state.result)
        elif state.state == "failed" and self.panel.show_errors:
            slicer.util.errorDisplay(state.message, windowTitle="PGL export")

    def on_scene_close(self) -> None:
        """An nnU-Net export still writing the scene's nodes stops; the engine's part uses files and goes on."""
        if getattr(self.nnunet_monitor.job, "preparing", False):
            self.nnunet_monitor.cancel()

    def shutdown(self) -> None:
        self.model_monitor.shutdown()
        self.nnunet_monitor.shutdown()
