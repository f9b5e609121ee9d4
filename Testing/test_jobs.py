"""The job runner with real engine subprocesses: events in order while the caller stays free, cancel, errors."""
import time
from pathlib import Path

import psutil
import pytest

from pgl_engine.training.checkpoint import load_checkpoint
from PGLCommon.engine_runs import EngineError, start_engine, wait_for
from PGLCommon.jobs import EXIT_CANCELLED

PRETRAIN_JOB_ARGS = ["--batch-size", "1", "--patch-size", "16", "--spacing", "8", "--grid-size", "4", "--workers",
                     "0", "--feature-channels", "8", "--channels", "4", "8", "16", "--strides", "2", "2",
                     "--projector-hidden", "8", "--predictor-hidden", "8", "--projector-dim", "8"]


def pretrain_job(cohort, tmp_path, steps):
    return start_engine("pretrain", ["--images", cohort / "images", "--out", tmp_path / "run", "--cache-dir",
                                     tmp_path / "cache", "--steps", steps, *PRETRAIN_JOB_ARGS], device="cpu")


@pytest.mark.slow
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


@pytest.mark.slow
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


IGNORES_STOP = "import signal, subprocess, sys, time\n" \
               "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" \
               "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n" \
               "print(child.pid, flush=True)\ntime.sleep(600)\n"


def gone(pid: int) -> bool:
    """Dead or a zombie (read from /proc, so it works with psutil blocked)."""
    try:
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("with_psutil", [True, False])
def test_cancel_returns_at_once_and_poll_kills_the_tree_after_the_grace(tmp_path, monkeypatch, with_psutil):
    import sys

    from PGLCommon.jobs import EngineJob

    if not with_psutil:
        monkeypatch.setitem(sys.modules, "psutil", None)  # as in Slicer's own Python
    job = EngineJob([sys.executable, "-c", IGNORES_STOP], stop_file=tmp_path / "stop", cleanup=[tmp_path / "work"],
                    grace_s=1.0)
    (tmp_path / "work").mkdir()
    job.start()
    events = []
    deadline = time.monotonic() + 30
    while not events:
        events += job.poll()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    grandchild = int(events[0]["message"])
    started = time.perf_counter()
    job.cancel()
    assert time.perf_counter() - started < 0.1 and (tmp_path / "stop").exists()
    assert job.running  # still alive: it ignores the request
    assert job.wait(timeout=30) != 0 and job.killed
    deadline = time.monotonic() + 10
    while not gone(grandchild):
        assert time.monotonic() < deadline, "the grandchild outlived the kill"
        time.sleep(0.05)
    job.release()
    assert not (tmp_path / "work").exists()


def test_jobs_import_and_stop_without_psutil(tmp_path, monkeypatch):
    import importlib
    import sys

    monkeypatch.setitem(sys.modules, "psutil", None)
    for name in ("PGLCommon.process_tree", "PGLCommon.jobs"):
        importlib.reload(importlib.import_module(name))
    from PGLCommon.process_tree import descendants

    assert descendants(1) == []


@pytest.mark.parametrize("os_name, expected", [
    ("nt", {"creationflags": 0x08000000 | 0x00000200}),  # CREATE_NO_WINDOW | CREATE_NEW_PROCESS_GROUP
    ("posix", {"start_new_session": True}),
])
def test_no_console_window_on_windows_and_an_own_process_group(os_name, expected):
    from PGLCommon.process_tree import popen_options

    assert popen_options(os_name) == expected


def test_the_stop_file_stops_a_command_that_has_no_checkpoint(tmp_path, cohort):
    """The engine side of a GUI cancel on every OS: segment/evaluate/phantom stop with the cancelled exit code."""
    import subprocess
    import sys

    stop = tmp_path / "stop"
    stop.touch()
    result = subprocess.run([sys.executable, "-m", "pgl_engine", "phantom", "--out", str(tmp_path / "p"), "--count",
                             "50", "--stop-file", str(stop)], capture_output=True, text=True, timeout=120)
    assert result.returncode == EXIT_CANCELLED, result.stderr
    assert len(list((tmp_path / "p" / "images").glob("*.nii.gz"))) < 50 if (tmp_path / "p").exists() else True


NOT_UTF8 = "import sys\n" \
           "sys.stdout.buffer.write(b'caf\\xe9 \\xff\\n'); sys.stdout.flush()\n" \
           "print('{\"event\": \"done\", \"steps\": 1}', flush=True)\n"


def test_a_byte_that_is_not_utf8_neither_ends_the_reader_nor_the_events_after_it():
    import sys

    from PGLCommon.jobs import EngineJob

    job = EngineJob([sys.executable, "-c", NOT_UTF8]).start()
    events = []
    assert job.wait(on_event=events.append, timeout=60) == 0
    assert events == [{"event": "log", "message": "caf\ufffd \ufffd"}, {"event": "done", "steps": 1}]


def test_the_engine_writes_utf8_whatever_the_platforms_encoding(monkeypatch):
    """Windows' default (cp1252) cannot encode every character a scan's path or a message may hold."""
    import sys

    from PGLCommon.jobs import EngineJob, engine_environment

    monkeypatch.setenv("PYTHONIOENCODING", "cp1252")  # as a Windows console would give the child
    script = "import json; print(json.dumps({'event': 'log', 'message': 'Ω ✓ é'}, ensure_ascii=False), flush=True)"
    job = EngineJob([sys.executable, "-c", script], env=engine_environment("cpu")).start()
    events = []
    assert job.wait(on_event=events.append, timeout=60) == 0, job.stderr_tail
    assert events == [{"event": "log", "message": "Ω ✓ é"}]
