"""The job runner with real engine subprocesses: events in order while the caller stays free, cancel, errors."""
import time

import psutil
import pytest

from pgl_engine.checkpoint import load_checkpoint
from PGLCommon.engine_runs import EngineError, start_engine, wait_for
from PGLCommon.jobs import EXIT_CANCELLED

TINY = ["--batch-size", "1", "--patch-size", "16", "--spacing", "8", "--grid-size", "4", "--workers", "0",
        "--feature-channels", "8", "--channels", "4", "8", "16", "--strides", "2", "2", "--projector-hidden", "8",
        "--predictor-hidden", "8", "--projector-dim", "8"]


def pretrain_job(cohort, tmp_path, steps):
    return start_engine("pretrain", ["--images", cohort / "images", "--out", tmp_path / "run", "--cache-dir",
                                     tmp_path / "cache", "--steps", steps, *TINY], device="cpu")


def test_events_arrive_in_order_while_the_caller_stays_free(cohort, tmp_path):
    job = pretrain_job(cohort, tmp_path, 25)
    events, loops = [], 0
    while not job.finished():
        events += job.poll()  # never blocks
        loops += 1
        time.sleep(0.01)
    events += job.poll()
    assert job.exit_code == 0
    steps = [e["step"] for e in events if e.get("stage") == "pretrain"]
    assert steps == list(range(1, 26))
    assert events[-1]["event"] == "done"
    assert loops > 50  # the caller kept running its own loop meanwhile


def test_cancel_stops_the_whole_tree_and_keeps_the_checkpoint(cohort, tmp_path):
    job = pretrain_job(cohort, tmp_path, 100000)
    seen = []
    deadline = time.monotonic() + 120
    while not any(e.get("stage") == "pretrain" and e["step"] >= 3 for e in seen):
        assert time.monotonic() < deadline and job.running
        seen += job.poll()
        time.sleep(0.02)
    pids = [p.pid for p in job.process_tree()]
    assert pids
    job.cancel(grace_s=60)
    assert job.wait(on_event=seen.append, timeout=60) == EXIT_CANCELLED
    assert not [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    cancelled = [e for e in seen if e.get("event") == "cancelled"]
    state = load_checkpoint(tmp_path / "run")
    assert len(cancelled) == 1 and state["step"] == cancelled[0]["step"] >= 3
    with pytest.raises(EngineError, match="cancelled"):
        wait_for(job)


def test_engine_errors_surface_their_message(tmp_path):
    job = start_engine("pretrain", ["--images", tmp_path / "missing", "--out", tmp_path / "out", "--device", "cpu"])
    with pytest.raises(EngineError, match="missing: no such folder"):
        wait_for(job, timeout=120)
    assert job.exit_code == 1
