"""Qt side of job monitoring, shared by both modules: a QTimer drains the job's events on the main thread and
shows the JobState on a Start/Cancel button, a progress bar, a status label and a log pane.

Nothing here waits: cancel asks the engine to stop and returns; the timer's poll escalates to a kill after the
grace period and releases the job's temporary folders when it has ended. A job whose panel goes away (module
reload, application exit) is handed to `orphans`, which keeps polling it until it has ended.
"""
from __future__ import annotations

from typing import Callable

import qt

from .job_state import JobState

DEVICES = {"Auto": "auto", "CPU": "cpu", "GPU (CUDA)": "cuda"}  # device combo box text -> engine --device


class OrphanJobs:
    """Jobs that outlived their panel: cancelled, polled until they end (kill after the grace), then released."""

    def __init__(self, interval_ms: int = 500):
        self.jobs: list = []
        self.interval_ms = interval_ms
        self.timer = None

    def adopt(self, job) -> None:
        job.cancel()
        self.jobs.append(job)
        if self.timer is None:
            self.timer = qt.QTimer()
            self.timer.setInterval(self.interval_ms)
            self.timer.connect("timeout()", self.poll)
        self.timer.start()

    def poll(self) -> None:
        for job in list(self.jobs):
            job.poll()
            if job.finished():
                job.release()
                self.jobs.remove(job)
        if not self.jobs and self.timer is not None:
            self.timer.stop()


orphans = OrphanJobs()  # one per Slicer session: PGLCommon is not re-imported when a module is reloaded


class JobMonitor:
    def __init__(self, button, progress_bar, status_label, log_view, start_text: str = "Start",
                 on_finished: Callable[[JobState, object], None] | None = None, interval_ms: int = 100):
        self.button, self.progress_bar, self.status_label, self.log_view = button, progress_bar, status_label, log_view
        self.start_text = start_text
        self.on_finished = on_finished
        self.state = JobState()
        self.job = None
        self.interval_ms = self._interval = interval_ms
        self.timer = qt.QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.connect("timeout()", self.poll)
        self.show()

    def _pace(self) -> None:
        """Poll as soon as the event loop is free while the job has GUI-thread work in slices (a StagedJob writing
        or reading voxels), else every interval_ms."""
        interval = 0 if getattr(self.job, "stepping", False) else self.interval_ms
        if self._interval != interval:
            self._interval = interval
            self.timer.setInterval(interval)

    @property
    def busy(self) -> bool:
        return self.state.busy

    def start(self, job) -> None:
        self.state.start()
        self.job = job
        self.log_view.clear()
        self._pace()
        self.timer.start()
        self.show()

    def cancel(self) -> None:
        """Ask the running job to stop; returns at once (the panel shows "Cancelling..." until it has)."""
        if self.job is not None and self.state.request_cancel():
            self.show()
            self.job.cancel()

    def fail(self, message: str) -> None:
        """A failure before any job started (bad selection, missing dependency)."""
        self.state.start()
        self.state.finish(1, message)
        self.show()

    def log(self, message: str) -> None:
        """A line in the log pane from the panel itself (e.g. a warning found before the job started)."""
        self.log_view.appendPlainText(message)

    def poll(self) -> None:
        if self.job is None:
            return
        for event in self.job.poll():
            self.state.on_event(event)
            if event.get("event") in ("warning", "info", "error", "log"):
                self.log_view.appendPlainText(self.state.log[-1])
        if self.job.finished():
            self.timer.stop()
            self.state.finish(self.job.exit_code, self.job.failure_message())
            job, self.job = self.job, None
            try:
                if self.on_finished:
                    self.on_finished(self.state, job)
            finally:
                job.release()
        else:
            self._pace()
        self.show()

    def show(self) -> None:
        s = self.state
        self.button.text = s.button_text.replace("Start", self.start_text)
        self.button.enabled = s.button_enabled
        self.progress_bar.visible = s.busy or s.state == "done"
        self.progress_bar.setValue(s.progress_percent if s.state != "done" else 100)
        self.status_label.text = s.status

    def shutdown(self) -> None:
        """The panel goes away (module reload, application exit): cancel the job without waiting for it (its
        checkpoint is still written) and leave it to `orphans`; the panel is back to idle."""
        self.timer.stop()
        if self.job is not None:
            job, self.job = self.job, None
            orphans.adopt(job)
        self.state = JobState()
        self.show()
