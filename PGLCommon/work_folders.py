"""Work folders of engine jobs (exported scans, the stop file, results) in Slicer's temporary folder.

A job's folder goes when the job is released, whatever its outcome; the engine removes it itself when Slicer quits
mid-job (`--work-dir`). What a crash leaves is removed at the next start of a module: each folder names the
processes using it (the Slicer that made it, the engine it started), and a folder is stale once none of them
runs. A job still running, in this Slicer, in a second instance or as an engine outliving its Slicer, keeps its
folder; so does a folder whose record cannot be read or was made on another host.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from pathlib import Path

from pgl_engine.training.process_alive import WORK_FOLDER_RECORD, process_running

PREFIX = "pgl_job_"
USERS_FILE = WORK_FOLDER_RECORD


def work_root() -> Path:
    """Slicer's temporary folder (per user, chosen in Application Settings); the system's outside Slicer."""
    try:
        import slicer

        return Path(slicer.app.temporaryPath)
    except (ImportError, AttributeError):  # slicer-core, scripts: there is no application
        return Path(tempfile.gettempdir())


def new_work_folder(purpose: str, root: Path | None = None) -> Path:
    """A new, private folder `pgl_job_<purpose>_...` in `root` (default: work_root()), recorded as used by this
    process."""
    root = Path(root or work_root())
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{purpose}_", dir=str(root)))
    add_user(folder, os.getpid())
    return folder


def add_user(folder: Path, pid: int) -> None:
    """Record that process `pid` (on this host) uses `folder`: it is not stale while that process runs."""
    record = read_users(folder) or {"host": socket.gethostname(), "pids": []}
    record["pids"].append(pid)
    partial = folder / f".{USERS_FILE}.{os.getpid()}"
    partial.write_text(json.dumps(record))
    os.replace(partial, folder / USERS_FILE)  # whole or absent: a half-written record would read as unreadable


def read_users(folder: Path) -> dict | None:
    try:
        record = json.loads((folder / USERS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("pids"), list) else None


def is_stale(folder: Path) -> bool:
    """True only when the folder's record names this host and none of its processes runs any more."""
    record = read_users(folder)
    if record is None or record.get("host") != socket.gethostname():
        return False
    return not any(process_running(int(pid)) for pid in record["pids"])


def remove_stale_work_folders(root: Path | None = None) -> list[Path]:
    """Remove the work folders left by jobs whose processes have all ended; returns those removed."""
    try:
        folders = [p for p in (root or work_root()).iterdir() if p.name.startswith(PREFIX) and p.is_dir()]
    except OSError:
        return []
    removed = []
    for folder in folders:
        if is_stale(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed
