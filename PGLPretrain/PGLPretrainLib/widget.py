"""The PGL Pretrain panel: GUI wiring only; the work is in logic.py, the job display and the plumbing shared with
PGL Segmentation in PGLCommon (job_monitor, panel)."""
from __future__ import annotations

import qt

from PGLCommon import dependencies
from PGLCommon.engine_failure import failure_in_words
from PGLCommon.errors import UserError
from PGLCommon.job_monitor import DEVICES, JobMonitor, orphans
from PGLCommon.panel import Panel
from PGLCommon.panel_fields import Field, read_fields, write_fields

from pgl_engine import contract

from .logic import PGLPretrainLogic, describe_listing

METHODS = {"PGL (local, prior-guided)": "pgl", "BYOL (global baseline)": "byol"}
FIELDS = {  # PGLPretrainLogic.pretrain argument -> the panel's widget(s)
    "folder": Field("scansPathLineEdit", "currentPath"),
    "outputDir": Field("outputPathLineEdit", "currentPath"),
    "method": Field("methodComboBox", choices=METHODS),
    "steps": Field("stepsSpinBox"),
    "patchSize": Field(("patchXSpinBox", "patchYSpinBox", "patchZSpinBox")),
    "spacing": Field(("spacingXSpinBox", "spacingYSpinBox", "spacingZSpinBox")),
    "device": Field("deviceComboBox", choices=DEVICES),
    "resume": Field("resumeCheckBox", "checked"),
}
# the engine's defaults (pgl_engine.contract), shown whatever the .ui file says, so the two cannot drift
DEFAULTS = dict(method=contract.PRETRAIN_METHOD, device=contract.DEVICE, steps=contract.PRETRAIN_STEPS,
                patchSize=contract.PRETRAIN_PATCH_SIZE, spacing=contract.PRETRAIN_SPACING_MM)


class PretrainPanel(Panel):
    title = "PGL Pretrain"

    def __init__(self, ui_path: str, layout, logic: PGLPretrainLogic | None = None, show_errors: bool = True):
        super().__init__(ui_path, layout, show_errors)
        self.logic = logic or PGLPretrainLogic()
        self.ui.methodComboBox.addItems(list(METHODS))
        write_fields(self.ui, FIELDS, DEFAULTS)
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

    def settings(self) -> dict:
        """The panel's fields as PGLPretrainLogic.pretrain's arguments."""
        return read_fields(self.ui, FIELDS)

    def on_start_or_cancel(self) -> None:
        if self.cancelled(self.monitor):
            return
        settings = self.settings()
        overwrite = False if settings["resume"] else self.may_replace(
            settings["outputDir"], "PGL Pretrain", "(Check 'Resume' to continue it instead.)")
        if overwrite is None:
            return

        def start():
            if self.survey_after_install:
                self.survey_folder()
            return self.logic.pretrain(**settings, overwrite=overwrite, wait=False)

        if self.start(self.monitor, start):
            self.ui.modelFolderLabel.text = ""

    def on_finished(self, state, job) -> None:
        if state.state == "done":
            self.ui.modelFolderLabel.text = f"Model: {state.result.get('model_dir', '')}"
        elif state.state == "failed":
            self.report(self.monitor, state.message)

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
        except (UserError, OSError) as e:
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

    def shutdown(self) -> None:
        """Module reload or application exit: a running job is cancelled without waiting (checkpoint kept)."""
        self.survey_delay.stop()
        self.stop_survey()
        self.monitor.shutdown()
