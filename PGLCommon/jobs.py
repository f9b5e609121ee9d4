"""Run the engine as a subprocess and read its JSON events without blocking the caller.

A reader thread per stream puts parsed lines on a queue; the caller drains it with poll() whenever it likes
(a QTimer in the GUI, a loop in wait()). Qt is never touched from the reader threads.

Cancel never waits: it creates the job's stop file, which the engine polls on every OS (it saves a checkpoint
and exits), and poll() kills the whole process tree if it is still alive after a grace period. A job's work
folder (its stop file, exported scans, results; see work_folders) is removed by release(), once, when it has
ended; the engine removes it itself if Slicer quits first.
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

from pgl_engine.contract import EXIT_CANCELLED

from .engine_failure import failure_in_words
from .process_tree import kill_tree, popen_options
from .work_folders import add_user, new_work_folder

CANCEL_GRACE_S = 60.0  # time for the engine to save its checkpoint before the tree is killed
ENGINE_DIR = Path(__file__).resolve().parent.parent  # pgl_engine is installed beside PGLCommon


def python_executable() -> str:
    """Slicer's PythonSlicer launcher inside Slicer, this interpreter elsewhere."""
    launcher = shutil.which("PythonSlicer")
    if launcher and "Slicer" in Path(sys.executable).name:
        return launcher
    return sys.executable


def engine_command(command: str, args: Iterable[str], stop_file: Path | None = None,
                   work: Path | None = None) -> list[str]:
    """`python -m pgl_engine <command> ... --progress json [--stop-file F] [--work-dir W]`."""
    stop = ["--stop-file", str(stop_file)] if stop_file else []
    owned = ["--work-dir", str(work)] if work else []
    return [python_executable(), "-m", "pgl_engine", command, *[str(a) for a in args], "--progress", "json", *stop,
            *owned]


def engine_environment(device: str = "auto") -> dict[str, str]:
    """The child's own environment: pgl_engine importable; no GPU visible when the CPU was chosen."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ENGINE_DIR), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"  # what the reader decodes, whatever the platform's default encoding
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def poll_until_finished(job, on_event: Callable[[dict], None] | None = None, timeout: float | None = None,
                        interval: float = 0.05, keep_alive: Callable[[], None] | None = None, what: str = "job") -> int:
    """Poll `job` until it ends, passing its events on, `keep_alive` between polls; returns its exit code. A job
    with GUI-side work waiting (`stepping`: StagedJob, JobChain) is polled again at once, others every interval."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not job.finished():
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"{what} still running after {timeout} s")
        for event in job.poll():
            if on_event:
                on_event(event)
        if keep_alive:
            keep_alive()
        if not getattr(job, "stepping", False):
            time.sleep(interval)
    return job.exit_code


