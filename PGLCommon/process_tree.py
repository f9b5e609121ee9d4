"""Start a child so that its whole tree can be stopped, and kill that tree, with or without psutil.

Slicer's Python ships no psutil (the dependency installer brings it), so nothing here imports it at module level:
with psutil the tree is walked; without it the child leads its own process group on POSIX (killpg), and on
Windows `taskkill /T` ends the tree. No console window opens on Windows.
"""
from __future__ import annotations

import os
import signal
import subprocess

CREATE_NEW_PROCESS_GROUP = 0x00000200  # subprocess's constants exist only on Windows; the values are Win32's
CREATE_NO_WINDOW = 0x08000000


def popen_options(os_name: str = os.name) -> dict:
    """Popen keyword arguments: its own process group, and no console window on Windows."""
    if os_name == "nt":
        return {"creationflags": CREATE_NO_WINDOW | CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def descendants(pid: int) -> list:
    """psutil processes below `pid` (empty without psutil or once the process is gone)."""
    try:
        import psutil
    except ImportError:
        return []
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def kill_tree(process: subprocess.Popen) -> None:
    """Kill the child and everything it started; never waits."""
    below = descendants(process.pid)
    for child in below:
        try:
            child.kill()
        except Exception:  # psutil.NoSuchProcess / AccessDenied: gone or not ours, nothing left to do
            pass
    if not below and process.poll() is None:
        if os.name == "nt":
            subprocess.Popen(["taskkill", "/F", "/T", "/PID", str(process.pid)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, **popen_options())
        else:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # the child leads its own group (start_new_session)
            except (ProcessLookupError, PermissionError):
                pass
    if process.poll() is None:
        process.kill()
