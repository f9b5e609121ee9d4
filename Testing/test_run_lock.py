"""One run per output folder: the lock refuses a second run naming the first, and a dead run's lock is taken over."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_args import pretrain_args
from conftest import ROOT

from pgl_engine.errors import PGLError
from pgl_engine.training import process_alive, run_lock
from pgl_engine.training.run_lock import LOCK_FILE, RunLock


def write_lock(folder: Path, age_s: float = 0.0, **holder) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    record = {"pid": os.getpid(), "host": socket.gethostname(), "command": "pgl pretrain", "token": "theirs",
              "started": "2026-12-01T10:00:00+00:00", **holder}
    path.write_text(json.dumps(record))
    if age_s:
        past = time.time() - age_s
        os.utime(path, (past, past))
    return path


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid  # reaped: no process has it (pids are not reused this quickly)


def test_a_live_run_on_this_host_keeps_its_lock(tmp_path):
    path = write_lock(tmp_path / "run")
    with pytest.raises(PGLError, match=rf"in use by another run: pid {os.getpid()} on host {socket.gethostname()}"):
        RunLock(tmp_path / "run").acquire()
    assert json.loads(path.read_text())["token"] == "theirs"


def test_a_dead_runs_lock_on_this_host_is_taken_over_at_once(tmp_path):
    write_lock(tmp_path / "run", pid=dead_pid())
    events = []
    with RunLock(tmp_path / "run", "pgl finetune", events.append) as lock:
        held = json.loads(lock.path.read_text())
        assert held["pid"] == os.getpid() and held["token"] == lock.token
    assert not lock.path.exists()
    assert "no longer running" in events[0]["message"] and events[0]["event"] == "warning"


def test_a_reused_pid_does_not_keep_a_lock(tmp_path):
    write_lock(tmp_path / "run", process_start="1")  # our pid, but a process that started at another time
    with RunLock(tmp_path / "run"):
        pass


def test_another_hosts_lock_holds_until_its_heartbeat_stops(tmp_path):
    write_lock(tmp_path / "run", host="node-elsewhere", age_s=60)
    with pytest.raises(PGLError, match="node-elsewhere"):
        RunLock(tmp_path / "run").acquire()
    write_lock(tmp_path / "run", host="node-elsewhere", age_s=run_lock.STALE_AFTER_S + 5)
    with RunLock(tmp_path / "run") as lock:
        assert json.loads(lock.path.read_text())["host"] == socket.gethostname()


def test_the_heartbeat_keeps_the_lock_fresh(tmp_path, monkeypatch):
    monkeypatch.setattr(run_lock, "HEARTBEAT_S", 0.05)
    with RunLock(tmp_path / "run") as lock:
        past = time.time() - 1000
        os.utime(lock.path, (past, past))
        time.sleep(0.3)
        assert time.time() - lock.path.stat().st_mtime < 10


def test_release_never_removes_another_runs_lock(tmp_path):
    lock = RunLock(tmp_path / "run").acquire()
    write_lock(tmp_path / "run", token="someone else")  # e.g. after this run's lock was judged stale
    lock.release()
    assert json.loads((tmp_path / "run" / LOCK_FILE).read_text())["token"] == "someone else"


def test_a_takeover_in_progress_is_not_raced(tmp_path):
    write_lock(tmp_path / "run", pid=dead_pid())
    guard = tmp_path / "run" / f"{LOCK_FILE}.takeover"
    guard.write_text("{}")  # another run is taking the stale lock over right now
    with pytest.raises(PGLError, match="could not take the run lock"):
        RunLock(tmp_path / "run").acquire()
    past = time.time() - run_lock.TAKEOVER_STALE_S - 5
    os.utime(guard, (past, past))  # ... and died doing it
    with RunLock(tmp_path / "run"):
        assert not guard.exists()


def test_on_windows_a_holder_is_looked_up_never_signalled(monkeypatch):
    import ctypes

    asked = []

    class Kernel32:
        def OpenProcess(self, access, inherit, pid):
            asked.append(pid)
            return 0  # no handle

    monkeypatch.setattr(process_alive, "ON_WINDOWS", True)
    monkeypatch.setattr(process_alive.os, "kill", lambda *a: pytest.fail("os.kill(pid, 0) ends the process on Windows"))
    monkeypatch.setattr(ctypes, "WinDLL", lambda *a, **k: Kernel32(), raising=False)
    monkeypatch.setattr(ctypes, "get_last_error", lambda: 87, raising=False)  # ERROR_INVALID_PARAMETER: no such pid
    assert process_alive.process_running(4242) is False and asked == [4242]
    monkeypatch.setattr(ctypes, "get_last_error", lambda: 5, raising=False)  # ERROR_ACCESS_DENIED: it exists
    assert process_alive.process_running(4242) is True


def engine(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "pgl_engine", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


@pytest.mark.slow
def test_a_second_run_on_a_running_runs_folder_is_refused(cohort, tmp_path):
    out, stop = tmp_path / "run", tmp_path / "stop"
    first = engine(*pretrain_args(cohort / "images", out, tmp_path / "cache", "--steps", "400", "--progress", "json",
                                  "--stop-file", str(stop)))
    try:
        for line in first.stdout:  # wait until it trains
            if json.loads(line).get("stage") == "pretrain":
                break
        second = engine(*pretrain_args(cohort / "images", out, tmp_path / "cache", "--overwrite"))
        _, err = second.communicate(timeout=120)
        assert second.returncode == 1, err
        assert f"pid {first.pid} on host {socket.gethostname()}" in err and "Traceback" not in err
        stop.touch()
        rest = first.stdout.read()
        assert first.wait(timeout=120) == 130, first.stderr.read()
    finally:
        first.kill()
    assert '"cancelled"' in rest
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, len(steps) + 1))  # one run's lines only
    assert not (out / LOCK_FILE).exists()
