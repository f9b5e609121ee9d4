"""A run's housekeeping on its own: the folder's lock, the step log, checkpoints and the report of a stop."""
from __future__ import annotations

import json

import pytest
import torch

from pgl_engine.errors import PGLError, TrainingInterrupted
from pgl_engine.models.store import LOG_FILE
from pgl_engine.training.checkpoint import checkpoint_path, load_checkpoint
from pgl_engine.training.distributed import World
from pgl_engine.training.run_folder import RunFolder
from pgl_engine.training.run_lock import LOCK_FILE


def test_the_lock_is_held_while_running_and_refuses_a_second_run(tmp_path):
    folder = RunFolder(tmp_path / "run", "finetune", World())
    with folder.locked():
        holder = json.loads((tmp_path / "run" / LOCK_FILE).read_text())
        assert holder["command"] == "pgl finetune"
        with pytest.raises(PGLError), RunFolder(tmp_path / "run", "finetune", World()).locked():
            pass
    assert not (tmp_path / "run" / LOCK_FILE).exists()


def test_a_folder_of_other_files_is_refused_before_the_lock(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_text("x")
    with pytest.raises(PGLError, match="photos"), RunFolder(tmp_path / "photos", "pretrain", World()).locked():
        pass
    assert not (tmp_path / "photos" / LOCK_FILE).exists()


def test_the_step_log_starts_afresh_and_a_resume_cuts_it_back_to_its_checkpoint(tmp_path):
    folder = RunFolder(tmp_path, "pretrain", World())
    with folder.step_log(0) as log:
        for step in range(1, 6):
            log({"step": step})
    with folder.step_log(3) as log:
        log({"step": 4, "resumed": True})
    lines = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    assert lines == [{"step": 1}, {"step": 2}, {"step": 3}, {"step": 4, "resumed": True}]
    with folder.step_log(0) as log:
        log({"step": 1})
    assert (tmp_path / LOG_FILE).read_text() == '{"step": 1}\n'


def test_checkpoints_are_written_and_reported_by_the_main_process_only(tmp_path):
    events = []
    path = RunFolder(tmp_path, "pretrain", World(), events.append).save_checkpoint(
        lambda: {"step": 7, "weights": torch.ones(2)}, 7)
    assert path == checkpoint_path(tmp_path) and load_checkpoint(tmp_path)["step"] == 7
    assert events == [{"event": "checkpoint", "step": 7, "path": str(path)}]

    def never() -> dict:
        raise AssertionError("another process builds no checkpoint state")

    other = RunFolder(tmp_path / "other", "pretrain", World(rank=1, size=2), events.append)
    assert other.save_checkpoint(never, 7) == tmp_path / "other" and len(events) == 1
    with other.step_log(0) as log:
        log({"step": 1})
    assert not (tmp_path / "other").exists()


def test_a_stop_reports_the_checkpoint_and_what_was_kept(tmp_path):
    events = []
    folder = RunFolder(tmp_path, "finetune", World(), events.append)
    stopped = folder.interrupted(4, tmp_path / "latest.pt", "The model at step 4 is kept.")
    assert isinstance(stopped, TrainingInterrupted) and stopped.step == 4
    assert str(stopped) == (f"stopped at step 4; checkpoint saved to {tmp_path / 'latest.pt'}. The model at step 4 "
                            f"is kept. Continue with --resume.")
    assert events == [{"event": "cancelled", "step": 4, "checkpoint": str(tmp_path / "latest.pt"),
                       "model_dir": str(tmp_path)}]
    assert str(folder.interrupted(2, tmp_path / "latest.pt", "")).endswith(".pt. Continue with --resume.")
    assert "model_dir" not in events[-1]