class EngineJob:
    """One engine subprocess, the events it printed, and the temporary folders it owns."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, cwd: str | None = None,
                 stop_file: Path | None = None, cleanup: Iterable[Path] = (), grace_s: float = CANCEL_GRACE_S):
        self.args, self.env, self.cwd = args, env, cwd
        self.stop_file = Path(stop_file) if stop_file else None
        self.cleanup = [Path(p) for p in cleanup]
        self.work: Path | None = None  # the folder of the job's inputs and outputs, where the caller keeps them
        self.grace_s = grace_s
        self.process: subprocess.Popen | None = None
        self.events: queue.Queue = queue.Queue()
        self.error_message: str | None = None
        self.stderr_tail: list[str] = []
        self.cancelled = False
        self.killed = False
        self._kill_at: float | None = None
        self._readers: list[threading.Thread] = []

    @classmethod
    def for_engine(cls, command: str, args: Iterable, env: dict[str, str] | None = None,
                   work: Path | None = None) -> "EngineJob":
        """A job for `pgl_engine <command>` in its work folder (a new one if none is given; it holds the stop
        file), removed on release(), or by the engine if Slicer quits first."""
        work = Path(work) if work else new_work_folder(command)
        stop_file = work / "stop"
        job = cls(engine_command(command, args, stop_file, work), env=env, stop_file=stop_file, cleanup=[work])
        job.work = work
        return job

    def start(self) -> "EngineJob":
        try:
            # UTF-8 whatever the platform's encoding, a bad byte replaced: a decode error would end the reader
            self.process = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                            encoding="utf-8", errors="replace", bufsize=1, env=self.env,
                                            cwd=self.cwd, **popen_options())
        except OSError:
            self.release()
            raise
        if self.work is not None:  # in use while the engine runs, even after Slicer has gone
            try:
                add_user(self.work, self.process.pid)
            except OSError:
                pass  # unrecorded, the folder is still this Slicer's; only a sweep after it quits could take it
        for stream, parse in ((self.process.stdout, self._parse_stdout), (self.process.stderr, self._parse_stderr)):
            reader = threading.Thread(target=self._read, args=(stream, parse), daemon=True)
            reader.start()
            self._readers.append(reader)
        return self

    def _read(self, stream, parse: Callable[[str], dict | None]) -> None:
        for line in iter(stream.readline, ""):
            event = parse(line.rstrip("\n"))
            if event is not None:
                self.events.put(event)
        stream.close()

    def _parse_stdout(self, line: str) -> dict | None:
        try:
            event = json.loads(line)
        except ValueError:
            return {"event": "log", "message": line} if line.strip() else None
        if isinstance(event, dict) and event.get("event") == "error":
            self.error_message = event.get("message")
        return event if isinstance(event, dict) else {"event": "log", "message": line}

    def _parse_stderr(self, line: str) -> dict | None:
        if not line.strip():
            return None
        self.stderr_tail = (self.stderr_tail + [line])[-20:]
        return {"event": "log", "message": line, "stream": "stderr"}

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def poll(self) -> list[dict]:
        """Every event received since the last call (never blocks); kills the tree once a cancel's grace is over."""
        if self._kill_at is not None and time.monotonic() >= self._kill_at and self.running:
            self._kill_at = None
            self.killed = True
            kill_tree(self.process)
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out

    def finished(self) -> bool:
        """True once the process has exited and both streams are read to the end."""
        return self.exit_code is not None and not any(r.is_alive() for r in self._readers)

    def wait(self, on_event: Callable[[dict], None] | None = None, timeout: float | None = None,
             interval: float = 0.05, keep_alive: Callable[[], None] | None = None) -> int:
        """Block until the job ends (scripts and self-tests), passing events on; returns the exit code.

        `keep_alive` is called between polls (in Slicer: slicer.app.processEvents, so the GUI stays alive).
        """
        poll_until_finished(self, on_event, timeout, interval, keep_alive, f"engine job {' '.join(self.args[:4])}")
        for event in self.poll():
            if on_event:
                on_event(event)
        return self.exit_code

    def release(self) -> None:
        """Remove the folders this job owns (its stop file, exported inputs); only once it has ended."""
        if self.process is not None and self.process.poll() is None:
            return
        for path in self.cleanup:
            shutil.rmtree(path, ignore_errors=True)
        self.cleanup = []

    def failure_message(self) -> str:
        """What went wrong, in words for the user (engine_failure.failure_in_words)."""
        return failure_in_words(self)

    def cancel(self, grace_s: float | None = None) -> None:
        """Ask the engine to stop (it saves a checkpoint first) and return at once; poll() kills the tree if it
        is still running after `grace_s` seconds."""
        if not self.running:
            return
        self.cancelled = True
        if self.stop_file is not None:
            try:
                self.stop_file.parent.mkdir(parents=True, exist_ok=True)
                self.stop_file.touch()
            except OSError:
                self._kill_at = time.monotonic()  # no way to ask politely: kill at the next poll
                return
        else:
            self.process.terminate()
        self._kill_at = time.monotonic() + (self.grace_s if grace_s is None else grace_s)

    def process_tree(self) -> list:
        """The job's process and all its descendants as psutil processes (needs psutil)."""
        import psutil

        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
