"""The PGL Segmentation panel: its fields bound to one SegmentationParameters, buttons connected to the logic's
workflows (logic.py), jobs and results shown (JobMonitor and the plumbing in PGLCommon.panel)."""
from __future__ import annotations

import os

import qt
import slicer

from PGLCommon.agreement import describe_change
from PGLCommon.job_monitor import DEVICES
from PGLCommon.model_info import describe_finetune_time, describe_model, describe_segment_time, read_model_metadata
from PGLCommon.output_folders import is_model_folder
from PGLCommon.panel import Panel
from PGLCommon.panel_fields import Field, read_fields, write_fields

from .export_section import ExportSection
from .logic import PGLSegmentationLogic, segment_names
from .parameters import SegmentationParameters, SegmentationResult
from .refine import check_refinable

MODELS_SETTING = "PGL/Models"

FIELDS = {  # SegmentationParameters field -> the panel's widget(s)
    "device": Field("deviceComboBox", choices=DEVICES),
    "sampleFolder": Field("sampleFolderLineEdit", "currentPath"),
    "initModel": Field("initPathLineEdit", "currentPath"),
    "outputDir": Field("finetuneOutputPathLineEdit", "currentPath"),
    "finetuneMinutes": Field("finetuneMinutesSpinBox"),
    "checkSteps": Field("checkStepsSpinBox"),
    "largestComponent": Field("largestComponentCheckBox", "checked"),
    "show3D": Field("show3DCheckBox", "checked"),
    "refineSeconds": Field("refineSecondsSpinBox"),
    "refineReplace": Field("refineReplaceCheckBox", "checked"),
    "exportModelDir": Field("exportModelPathLineEdit", "currentPath"),
    "keepCaseNames": Field("exportKeepNamesCheckBox", "checked"),
    "nnunetFolder": Field("nnunetFolderLineEdit", "currentPath"),
    "nnunetName": Field("nnunetNameLineEdit", "text"),
    "nnunetId": Field("nnunetIdSpinBox"),
}


def settings_list(value) -> list[str]:
    """A QSettings list as a list: an ini file reads a one-item list back as a plain string, and none as None."""
    if not value:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


