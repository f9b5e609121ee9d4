"""The PGL Pretrain panel in a Qt event loop, driven by clicks, against real engine subprocesses."""
import json
import os
import subprocess
import sys
import types

import pytest
from conftest import STALL_LIMIT_MS
from panel_helpers import TinyPretrainLogic, click
from slicer_harness import Heartbeat

from pgl_engine.training.checkpoint import load_checkpoint


@pytest.fixture
def panel(slicer_app, tmp_path):
    widget = slicer_app.load_module("PGLPretrain")
    widget.panel.logic = TinyPretrainLogic(tmp_path / "cache")
    return widget.panel


def fill(panel, cohort, out, steps):
    ui = panel.ui
    ui.scansPathLineEdit.currentPath = str(cohort / "images")
    ui.outputPathLineEdit.currentPath = str(out)
    ui.stepsSpinBox.value = steps
    for box in (ui.patchXSpinBox, ui.patchYSpinBox, ui.patchZSpinBox):
        box.value = 16
    for box in (ui.spacingXSpinBox, ui.spacingYSpinBox, ui.spacingZSpinBox):
        box.value = 8.0
    ui.deviceComboBox.currentText = "CPU"


def step_reached(panel, step):
    return panel.monitor.state.step >= step and panel.monitor.state.stage == "pretrain"


@pytest.mark.slow
def test_start_progress_cancel_resume_done_never_stall_the_event_loop(slicer_app, panel, cohort, tmp_path):
    fill(panel, cohort, tmp_path / "model", 100000)
    ui, stalls = panel.ui, {}
    beat = Heartbeat().start()
    assert click(slicer_app, ui.startButton) < STALL_LIMIT_MS
    assert ui.startButton.text == "Cancel" and ui.progressBar.visible
    slicer_app.wait_until(lambda: step_reached(panel, 3), 180, "pretraining progress")
    stalls["start"] = beat.stop()
    assert ui.statusLabel.text.startswith("pretrain ") and "loss" in ui.statusLabel.text
    slicer_app.render(slicer_app.frames[0], tmp_path / "running.png")

    beat.start()
    assert click(slicer_app, ui.startButton) < STALL_LIMIT_MS  # Cancel returns at once
    assert ui.startButton.text == "Cancelling..." and not ui.startButton.enabled
    slicer_app.wait_until(lambda: not panel.monitor.busy, 120, "the cancelled run to stop")
    stalls["cancel"] = beat.stop()
    assert ui.statusLabel.text.startswith("cancelled; checkpoint kept")
    assert ui.startButton.text == "Start" and ui.startButton.enabled
    stopped_at = load_checkpoint(tmp_path / "model")["step"]
    assert stopped_at >= 3

    ui.resumeCheckBox.checked = True
    ui.stepsSpinBox.value = stopped_at + 3
    beat.start()
    click(slicer_app, ui.startButton)
    slicer_app.wait_until(lambda: panel.monitor.state.state == "done", 180, "the resumed run")
    stalls["finish"] = beat.stop()
    assert ui.modelFolderLabel.text == f"Model: {tmp_path / 'model'}"
    metadata = json.loads((tmp_path / "model" / "pgl_model.json").read_text())
    assert metadata["kind"] == "pretrained"
    assert not slicer_app.shown()
    print("longest event-loop stall (ms):", {k: round(v) for k, v in stalls.items()})
    assert max(stalls.values()) < STALL_LIMIT_MS, stalls


