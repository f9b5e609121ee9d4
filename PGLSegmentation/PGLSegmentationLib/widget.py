"""The PGL Segmentation panel: GUI wiring only; work in logic.py, job display in PGLCommon."""
from __future__ import annotations

import os
import tempfile

import qt
import slicer

from PGLCommon.agreement import describe_change, dice_from_counts, joint_counts
from PGLCommon.dependencies import DependencyError, ensure_dependencies
from PGLCommon.engine_runs import EngineError
from PGLCommon.job_monitor import DEVICES, JobMonitor
from PGLCommon.model_info import (describe_finetune_time, describe_model, describe_segment_time, label_names,
                                  read_model_metadata)
from PGLCommon.nodes import NodeError
from PGLCommon.output_folders import holds_pgl_run, is_model_folder
from PGLCommon.staged_job import StagedJob

from pgl_engine import contract

from .export_section import ExportSection
from .logic import REFINE_SECONDS, PGLSegmentationLogic, segment_names

MODELS_SETTING = "PGL/Models"


def settings_list(value) -> list[str]:
    """A QSettings list as a list: an ini file reads a one-item list back as a plain string, and none as None."""
    if not value:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


class SegmentationPanel:
    def __init__(self, ui_path: str, layout, logic: PGLSegmentationLogic | None = None, show_errors: bool = True):
        self.logic = logic or PGLSegmentationLogic()
        self.show_errors = show_errors
        widget = slicer.util.loadUI(ui_path)
        layout.addWidget(widget)
        widget.setMRMLScene(slicer.mrmlScene)
        self.ui = slicer.util.childWidgetVariables(widget)
        self.pairs: list[tuple[str, str]] = []  # (volume node ID, segmentation node ID)
        self.segment_volume_id = ""
        self.ui.deviceComboBox.addItems(list(DEVICES))
        self.ui.sampleFolderLineEdit.currentPath = os.path.join(tempfile.gettempdir(), "PGLSampleData")
        self.finetune_monitor = JobMonitor(self.ui.finetuneButton, self.ui.finetuneProgressBar,
                                           self.ui.finetuneStatusLabel, self.ui.finetuneLogTextEdit, "Fine-tune",
                                           self.on_finetune_finished)
        self.segment_monitor = JobMonitor(self.ui.applyButton, self.ui.segmentProgressBar,
                                          self.ui.segmentStatusLabel, self.ui.segmentLogTextEdit, "Apply",
                                          self.on_segment_finished)
        self.refine_monitor = JobMonitor(self.ui.refineButton, self.ui.refineProgressBar, self.ui.refineStatusLabel,
                                         self.ui.refineLogTextEdit, "Refine", self.on_refine_finished)
        self.check_monitor = JobMonitor(self.ui.checkButton, self.ui.checkProgressBar, self.ui.checkStatusLabel,
                                        self.ui.checkLogTextEdit, "Check the pretraining", self.on_check_finished)
        self.export = ExportSection(self)
        self.ui.refineSecondsSpinBox.value = round(REFINE_SECONDS)  # the engine's refine budget
        self.ui.finetuneMinutesSpinBox.value = contract.DEFAULT_FINETUNE_MINUTES  # the engine's, whatever the .ui says
        self.segment_model = ""
        self.last_result: dict | None = None  # the latest result: volume, segmentation, model, labels as applied
        self.refine_round: dict = {}  # the refine in progress: phase, correction, Dice before
        for model in settings_list(slicer.app.settings().value(MODELS_SETTING)):
            if is_model_folder(model):
                self.logic.remember(model)
        self.refresh_models()
        self.ui.addPairButton.connect("clicked()", self.add_pair)
        self.ui.removePairButton.connect("clicked()", self.remove_pair)
        self.ui.trainSegmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.refresh_segments)
        self.ui.finetuneButton.connect("clicked()", self.on_finetune)
        self.ui.applyButton.connect("clicked()", self.on_apply)
        self.ui.browseModelButton.connect("clicked()", self.browse_model)
        self.ui.sampleDataButton.connect("clicked()", self.on_sample_data)
        self.ui.refineButton.connect("clicked()", self.on_refine)
        self.ui.checkButton.connect("clicked()", self.on_check)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.show_model_info)
        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.show_segment_time)
        self.ui.finetuneMinutesSpinBox.connect("valueChanged(double)", self.show_finetune_time)
        self.show_model_info()
        self.show_finetune_time()
        # a scene close takes the volume a segmentation result belongs to; fine-tuning uses files and goes on
        self.scene_observer = slicer.mrmlScene.AddObserver(slicer.mrmlScene.StartCloseEvent, self.on_scene_close)

    # --- pairs and segments -------------------------------------------------------------------------------
    def add_pair(self) -> None:
        volume = self.ui.trainVolumeSelector.currentNode()
        segmentation = self.ui.trainSegmentationSelector.currentNode()
        if volume is None or segmentation is None:
            self.report(self.finetune_monitor, "Choose a volume and a segmentation, then press Add pair.")
            return
        self.pairs.append((volume.GetID(), segmentation.GetID()))
        self.ui.pairsListWidget.addItem(f"{volume.GetName()}  /  {segmentation.GetName()}")
        self.refresh_segments()
        self.show_finetune_time()

    def remove_pair(self) -> None:
        row = self.ui.pairsListWidget.currentRow
        if 0 <= row < len(self.pairs):
            self.pairs.pop(row)
            self.ui.pairsListWidget.takeItem(row)
            self.show_finetune_time()

    def refresh_segments(self, *args) -> None:
        """Offer every segment name of the chosen segmentations, all checked."""
        nodes = [slicer.mrmlScene.GetNodeByID(s) for _, s in self.pairs]
        nodes.append(self.ui.trainSegmentationSelector.currentNode())
        names = list(dict.fromkeys(n for node in nodes if node is not None for n in segment_names(node)))
        self.ui.segmentsListWidget.clear()
        for name in names:
            item = qt.QListWidgetItem(name)
            item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
            item.setCheckState(qt.Qt.Checked)
            self.ui.segmentsListWidget.addItem(item)

    def chosen_segments(self) -> list[str] | None:
        """The checked segment names; None when no segment is listed yet (then every segment is used)."""
        widget = self.ui.segmentsListWidget
        if widget.count == 0:
            return None
        return [widget.item(i).text() for i in range(widget.count) if widget.item(i).checkState() == qt.Qt.Checked]

    # --- fine-tune ----------------------------------------------------------------------------------------
    def show_finetune_time(self, *args) -> None:
        """What the training budget amounts to on this machine, before Fine-tune is pressed."""
        recent = [read_model_metadata(m) for m in reversed(self.logic.models)]
        self.ui.finetuneEstimateLabel.text = describe_finetune_time(self.ui.finetuneMinutesSpinBox.value,
                                                                    len(self.pairs) or 1, recent)

    def chosen_pairs(self) -> tuple[list, list]:
        """(volumes, segmentations) of the listed pairs, else of the pair in the selectors (None where unchosen)."""
        pairs = self.pairs or [(getattr(self.ui.trainVolumeSelector.currentNode(), "GetID", lambda: "")(),
                                getattr(self.ui.trainSegmentationSelector.currentNode(), "GetID", lambda: "")())]
        return [slicer.mrmlScene.GetNodeByID(v) for v, _ in pairs], [slicer.mrmlScene.GetNodeByID(s) for _, s in pairs]

    def on_finetune(self) -> None:
        if self.finetune_monitor.busy:
            self.finetune_monitor.cancel()
            return
        volumes, segmentations = self.chosen_pairs()
        output = self.ui.finetuneOutputPathLineEdit.currentPath
        overwrite = holds_pgl_run(output)
        if overwrite and not slicer.util.confirmOkCancelDisplay(
                f"{output} already holds a PGL model or run. Replace it?", windowTitle="PGL fine-tuning"):
            return
        try:
            ensure_dependencies()
            job = self.logic.finetune(volumes, segmentations, output, segmentNames=self.chosen_segments(),
                                      init=self.ui.initPathLineEdit.currentPath or "none",
                                      minutes=self.ui.finetuneMinutesSpinBox.value,
                                      device=DEVICES[self.ui.deviceComboBox.currentText], overwrite=overwrite,
                                      wait=False)
        except (DependencyError, NodeError, EngineError, OSError) as e:
            self.report(self.finetune_monitor, str(e))
            return
        self.finetune_monitor.start(job)

    def on_finetune_finished(self, state, job) -> None:
        kept = state.result.get("event") == "cancelled" and state.result.get("model_dir")  # stopped early
        if state.state == "done" or kept:
            self.logic.remember(state.result.get("model_dir", ""))
            slicer.app.settings().setValue(MODELS_SETTING, self.logic.models[-20:])
            self.refresh_models()
            self.show_finetune_time()  # now from this run's own timing
        elif state.state == "failed" and self.show_errors:
            slicer.util.errorDisplay(state.message, windowTitle="PGL fine-tuning")

    def on_check(self) -> None:
        """Random vs the chosen pretrained model on the listed pairs, each held out once (a paired comparison)."""
        if self.check_monitor.busy:
            self.check_monitor.cancel()
            return
        volumes = [slicer.mrmlScene.GetNodeByID(v) for v, _ in self.pairs]
        segmentations = [slicer.mrmlScene.GetNodeByID(s) for _, s in self.pairs]
        try:
            ensure_dependencies()
            job = self.logic.check_pretraining(volumes, segmentations, self.ui.initPathLineEdit.currentPath,
                                               segmentNames=self.chosen_segments(),
                                               steps=self.ui.checkStepsSpinBox.value,
                                               device=DEVICES[self.ui.deviceComboBox.currentText], wait=False)
        except (DependencyError, NodeError, EngineError, OSError) as e:
            self.report(self.check_monitor, str(e))
            return
        self.ui.checkResultLabel.text = ""
        self.check_monitor.start(job)

    def on_check_finished(self, state, job) -> None:
        if state.state == "done":
            self.ui.checkResultLabel.text = state.result.get("text", "")  # the engine's own summary line
        elif state.state == "failed" and self.show_errors:
            slicer.util.errorDisplay(state.message, windowTitle="PGL check")

    # --- segment ------------------------------------------------------------------------------------------
    def refresh_models(self) -> None:
        self.ui.modelComboBox.clear()
        for model in reversed(self.logic.models):
            self.ui.modelComboBox.addItem(os.path.basename(model.rstrip("/")) or model, model)

    def chosen_model(self) -> str:
        return self.ui.modelComboBox.itemData(self.ui.modelComboBox.currentIndex) or ""

    def show_model_info(self, *args) -> None:
        """What the chosen model was trained from, its validation Dice, and warnings."""
        model = self.chosen_model()
        if not model:
            self.ui.modelInfoLabel.text = ""
            self.show_segment_time()
            return
        text, warnings = describe_model(model)
        self.ui.modelInfoLabel.text = text + "".join(f"\nWarning: {w}" for w in warnings)
        self.show_segment_time()

    def show_segment_time(self, *args) -> None:
        """The expected segmentation time of the chosen volume with the chosen model, before Apply."""
        model, volume = self.chosen_model(), self.ui.inputVolumeSelector.currentNode()
        image = volume.GetImageData() if volume is not None else None
        metadata = read_model_metadata(model) if model else {}
        if image is None or metadata.get("kind") != "segmentation":
            self.ui.segmentTimeLabel.text = ""
            return
        self.ui.segmentTimeLabel.text = describe_segment_time(metadata, image.GetDimensions(), volume.GetSpacing())

    def browse_model(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(None, "PGL model folder")
        if folder:
            self.logic.remember(folder)
            self.refresh_models()

    def on_apply(self) -> None:
        if self.segment_monitor.busy:
            self.segment_monitor.cancel()
            return
        model = self.chosen_model()
        volume = self.ui.inputVolumeSelector.currentNode()
        try:
            ensure_dependencies()
            job = self.logic.start_segment(volume, model, self.ui.largestComponentCheckBox.checked,
                                           DEVICES[self.ui.deviceComboBox.currentText])
        except (DependencyError, NodeError, OSError) as e:
            self.report(self.segment_monitor, str(e))
            return
        self.segment_volume_id, self.segment_model = volume.GetID(), model
        self.segment_monitor.start(job)

    def on_segment_finished(self, state, job) -> None:
        if state.state != "done":
            if state.state == "failed" and self.show_errors:
                slicer.util.errorDisplay(state.message, windowTitle="PGL segmentation")
            return
        volume = slicer.mrmlScene.GetNodeByID(getattr(self, "segment_volume_id", ""))
        if volume is not None:
            self.show_result(volume, *job.result, self.segment_model)

    def show_result(self, volume, node, labels, table: dict, model: str) -> None:
        """Show a segmentation result and remember it as it came from the model (Refine compares against it):
        the engine's label array and table, so no export is needed."""
        if self.ui.show3DCheckBox.checked:
            node.CreateClosedSurfaceRepresentation()
        slicer.util.setSliceViewerLayers(background=volume)
        values = {entry["name"]: int(value) for value, entry in table.items()}
        self.last_result = {"volume": volume.GetID(), "segmentation": node.GetID(), "model": model,
                            "names": label_names(read_model_metadata(model)), "labels": labels, "values": values}

    # --- refine -------------------------------------------------------------------------------------------
    def on_refine(self) -> None:
        """Learn from the corrected result: fine-tune the model further, then segment the volume again, then
        compare both results with the correction."""
        if self.refine_monitor.busy:
            self.refine_monitor.cancel()
            return
        result = self.last_result or {}
        volume = slicer.mrmlScene.GetNodeByID(result.get("volume", ""))
        segmentation = slicer.mrmlScene.GetNodeByID(result.get("segmentation", ""))
        if volume is None or segmentation is None:
            self.report(self.refine_monitor, "Apply a model to a volume first, correct the result in the Segment "
                                             "Editor, then press Refine.")
            return
        pairs = [(slicer.mrmlScene.GetNodeByID(v), slicer.mrmlScene.GetNodeByID(s)) for v, s in self.pairs]
        round_ = {"phase": "train", "before": result}
        try:
            ensure_dependencies()
            job = self.logic.refine(volume, segmentation, result["model"],
                                    seconds=self.ui.refineSecondsSpinBox.value,
                                    earlierPairs=[(v, s) for v, s in pairs if v is not None and s is not None],
                                    device=DEVICES[self.ui.deviceComboBox.currentText], wait=False,
                                    onCorrectedLabels=lambda labels: round_.update(corrected=labels))
        except (DependencyError, NodeError, EngineError, OSError) as e:
            self.report(self.refine_monitor, str(e))
            return
        self.refine_round = round_
        self.ui.refineDiceLabel.text = ""
        self.refine_monitor.start(job)

    def on_refine_finished(self, state, job) -> None:
        """Each phase's end starts the next: train -> segment -> Dice."""
        result, round_ = self.last_result or {}, self.refine_round
        volume = slicer.mrmlScene.GetNodeByID(result.get("volume", ""))
        segmentation = slicer.mrmlScene.GetNodeByID(result.get("segmentation", ""))
        if state.state != "done" or (volume is None and round_.get("phase") != "dice"):
            if state.state == "failed" and self.show_errors:
                slicer.util.errorDisplay(state.message, windowTitle="PGL refine")
            self.refine_round = {}
            return
        if round_.get("phase") == "train":
            model = state.result.get("model_dir", "")
            self.logic.remember(model)
            slicer.app.settings().setValue(MODELS_SETTING, self.logic.models[-20:])
            self.refresh_models()
            into = segmentation if self.ui.refineReplaceCheckBox.checked else None
            try:
                next_job = self.logic.start_segment(volume, model, self.ui.largestComponentCheckBox.checked,
                                                    DEVICES[self.ui.deviceComboBox.currentText], into=into)
            except (NodeError, OSError) as e:
                self.report(self.refine_monitor, str(e))
                self.refine_round = {}
                return
            round_.update(phase="segment", model=model)
            self.refine_monitor.start(next_job)
        elif round_.get("phase") == "segment":
            self.show_result(volume, *job.result, round_["model"])
            if round_.get("corrected") is None:
                self.refine_round = {}
                return
            round_["phase"] = "dice"
            self.refine_monitor.start(StagedJob(self.compare_with_correction(round_["before"], self.last_result,
                                                                             round_["corrected"])))
        else:
            before, after = job.result
            self.ui.refineDiceLabel.text = describe_change(before, after)
            self.refine_round = {}

    @staticmethod
    def compare_with_correction(before: dict, after: dict, corrected):
        """Dice of the results before and after Refine against the correction (value i+1 for the model's label
        i), per label name, a slab per step."""
        scores, names = [], before["names"]  # the correction's values follow the model's labels
        for result in (before, after):
            counts = yield from joint_counts(result["labels"], corrected)
            scores.append(dice_from_counts(counts, {n: (result["values"].get(n), i + 1) for i, n in enumerate(names)}))
        return tuple(scores)

    # --- sample data -------------------------------------------------------------------------------------
    def on_sample_data(self) -> None:
        folder = self.ui.sampleFolderLineEdit.currentPath
        try:
            ensure_dependencies()
            with slicer.util.WaitCursor():
                if not os.path.isfile(os.path.join(folder, "dataset.json")):
                    self.logic.sample_data(folder, count=4)
                volume, segmentation = self.logic.load_sample_case(folder, slicer.mrmlScene, 0)
        except (DependencyError, NodeError, EngineError, OSError) as e:
            self.report(self.finetune_monitor, str(e))
            return
        self.ui.trainVolumeSelector.setCurrentNode(volume)
        self.ui.trainSegmentationSelector.setCurrentNode(segmentation)
        self.ui.inputVolumeSelector.setCurrentNode(volume)
        slicer.util.setSliceViewerLayers(background=volume, fit=True)

    # --- errors and shutdown ------------------------------------------------------------------------------
    def report(self, monitor: JobMonitor, message: str) -> None:
        monitor.fail(message)
        if self.show_errors:
            slicer.util.errorDisplay(message, windowTitle="PGL Segmentation")

    def on_scene_close(self, *args) -> None:
        """The scene's volumes go: cancel what reads or writes them; fine-tuning uses files and goes on. The pairs
        are forgotten: node IDs restart after a close, so the next scene's nodes would answer to them."""
        self.segment_monitor.cancel()
        self.refine_monitor.cancel()
        for monitor in (self.finetune_monitor, self.check_monitor):  # still exporting the scene's nodes: stop
            if getattr(monitor.job, "preparing", False):
                monitor.cancel()
        self.export.on_scene_close()
        self.last_result = None
        self.pairs.clear()
        self.ui.pairsListWidget.clear()
        self.ui.segmentsListWidget.clear()
        self.show_finetune_time()

    def shutdown(self) -> None:
        """Module reload or application exit: running jobs are cancelled without waiting."""
        self.finetune_monitor.shutdown()
        self.segment_monitor.shutdown()
        self.refine_monitor.shutdown()
        self.check_monitor.shutdown()
        self.export.shutdown()
        slicer.mrmlScene.RemoveObserver(self.scene_observer)
