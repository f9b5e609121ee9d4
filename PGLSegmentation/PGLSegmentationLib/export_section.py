"""The Export section of the PGL Segmentation panel: GUI wiring only. The work is the logic's exportModel (a MONAI
Bundle) and exportForNNUNet (an nnU-Net v2 raw dataset of the fine-tuning pairs), engine jobs shown by JobMonitor."""
from __future__ import annotations

import re
from pathlib import Path


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
        self.model_monitor = panel.job_monitor("exportModel", "Export model", self.on_model_exported)
        self.nnunet_monitor = panel.job_monitor("exportNNUNet", "Export for nnU-Net", self.on_dataset_exported)
        self.ui.exportModelButton.connect("clicked()", self.on_export_model)
        self.ui.exportNNUNetButton.connect("clicked()", self.on_export_nnunet)

    def on_export_model(self) -> None:
        if self.panel.cancelled(self.model_monitor):
            return
        p = self.panel.parameters()
        self.started(self.model_monitor, lambda: self.panel.logic.exportModel(p.model, p.exportModelDir,
                                                                             keepCaseNames=p.keepCaseNames))

    def on_export_nnunet(self) -> None:
        if self.panel.cancelled(self.nnunet_monitor):
            return
        p = self.panel.parameters()
        volumes, segmentations = p.training_pairs()
        self.started(self.nnunet_monitor, lambda: self.panel.logic.exportForNNUNet(
            volumes, segmentations, p.nnunetFolder, name=p.nnunetName.strip() or "PGL", datasetId=p.nnunetId or None,
            segmentNames=p.segmentNames, keepCaseNames=p.keepCaseNames))

    def started(self, monitor, make_job) -> None:
        if self.panel.start(monitor, make_job):
            self.ui.exportResultLabel.text = ""

    def on_model_exported(self, state, job) -> None:
        self.finished(state, describe_bundle)

    def on_dataset_exported(self, state, job) -> None:
        self.finished(state, describe_dataset)

    def finished(self, state, describe) -> None:
        if state.state == "done":
            self.ui.exportResultLabel.text = describe(state.result)
        self.panel.show_failure(state, "PGL export")

    def on_scene_close(self) -> None:
        """An nnU-Net export still writing the scene's nodes stops; the engine's part uses files and goes on."""
        if getattr(self.nnunet_monitor.job, "preparing", False):
            self.nnunet_monitor.cancel()

    def shutdown(self) -> None:
        self.model_monitor.shutdown()
        self.nnunet_monitor.shutdown()
