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


def test_fine_tuning_shows_its_validation_dice_and_a_kept_model():
    s = JobState()
    s.start()
    s.on_event({"event": "progress", "stage": "finetune", "step": 10, "total": 100, "loss": 0.9})
    assert "Dice" not in s.status
    s.on_event({"event": "progress", "stage": "finetune", "step": 20, "total": 100, "loss": 0.8, "val_dice": 0.6123})
    s.on_event({"event": "progress", "stage": "finetune", "step": 21, "total": 100, "loss": 0.7})
    assert s.status == "finetune 21/100, loss 0.700, validation Dice 0.612"  # kept until the next validation
    s.request_cancel()
    s.on_event({"event": "cancelled", "step": 21, "checkpoint": "/m/checkpoints/latest.pt", "model_dir": "/m"})
    s.finish(130)
    assert s.status == "stopped at step 21; the model so far is kept and listed"
    s.start()
    assert s.dice is None


def test_without_validation_the_training_dice_is_shown_and_validation_dice_takes_over():
    s = JobState()
    s.start()
    s.on_event({"event": "progress", "stage": "finetune", "step": 5, "total": 90, "loss": 0.9, "train_dice": 0.4567})
    assert s.status == "finetune 5/90, loss 0.900, training Dice 0.457"
    s.on_event({"event": "progress", "stage": "finetune", "step": 6, "total": 90, "train_dice": float("nan")})
    assert "Dice" not in s.status  # nothing labelled in the window yet
    s.on_event({"event": "progress", "stage": "finetune", "step": 50, "total": 90, "train_dice": 0.8,
                "val_dice": 0.5})
    assert s.status.endswith("validation Dice 0.500")


def test_the_chosen_configuration_is_the_status_until_training_reports():
    s = JobState()
    s.start()
    s.on_event({"event": "info", "message": "fine-tuning on 2 labelled scan(s)"})
    assert s.status == "starting..."  # other notes go to the log only
    s.on_event({"event": "info", "message": "configuration chosen for this machine and the 5-minute budget: 3 mm"})
    assert s.status == "Configuration chosen for this machine and the 5-minute budget: 3 mm"
    assert s.log[-1] == "info: configuration chosen for this machine and the 5-minute budget: 3 mm"
    s.on_event({"event": "progress", "stage": "finetune", "step": 1, "total": 10})
    assert s.status == "finetune 1/10"