@pytest.mark.slow
def test_scene_close_leaves_pretraining_running_and_reload_cancels_without_waiting(slicer_app, panel, cohort,
                                                                                   tmp_path):
    from PGLCommon import job_monitor  # needs the harness's qt

    fill(panel, cohort, tmp_path / "model", 100000)
    click(slicer_app, panel.ui.startButton)
    slicer_app.wait_until(lambda: step_reached(panel, 2), 180, "pretraining progress")
    slicer_app.close_scene()
    slicer_app.process_events(0.5)
    job = panel.monitor.job
    assert job is not None and job.running and panel.ui.startButton.text == "Cancel"
    beat = Heartbeat().start()
    widget = slicer_app.widgets[0]
    widget.cleanup()  # what a module reload or application exit calls
    slicer_app.process_events()
    assert beat.stop() < STALL_LIMIT_MS
    assert panel.ui.startButton.text == "Start" and job in job_monitor.orphans.jobs
    slicer_app.wait_until(lambda: not job_monitor.orphans.jobs, 120, "the orphaned job to stop")
    assert job.exit_code == 130 and load_checkpoint(tmp_path / "model")["step"] >= 2
    assert not job.cleanup and not job.stop_file.parent.exists()  # its control folder is gone


def test_error_paths_show_a_message_in_the_panel(slicer_app, panel, tmp_path):
    ui = panel.ui
    click(slicer_app, ui.startButton)  # nothing chosen
    assert ui.statusLabel.text.startswith("failed: Choose the folder of scans")
    assert slicer_app.shown()[-1].startswith("Choose the folder of scans")
    (tmp_path / "empty").mkdir()
    ui.scansPathLineEdit.currentPath = str(tmp_path / "empty")
    ui.outputPathLineEdit.currentPath = str(tmp_path / "model")
    ui.deviceComboBox.currentText = "CPU"
    click(slicer_app, ui.startButton)
    slicer_app.wait_until(lambda: panel.monitor.state.state == "failed", 120, "the engine's refusal")
    assert "empty" in ui.statusLabel.text and ui.startButton.text == "Start" and ui.startButton.enabled
    assert "empty" in slicer_app.shown()[-1]
    slicer_app.render(slicer_app.frames[0], tmp_path / "error.png")


def test_a_failing_install_is_reported_in_the_panel_not_as_a_traceback(slicer_app, panel, tmp_path, monkeypatch):
    from PGLCommon import dependencies

    def offline(*args, **kwargs):
        raise subprocess.CalledProcessError(1, ["pip", "install", "torch"])

    fake = types.ModuleType("PyTorchUtils")
    fake.PyTorchUtilsLogic = lambda: types.SimpleNamespace(installTorch=offline)
    monkeypatch.setitem(sys.modules, "PyTorchUtils", fake)
    monkeypatch.setattr(dependencies, "torch_needed", lambda: True)
    panel.ui.scansPathLineEdit.currentPath = str(tmp_path)
    panel.ui.outputPathLineEdit.currentPath = str(tmp_path / "model")
    click(slicer_app, panel.ui.startButton)
    assert "PyTorch could not be installed" in panel.ui.statusLabel.text
    assert panel.monitor.job is None and panel.ui.startButton.text == "Start"
    confirm = slicer_app.shown("confirmOkCancelDisplay")
    assert confirm and "torch" in confirm[0]
    slicer_app.confirm_answer = False
    click(slicer_app, panel.ui.startButton)
    assert "cannot run without torch" in panel.ui.statusLabel.text


@pytest.mark.slow
def test_an_existing_run_is_replaced_only_after_the_user_agrees(slicer_app, panel, cohort, tmp_path):
    (tmp_path / "model" / "checkpoints").mkdir(parents=True)
    fill(panel, cohort, tmp_path / "model", 2)
    slicer_app.confirm_answer = False
    click(slicer_app, panel.ui.startButton)
    assert panel.monitor.job is None and "already holds a PGL model or run" in slicer_app.shown("confirmOkCancelDisplay")[0]
    slicer_app.confirm_answer = True
    click(slicer_app, panel.ui.startButton)
    assert "--overwrite" in panel.monitor.job.args
    slicer_app.wait_until(lambda: panel.monitor.state.state == "done", 180, "the replacing run")


