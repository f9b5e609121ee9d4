"""Slicer quitting mid-run, seen from the engine: its progress pipe closes. A real engine process whose reader
goes away stops as if asked to: checkpoint, the model so far, the cancelled exit code, no traceback, and the work
folder of exported scans (--work-dir) removed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from cli_args import finetune_args
from conftest import ROOT

from pgl_engine.contract import EXIT_CANCELLED
from pgl_engine.training.process_alive import WORK_FOLDER_RECORD

pytestmark = pytest.mark.slow  # real engine processes

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def start_finetune(cohort, tmp_path, *extra):
    """A long tiny fine-tuning reporting JSON on a pipe, its stderr in a file."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "exported.nii").write_bytes(b"patient data")
    (work / WORK_FOLDER_RECORD).write_text("{}")  # made by the Slicer side
    args = finetune_args(cohort / "images", cohort / "labels", tmp_path / "model", tmp_path / "cache", "--steps",
                         "100000", "--checkpoint-every", "100000", "--progress", "json", "--work-dir", str(work),
                         *extra)  # a later --steps in `extra` wins
    stderr = open(tmp_path / "stderr.txt", "w")
    proc = subprocess.Popen([sys.executable, "-m", "pgl_engine", *args], stdout=subprocess.PIPE, stderr=stderr,
                            env=ENV, cwd=tmp_path)
    stderr.close()
    return proc, work


def read_until_step(proc, step: int) -> None:
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        event = json.loads(line)
        if event.get("stage") == "finetune" and event["step"] >= step:
            return
        assert time.monotonic() < deadline
    pytest.fail(f"the engine ended before step {step}: {proc.wait()}")


@pytest.mark.parametrize("how", ["pipe closed", "stop file, then pipe closed"])
def test_a_closed_pipe_stops_the_run_with_its_checkpoint_and_model(cohort, tmp_path, how):
    from pgl_engine.training.checkpoint import load_checkpoint

    stop = tmp_path / "stop"
    proc, work = start_finetune(cohort, tmp_path, "--stop-file", str(stop))
    read_until_step(proc, 3)
    if how.startswith("stop file"):  # Slicer's exit: cancel (the stop file), then the process ends
        stop.touch()
    proc.stdout.close()
    code = proc.wait(timeout=120)
    err = (tmp_path / "stderr.txt").read_text()
    assert code == EXIT_CANCELLED, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert load_checkpoint(tmp_path / "model")["step"] >= 3
    metadata = json.loads((tmp_path / "model" / "pgl_model.json").read_text())
    assert metadata["stopped_early"]["step"] >= 3
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert not work.exists(), "the exported scans were left behind"


def test_a_pipe_closed_as_the_run_finishes_keeps_the_finished_model(cohort, tmp_path):
    """Slicer quits while the run saves its result: the stop would only cut the saving short, so the run ends."""
    total = 4
    proc, work = start_finetune(cohort, tmp_path, "--steps", str(total))
    read_until_step(proc, total)
    proc.stdout.close()
    err = (tmp_path / "stderr.txt").read_text() if proc.wait(timeout=120) else ""
    assert proc.returncode == 0, err
    metadata = json.loads((tmp_path / "model" / "pgl_model.json").read_text())
    assert metadata["training"]["steps"] == total and "stopped_early" not in metadata
    assert not work.exists()


def test_a_run_that_ends_normally_leaves_its_work_folder_to_the_caller(cohort, tmp_path):
    """The caller reads its results from the work folder, then removes it itself."""
    args = finetune_args(cohort / "images", cohort / "labels", tmp_path / "model", tmp_path / "cache",
                         "--progress", "json", "--work-dir", str(tmp_path / "work"))
    (tmp_path / "work").mkdir()
    result = subprocess.run([sys.executable, "-m", "pgl_engine", *args], capture_output=True, text=True,
                            env=ENV, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "work").is_dir()


def test_a_failing_run_never_removes_a_work_folder_the_slicer_side_did_not_make(cohort, tmp_path):
    """--work-dir naming a user's own folder (no record of the Slicer side's processes): kept, whatever happens."""
    mine = tmp_path / "my scans"
    mine.mkdir()
    (mine / "thesis.txt").write_text("mine")
    result = subprocess.run([sys.executable, "-m", "pgl_engine", "segment", "--model", str(tmp_path / "no model"),
                             "--input", str(cohort / "images"), "--output", str(tmp_path / "out"), "--work-dir",
                             str(mine)], capture_output=True, text=True, env=ENV, timeout=300)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert (mine / "thesis.txt").read_text() == "mine"
