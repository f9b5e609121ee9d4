"""Run the engine as a subprocess and read its JSON events without blocking the caller.

A reader thread per stream puts parsed lines on a queue; the caller drains it with poll() whenever it likes
(a QTimer in the GUI, a loop in wait()). Qt is never touched from the reader threads. Cancel sends SIGTERM to
the whole process tree (the engine saves a checkpoint and exits), then kills whatever is left.
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

import psutil

EXIT_CANCELLED = 130
ENGINE_DIR = Path(__file__).resolve().parent.parent  # pgl_engine is installed beside PGLCommon


def python_executable() -> str:
    """Slicer's PythonSlicer launcher inside Slicer, this interpreter elsewhere."""
    launcher = shutil.which("PythonSlicer")
    if launcher and "Slicer" in Path(sys.executable).name:
        return launcher
    return sys.executable


def engine_command(command: str, args: Iterable[str]) -> list[str]:
    """`python -m pgl_engine <command> ... --progress json`."""
    return [python_executable(), "-m", "pgl_engine", command, *[str(a) for a in args], "--progress", "json"]


def engine_environment(device: str = "auto") -> dict[str, str]:
    """The child's own environment: pgl_engine importable; no GPU visible when the CPU was chosen."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ENGINE_DIR), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


class EngineJob:
    """One engine subprocess and the events it printed."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, cwd: str | None = None):
        self.args, self.env, self.cwd = args, env, cwd
        self.process: subprocess.Popen | None = None
        self.events: queue.Queue = queue.Queue()
        self.error_message: str | None = None
        self.stderr_tail: list[str] = []
        self.cancelled = False
        self._readers: list[threading.Thread] = []

    def start(self) -> "EngineJob":
        self.process = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        bufsize=1, env=self.env, cwd=self.cwd)
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
        """Every event received since the last call (never blocks)."""
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
             interval: float = 0.05) -> int:
        """Block until the job ends (for scripts and self-tests), passing events on; returns the exit code."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.finished():
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"engine job still running after {timeout} s: {' '.join(self.args[:4])}")
            for event in self.poll():
                if on_event:
                    on_event(event)
            time.sleep(interval)
        for event in self.poll():
            if on_event:
                on_event(event)
        return self.exit_code

    def failure_message(self) -> str:
        """What went wrong, for the user: the engine's error event, else the end of its stderr."""
        if self.error_message:
            return self.error_message
        tail = "\n".join(self.stderr_tail[-5:])
        return f"the engine stopped with exit code {self.exit_code}" + (f":\n{tail}" if tail else ".")

    def cancel(self, grace_s: float = 30.0) -> None:
        """SIGTERM to the whole tree (the engine saves a checkpoint), then kill what is still alive."""
        if not self.running:
            return
        self.cancelled = True
        try:
            descendants = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        for p in descendants:
            _signal(p, "terminate")
        self.process.terminate()
        # our own child is reaped by Popen (psutil would take its exit code); the rest are polled by psutil
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        _, alive = psutil.wait_procs(descendants, timeout=grace_s)
        for p in alive:
            _signal(p, "kill")
        psutil.wait_procs(alive, timeout=5)

    def process_tree(self) -> list[psutil.Process]:
        """The job's process and all its descendants (e.g. the launcher and the real Python)."""
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []


def _signal(process: psutil.Process, action: str) -> None:
    try:
        getattr(process, action)()
    except psutil.NoSuchProcess:
        pass
