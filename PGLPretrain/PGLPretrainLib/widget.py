"""The PGL Pretrain panel: GUI wiring only; the work is in logic.py, the job display in PGLCommon."""
from __future__ import annotations

import qt
import slicer

from PGLCommon import dependencies
from PGLCommon.dependencies import DependencyError, ensure_dependencies
from PGLCommon.engine_failure import failure_in_words
from PGLCommon.job_monitor import DEVICES, JobMonitor, orphans
from PGLCommon.output_folders import holds_pgl_run

from pgl_engine import contract

from .logic import PGLPretrainLogic, describe_listing

METHODS = {"PGL (local, prior-guided)": "pgl", "BYOL (global baseline)": "byol"}


class PretrainPanel:
    def __init__(self, ui_path: str, layout, logic: PGLPretrainLogic | None = None, show_errors: bool = True):
        self.logic = logic or PGLPretrainLogic()
        self.show_errors = show_errors
        widget = slicer.util.loadUI(ui_path)
        layout.addWidget(widget)
        self.ui = slicer.util.childWidgetVariables(widget)
        self.ui.methodComboBox.addItems(list(METHODS))
        self.ui.deviceComboBox.addItems(list(DEVICES))
        self.show_defaults()
        self.monitor = JobMonitor(self.ui.startButton, self.ui.progressBar, self.ui.statusLabel, self.ui.logTextEdit,
                                  "Start", self.on_finished)
        self.ui.startButton.connect("clicked()", self.on_start_or_cancel)
        self.ui.modelFolderLabel.text = ""
        self.ui.scanCountLabel.text = ""
        self.survey_job = None  # the engine listing the chosen folder (scan files, DICOM series, skipped)
        self.survey_after_install = False  # the survey waits for the engine's packages (installed by Start)
        self.survey_delay = qt.QTimer()  # typing a path changes it per key: list once the user paused
        self.survey_delay.setSingleShot(True)
        self.survey_delay.setInterval(500)
        self.survey_delay.connect("timeout()", self.survey_folder)
        self.survey_timer = qt.QTimer()
        self.survey_timer.setInterval(200)
        self.survey_timer.connect("timeout()", self.poll_survey)
        self.ui.scansPathLineEdit.connect("currentPathChanged(QString)", lambda *args: self.survey_delay.start())
        # no scene observer: pretraining reads files only, so a scene close leaves a long run alone

    def show_defaults(self) -> None:
        """The engine's defaults (pgl_engine.contract), whatever the .ui file says, so the two cannot drift."""
        ui = self.ui
        ui.methodComboBox.currentIndex = list(METHODS.values()).index(contract.PRETRAIN_METHOD)
        ui.deviceComboBox.currentIndex = list(DEVICES.values()).index(contract.DEVICE)
        ui.stepsSpinBox.value = contract.PRETRAIN_STEPS
        for box, voxels in zip((ui.patchXSpinBox, ui.patchYSpinBox, ui.patchZSpinBox), contract.PATCH_SIZE):
            box.value = voxels
        for box, mm in zip((ui.spacingXSpinBox, ui.spacingYSpinBox, ui.spacingZSpinBox), contract.SPACING_MM):
            box.value = mm

    def settings(self) -> dict:
        ui = self.ui
        return dict(folder=ui.scansPathLineEdit.currentPath, outputDir=ui.outputPathLineEdit.currentPath,
                    method=METHODS[ui.methodComboBox.currentText], steps=ui.stepsSpinBox.value,
                    patchSize=(ui.patchXSpinBox.value, ui.patchYSpinBox.value, ui.patchZSpinBox.value),
                    spacing=(ui.spacingXSpinBox.value, ui.spacingYSpinBox.value, ui.spacingZSpinBox.value),
                    device=DEVICES[ui.deviceComboBox.currentText], resume=ui.resumeCheckBox.checked)

    def on_start_or_cancel(self) -> None:
        if self.monitor.busy:
            self.monitor.cancel()
            return
        settings = self.settings()
        overwrite = not settings["resume"] and holds_pgl_run(settings["outputDir"])
        if overwrite and not slicer.util.confirmOkCancelDisplay(
                f"{settings['outputDir']} already holds a PGL model or run. Replace it? (Check 'Resume' to "
                f"continue it instead.)", windowTitle="PGL Pretrain"):
            return
        try:
            ensure_dependencies()
            if self.survey_after_install:
                self.survey_folder()
            job = self.logic.pretrain(**settings, overwrite=overwrite, wait=False)
        except (DependencyError, ValueError, OSError) as e:
            self.report(str(e))
            return
        self.ui.modelFolderLabel.text = ""
        self.monitor.start(job)

    def on_finished(self, state, job) -> None:
        if state.state == "done":
            self.ui.modelFolderLabel.text = f"Model: {state.result.get('model_dir', '')}"
        elif state.state == "failed":
            self.report(state.message)

    # --- what the folder holds ------------------------------------------------------------------------
    def survey_folder(self) -> None:
        """List the chosen folder with the engine (in the background): how many scans and series will be used."""
        self.stop_survey()
        folder = self.ui.scansPathLineEdit.currentPath
        self.survey_after_install = bool(folder) and bool(dependencies.still_needed())
        if self.survey_after_install:  # first use: the engine would fail on its imports
            self.ui.scanCountLabel.text = ("The engine's Python packages are not installed yet: press Start to "
                                           "install what the engine needs.")
            return
        try:
            self.survey_job = self.logic.scan_list(folder)
        except (ValueError, OSError) as e:
            self.ui.scanCountLabel.text = str(e) if folder else ""
            return
        self.ui.scanCountLabel.text = "Looking for scans and DICOM series..."
        self.survey_timer.start()

    def poll_survey(self) -> None:
        job = self.survey_job
        if job is None:
            return
        listing = None
        for event in job.poll():
            if event.get("event") == "done":
                listing = event
            elif event.get("event") == "error":
                self.ui.scanCountLabel.text = event.get("message", "")
        if listing is not None:
            self.ui.scanCountLabel.text = describe_listing(listing)
        if job.finished():
            if listing is None:  # ended without its answer: say why instead of "Looking for scans..." forever
                self.ui.scanCountLabel.text = f"Could not list the folder: {failure_in_words(job)}"
            self.stop_survey()

    def stop_survey(self) -> None:
        self.survey_timer.stop()
        if self.survey_job is not None:
            job, self.survey_job = self.survey_job, None
            if job.finished():
                job.release()
            else:
                orphans.adopt(job)

    def report(self, message: str) -> None:
        self.monitor.fail(message)
        if self.show_errors:
            slicer.util.errorDisplay(message, windowTitle="PGL Pretrain")

    def shutdown(self) -> None:
        """Module reload or application exit: a running job is cancelled without waiting (checkpoint kept)."""
        self.survey_delay.stop()
        self.stop_survey()
        self.monitor.shutdown()