@pytest.mark.slow
def test_a_dicom_tree_is_surveyed_before_starting_and_pretrained_on(slicer_app, panel, cohort, tmp_path):
    from dicom_series import write_localizer, write_series

    from pgl_engine.data.imaging import read_image

    archive = tmp_path / "archive"
    for i in (0, 1):
        image = read_image(cohort / "images" / f"phantom_00{i}.nii.gz")
        write_series(image, archive / f"PATIENT{i}" / "CT", number=2)
    write_localizer(image, archive / "PATIENT1" / "SCOUT")
    fill(panel, cohort, tmp_path / "model", 4)
    beat = Heartbeat().start()
    panel.ui.scansPathLineEdit.currentPath = str(archive)
    slicer_app.wait_until(lambda: "will be used" in panel.ui.scanCountLabel.text, 120, "the folder's survey")
    assert beat.stop() < STALL_LIMIT_MS
    text = panel.ui.scanCountLabel.text
    assert text.startswith("2 scan(s) will be used (0 file(s), 2 DICOM series); 1 skipped") and "localizer" in text
    click(slicer_app, panel.ui.startButton)
    slicer_app.wait_until(lambda: panel.monitor.state.state == "done", 240, "pretraining on the DICOM tree")
    log = panel.ui.logTextEdit.toPlainText()
    assert "skipped 1 series or folder(s)" in log and "2 scans ready" in log


def test_without_the_engine_packages_the_survey_starts_no_engine_and_says_press_start(slicer_app, panel, cohort,
                                                                                       monkeypatch):
    from PGLCommon import dependencies

    real_version = dependencies.importlib.metadata.version

    def version(name):  # a fresh Slicer: no nibabel (Slicer does not ship it)
        if name.lower() == "nibabel":
            raise dependencies.importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(dependencies.importlib.metadata, "version", version)
    surveys = []
    monkeypatch.setattr(panel.logic, "scan_list", lambda *a, **k: surveys.append(a))  # would start the engine
    panel.ui.scansPathLineEdit.currentPath = str(cohort / "images")
    slicer_app.process_events(1.0)  # past the survey's typing delay
    assert not surveys and panel.survey_job is None
    assert "press Start to install what the engine needs" in panel.ui.scanCountLabel.text
    panel.ui.outputPathLineEdit.currentPath = str(cohort / "model")
    slicer_app.confirm_answer = False
    click(slicer_app, panel.ui.startButton)  # the one question names what is missing
    assert "nibabel" in slicer_app.shown("confirmOkCancelDisplay")[-1] and panel.monitor.job is None


def test_an_engine_that_cannot_start_says_why_in_words(slicer_app, panel, cohort, tmp_path):
    """The engine's Python lacks nibabel (its import fails as if absent): the survey and a pretraining say so in
    words, never stay on "Looking for scans..." and never show a bare exit code or a traceback."""
    from PGLCommon.jobs import EngineJob

    shadow = tmp_path / "shadow" / "nibabel"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'nibabel'\", name='nibabel')\n")

    class WithoutNibabel(EngineJob):
        @classmethod
        def for_engine(cls, command, args, env=None, **options):
            env = {**env, "PYTHONPATH": os.pathsep.join([str(shadow.parent), env.get("PYTHONPATH", "")])}
            return super().for_engine(command, args, env=env, **options)

    panel.logic.job_class = WithoutNibabel
    fill(panel, cohort, tmp_path / "model", 2)
    slicer_app.wait_until(lambda: panel.survey_job is not None, 10, "the survey to start")
    slicer_app.wait_until(lambda: panel.survey_job is None, 120, "the survey's engine to end")
    survey = panel.ui.scanCountLabel.text
    assert "nibabel" in survey and "Looking for scans" not in survey
    click(slicer_app, panel.ui.startButton)
    slicer_app.wait_until(lambda: panel.monitor.state.state == "failed", 120, "the pretraining's engine to end")
    for text in (survey, panel.ui.statusLabel.text, slicer_app.shown()[-1]):
        assert "nibabel" in text and "Traceback" not in text and "exit code" not in text, text