class SegmentationPanel(Panel):
    title = "PGL Segmentation"

    def __init__(self, ui_path: str, layout, logic: PGLSegmentationLogic | None = None, show_errors: bool = True):
        super().__init__(ui_path, layout, show_errors)
        self.logic = logic or PGLSegmentationLogic()
        self.widget.setMRMLScene(slicer.mrmlScene)
        self.pairs: list[tuple[str, str]] = []  # (volume node ID, segmentation node ID)
        self.finetune_monitor = self.job_monitor("finetune", "Fine-tune", self.on_finetune_finished)
        self.segment_monitor = self.job_monitor("segment", "Apply", self.on_segment_finished, "applyButton")
        self.refine_monitor = self.job_monitor("refine", "Refine", self.on_refine_finished)
        self.check_monitor = self.job_monitor("check", "Check the pretraining", self.on_check_finished)
        self.export = ExportSection(self)
        write_fields(self.ui, FIELDS, vars(SegmentationParameters()))  # the engine's defaults, whatever the .ui says
        self.last_result: SegmentationResult | None = None  # the latest result of Apply or Refine
        self.refine_round = None  # the Refine job while it runs
        for model in settings_list(slicer.app.settings().value(MODELS_SETTING)):
            if is_model_folder(model):
                self.logic.remember(model)
        self.refresh_models()
        self.connect_signals()
        self.show_model_info()
        self.show_finetune_time()
        # a scene close takes the volume a segmentation result belongs to; fine-tuning uses files and goes on
        self.scene_observer = slicer.mrmlScene.AddObserver(slicer.mrmlScene.StartCloseEvent, self.on_scene_close)

    def connect_signals(self) -> None:
        ui = self.ui
        for widget, signal, slot in (
                (ui.addPairButton, "clicked()", self.add_pair), (ui.removePairButton, "clicked()", self.remove_pair),
                (ui.trainSegmentationSelector, "currentNodeChanged(vtkMRMLNode*)", self.refresh_segments),
                (ui.finetuneButton, "clicked()", self.on_finetune), (ui.applyButton, "clicked()", self.on_apply),
                (ui.browseModelButton, "clicked()", self.browse_model),
                (ui.sampleDataButton, "clicked()", self.on_sample_data), (ui.refineButton, "clicked()", self.on_refine),
                (ui.checkButton, "clicked()", self.on_check),
                (ui.modelComboBox, "currentIndexChanged(int)", self.show_model_info),
                (ui.inputVolumeSelector, "currentNodeChanged(vtkMRMLNode*)", self.show_segment_time),
                (ui.finetuneMinutesSpinBox, "valueChanged(double)", self.show_finetune_time)):
            widget.connect(signal, slot)

    def parameters(self) -> SegmentationParameters:
        """The panel's fields as the logic's parameter object, read when a button is pressed."""
        ui, scene = self.ui, slicer.mrmlScene
        return SegmentationParameters(
            **read_fields(ui, FIELDS), pairs=[(scene.GetNodeByID(v), scene.GetNodeByID(s)) for v, s in self.pairs],
            selectedPair=(ui.trainVolumeSelector.currentNode(), ui.trainSegmentationSelector.currentNode()),
            segmentNames=self.chosen_segments(), inputVolume=ui.inputVolumeSelector.currentNode(),
            model=self.chosen_model())

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

    # --- fine-tune and check ------------------------------------------------------------------------------
    def show_finetune_time(self, *args) -> None:
        """What the training budget amounts to on this machine, before Fine-tune is pressed."""
        recent = [read_model_metadata(m) for m in reversed(self.logic.models)]
        self.ui.finetuneEstimateLabel.text = describe_finetune_time(self.ui.finetuneMinutesSpinBox.value,
                                                                    len(self.pairs) or 1, recent)

    def on_finetune(self) -> None:
        if self.cancelled(self.finetune_monitor):
            return
        parameters = self.parameters()
        parameters.overwrite = self.may_replace(parameters.outputDir, "PGL fine-tuning")
        if parameters.overwrite is not None:
            self.start(self.finetune_monitor, lambda: self.logic.start_finetune(parameters))

    def on_finetune_finished(self, state, job) -> None:
        kept = state.result.get("event") == "cancelled" and state.result.get("model_dir")  # stopped early
        if state.state == "done" or kept:
            self.logic.remember(state.result.get("model_dir", ""))
            self.keep_models()
        self.show_failure(state, "PGL fine-tuning")

    def on_check(self) -> None:
        """Random vs the chosen pretrained model on the listed pairs, each held out once (a paired comparison)."""
        if self.cancelled(self.check_monitor):
            return
        parameters = self.parameters()
        if self.start(self.check_monitor, lambda: self.logic.start_check(parameters)):
            self.ui.checkResultLabel.text = ""

    def on_check_finished(self, state, job) -> None:
        if state.state == "done":
            self.ui.checkResultLabel.text = state.result.get("text", "")  # the engine's own summary line
        self.show_failure(state, "PGL check")

    # --- models -------------------------------------------------------------------------------------------
    def keep_models(self) -> None:
        """The remembered models, newest first, in the list and in the settings (for the next session)."""
        slicer.app.settings().setValue(MODELS_SETTING, self.logic.models[-20:])
        self.refresh_models()
        self.show_finetune_time()  # now from the newest run's own timing

    def refresh_models(self) -> None:
        self.ui.modelComboBox.clear()
        for model in reversed(self.logic.models):
            self.ui.modelComboBox.addItem(os.path.basename(model.rstrip("/")) or model, model)

    def chosen_model(self) -> str:
        return self.ui.modelComboBox.itemData(self.ui.modelComboBox.currentIndex) or ""

    def show_model_info(self, *args) -> None:
        """What the chosen model was trained from, its validation Dice, and warnings."""
        model = self.chosen_model()
        text, warnings = describe_model(model) if model else ("", [])
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

    # --- apply and refine ---------------------------------------------------------------------------------
    def on_apply(self) -> None:
        if not self.cancelled(self.segment_monitor):
            parameters = self.parameters()
            self.start(self.segment_monitor, lambda: self.logic.start_apply(parameters))

    def on_segment_finished(self, state, job) -> None:
        if state.state == "done" and job.result.present():
            self.show_result(job.result)
        self.show_failure(state, "PGL segmentation")

    def show_result(self, result: SegmentationResult) -> None:
        """Show a segmentation result and keep it as it came from the model (Refine compares against it)."""
        if self.parameters().show3D:
            result.segmentation.CreateClosedSurfaceRepresentation()
        slicer.util.setSliceViewerLayers(background=result.volume)
        self.last_result = result

    def on_refine(self) -> None:
        """Learn from the corrected result: fine-tune the model further, then segment the volume again, then
        compare both results with the correction (the logic's RefineJob)."""
        if self.cancelled(self.refine_monitor):
            return
        parameters, result = self.parameters(), self.last_result
        job = self.attempt(self.refine_monitor, lambda: self.logic.start_refine(result, parameters),
                           check=lambda: check_refinable(result))
        if job is not None:
            self.refine_round = job
            self.ui.refineDiceLabel.text = ""
            self.refine_monitor.start(job)

    def on_refine_finished(self, state, job) -> None:
        """Whatever phase it reached: the refined model is listed, the new result shown, the Dice change said."""
        self.refine_round = None
        if job.model:
            self.keep_models()
        if job.after is not None:
            self.show_result(job.after)
        if job.dice is not None:
            self.ui.refineDiceLabel.text = describe_change(*job.dice)
        self.show_failure(state, "PGL refine")

    # --- sample data -------------------------------------------------------------------------------------
    def on_sample_data(self) -> None:
        folder = self.parameters().sampleFolder

        def load():
            with slicer.util.WaitCursor():
                return self.logic.sample_case(folder, slicer.mrmlScene)

        case = self.attempt(self.finetune_monitor, load)
        if case is None:
            return
        volume, segmentation = case
        self.ui.trainVolumeSelector.setCurrentNode(volume)
        self.ui.trainSegmentationSelector.setCurrentNode(segmentation)
        self.ui.inputVolumeSelector.setCurrentNode(volume)
        slicer.util.setSliceViewerLayers(background=volume, fit=True)

    # --- scene close and shutdown -------------------------------------------------------------------------
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
        for monitor in (self.finetune_monitor, self.segment_monitor, self.refine_monitor, self.check_monitor):
            monitor.shutdown()
        self.export.shutdown()
        slicer.mrmlScene.RemoveObserver(self.scene_observer)
