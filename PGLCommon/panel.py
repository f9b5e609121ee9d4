"""What the PGL Pretrain and PGL Segmentation panels do alike: load the .ui, bind its fields to the parameters the
logic takes, install the engine's packages before a job, start and cancel jobs on their monitors, and show a
user's mistake in the panel (and in a dialog) instead of a traceback.
"""
from __future__ import annotations

from typing import Callable

import slicer

from .dependencies import DependencyError, ensure_dependencies
from .engine_runs import EngineError
from .errors import UserError
from .job_monitor import DEVICES, JobMonitor
from .output_folders import holds_pgl_run

FAILURES = (DependencyError, UserError, EngineError, OSError)  # shown as a message, in the panel


class Panel:
    """The .ui in the module's layout as `ui` (with the device choice filled in), and the job plumbing."""

    title = "PGL"  # the error dialogs' window title

    def __init__(self, ui_path: str, layout, show_errors: bool = True):
        self.show_errors = show_errors
        self.widget = slicer.util.loadUI(ui_path)
        layout.addWidget(self.widget)
        self.ui = slicer.util.childWidgetVariables(self.widget)
        self.ui.deviceComboBox.addItems(list(DEVICES))

    def job_monitor(self, prefix: str, text: str, on_finished: Callable, button: str = "") -> JobMonitor:
        """A JobMonitor on the ui's <prefix>Button (or `button`), ProgressBar, StatusLabel and LogTextEdit."""
        ui = self.ui
        return JobMonitor(getattr(ui, button or f"{prefix}Button"), getattr(ui, f"{prefix}ProgressBar"),
                          getattr(ui, f"{prefix}StatusLabel"), getattr(ui, f"{prefix}LogTextEdit"), text, on_finished)

    @staticmethod
    def cancelled(monitor: JobMonitor) -> bool:
        """A Start/Cancel button pressed while its job runs cancels the job (True); else False."""
        busy = monitor.busy
        if busy:
            monitor.cancel()
        return busy

    def attempt(self, monitor: JobMonitor, action: Callable[[], object], check: Callable[[], None] | None = None):
        """action() once `check()` passed and the engine's packages are installed; a failure the user can act on is
        shown on `monitor` (and in a dialog) and gives None."""
        try:
            if check:
                check()
            ensure_dependencies()
            return action()
        except FAILURES as e:
            self.report(monitor, str(e))
            return None

    def start(self, monitor: JobMonitor, make_job: Callable[[], object],
              check: Callable[[], None] | None = None) -> bool:
        """Start the job make_job() returns on `monitor` (see attempt); True when it started."""
        job = self.attempt(monitor, make_job, check)
        if job is not None:
            monitor.start(job)
        return job is not None

    def may_replace(self, folder: str, title: str, hint: str = "") -> bool | None:
        """--overwrite for a run into `folder`: False when it holds no PGL run, True once the user agreed to replace
        it, None when the user declined."""
        if not holds_pgl_run(folder):
            return False
        question = f"{folder} already holds a PGL model or run. Replace it?" + (f" {hint}" if hint else "")
        return True if slicer.util.confirmOkCancelDisplay(question, windowTitle=title) else None

    def report(self, monitor: JobMonitor, message: str) -> None:
        monitor.fail(message)
        if self.show_errors:
            slicer.util.errorDisplay(message, windowTitle=self.title)

    def show_failure(self, state, title: str) -> None:
        """A job that failed says why in a dialog too (its status line already does)."""
        if state.state == "failed" and self.show_errors:
            slicer.util.errorDisplay(state.message, windowTitle=title)
