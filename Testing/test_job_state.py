"""The widgets' Qt-free state machine: idle / running / cancelling / done / failed."""
import pytest

from PGLCommon.job_state import CANCELLING, DONE, FAILED, IDLE, RUNNING, JobState, format_seconds


def test_start_cancel_and_finish():
    s = JobState()
    assert (s.state, s.button_text, s.button_enabled) == (IDLE, "Start", True)
    s.start()
    assert (s.state, s.button_text) == (RUNNING, "Cancel")
    with pytest.raises(RuntimeError):
        s.start()
    s.on_event({"event": "progress", "stage": "pretrain", "step": 30, "total": 120, "loss": 1.234, "eta_s": 95})
    assert s.progress_percent == 25 and s.status == "pretrain 30/120, loss 1.234, ETA 1:35"
    assert s.request_cancel() and not s.request_cancel()
    assert (s.state, s.button_text, s.button_enabled) == (CANCELLING, "Cancelling...", False)
    s.on_event({"event": "progress", "stage": "pretrain", "step": 31, "total": 120})
    assert s.status.startswith("cancelling")  # progress does not overwrite the cancelling notice
    s.on_event({"event": "cancelled", "step": 31, "checkpoint": "/m/checkpoints/latest.pt"})
    s.finish(130)
    assert s.state == IDLE and s.status == "cancelled; checkpoint kept: /m/checkpoints/latest.pt"


def test_success_and_failure():
    s = JobState()
    s.start()
    s.on_event({"event": "warning", "message": "skipped 1 file"})
    s.on_event({"event": "done", "model_dir": "/m"})
    s.finish(0)
    assert s.state == DONE and s.result["model_dir"] == "/m" and s.log == ["warning: skipped 1 file"]
    s.start()
    assert s.state == RUNNING and s.log == [] and s.result == {}
    s.on_event({"event": "error", "message": "/data: holds no scans."})
    s.finish(1)
    assert s.state == FAILED and s.status == "failed: /data: holds no scans."
    s.start()
    s.finish(1, "the engine stopped with exit code 1")
    assert s.message == "the engine stopped with exit code 1"


def test_cancel_only_while_running_and_eta_format():
    s = JobState()
    assert not s.request_cancel()
    assert format_seconds(3725) == "1:02:05" and format_seconds(59.6) == "1:00"
