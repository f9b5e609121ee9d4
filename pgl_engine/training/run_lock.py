"""One run per output folder: a lock file naming its holder (pid, host, command), refreshed while it runs.

The lock is created with O_EXCL, which is atomic on local and network file systems (NFS v3+), so two runs on
one folder, on one machine or on two, cannot both hold it. A lock is stale when its process is gone (same
host: the pid no longer runs, or now belongs to another process) or when its heartbeat (the file's mtime,
touched every HEARTBEAT_S seconds) is older than STALE_AFTER_S (any host). A stale lock is taken over under a
second, short-lived lock, so two runs that find one stale lock at once cannot both take it.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from ..atomic import disk_full_message
from ..errors import DiskFull, PGLError
from ..progress import ProgressCallback, emit
from .process_alive import process_running

LOCK_FILE = ".pgl-run.lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0  # ten missed heartbeats
TAKEOVER_STALE_S = 60.0  # a takeover lock older than this was left by a process that died while taking over


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid from the holder."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _describe(holder: dict, age_s: float) -> str:
    command = holder.get("command") or "a pgl run"
    return (f"pid {holder.get('pid')} on host {holder.get('host')} ({command}), started {holder.get('started')}, "
            f"last heartbeat {age_s:.0f} s ago")


class RunLock:
    """Hold `folder`'s run lock: `with RunLock(folder, command, progress):` or acquire() / release()."""

    def __init__(self, folder: str | Path, command: str = "", progress: ProgressCallback | None = None):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.command = command or " ".join(["pgl", *sys.argv[1:3]]).strip()
        self.progress = progress
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def holder_record(self) -> dict:
        pid = os.getpid()
        return {"pid": pid, "host": socket.gethostname(), "process_start": _process_start(pid),
                "command": self.command, "token": self.token,
                "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    def acquire(self) -> "RunLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            if self._create(self.path, self.holder_record()):
                self._start_heartbeat()
                return self
            holder, age = self._read(self.path)
            if holder is None and age is None:
                continue  # released between our attempt and the read: try again
            reason = self.stale_reason(holder, age)
            if reason is None and holder is None:
                time.sleep(0.1)  # being written by the run that just took it
                continue
            if reason is None:
                raise PGLError(
                    f"{self.folder}: is in use by another run: {_describe(holder or {}, age or 0.0)}. Wait for it to "
                    f"finish or stop it, or choose another --out. Two runs in one folder would overwrite each "
                    f"other's checkpoints and log. (A lock whose run has died is taken over automatically: at once "
                    f"on the same host, after {STALE_AFTER_S / 60:.0f} minutes without a heartbeat from another "
                    f"host.)")
            self._take_over(holder, reason)
        raise PGLError(f"{self.path}: could not take the run lock (other runs keep taking it); try again.")

    @staticmethod
    def _create(path: Path, record: dict) -> bool:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(record))
        except OSError as e:
            path.unlink(missing_ok=True)
            raise DiskFull(disk_full_message(path, 1 << 10)) from e
        return True

    @staticmethod
    def _read(path: Path) -> tuple[dict | None, float | None]:
        """(holder record or None if unreadable, heartbeat age in s); (None, None) when there is no lock."""
        try:
            age = max(0.0, time.time() - path.stat().st_mtime)
            text = path.read_text()
        except FileNotFoundError:
            return None, None
        except OSError:
            return None, 0.0
        try:
            holder = json.loads(text)
            return (holder if isinstance(holder, dict) else None), age
        except ValueError:
            return None, age  # being written, or damaged: judged by its age alone

    @staticmethod
    def stale_reason(holder: dict | None, age_s: float | None) -> str | None:
        """Why the lock no longer protects a running run, or None while its holder may still run."""
        age_s = age_s or 0.0
        if age_s > STALE_AFTER_S:
            return f"no heartbeat for {age_s:.0f} s"
        if holder is None:
            return None if age_s < HEARTBEAT_S else "unreadable lock file without a heartbeat"
        if holder.get("host") != socket.gethostname():
            return None
        pid = int(holder.get("pid") or 0)
        if not process_running(pid):
            return f"process {pid} is no longer running"
        start = holder.get("process_start")
        if start is not None and _process_start(pid) not in (None, start):
            return f"pid {pid} now belongs to another process"
        return None

    def _take_over(self, holder: dict | None, reason: str) -> None:
        """Remove a stale lock, under a takeover lock so that only one run removes it (then all race for it)."""
        guard = self.path.with_name(self.path.name + ".takeover")
        if not self._create(guard, {"pid": os.getpid(), "host": socket.gethostname()}):
            _, age = self._read(guard)
            if age is not None and age > TAKEOVER_STALE_S:
                guard.unlink(missing_ok=True)
            else:
                time.sleep(0.2)
            return
        try:
            again, age = self._read(self.path)
            if again is None and age is None:
                return  # gone meanwhile
            if (again or {}).get("token") != (holder or {}).get("token") or self.stale_reason(again, age) is None:
                return  # taken over meanwhile, or alive after all: look again
            self.path.unlink(missing_ok=True)
        finally:
            guard.unlink(missing_ok=True)
        emit(self.progress, "warning", message=f"{self.path}: took over the lock of a run that has ended "
                                               f"({_describe(holder or {}, age or 0.0)}; {reason}).")

    def _start_heartbeat(self) -> None:
        def beat() -> None:
            while not self._stop.wait(HEARTBEAT_S):
                try:
                    os.utime(self.path)
                except OSError:
                    return

        self._heartbeat = threading.Thread(target=beat, name="pgl-run-lock", daemon=True)
        self._heartbeat.start()

    def release(self) -> None:
        """Remove the lock if it is still ours (never another run's)."""
        self._stop.set()
        if self._heartbeat is None:
            return
        self._heartbeat = None
        holder, _ = self._read(self.path)
        if holder is not None and holder.get("token") == self.token:
            self.path.unlink(missing_ok=True)
