"""train_log.jsonl: one JSON line per training step."""
from __future__ import annotations

import errno
import json
import math
from pathlib import Path

from ..atomic import disk_full_message, write_text_atomically
from ..errors import DiskFull


class StepLog:
    """One line per step, flushed as written, so a killed run loses no line. A new run starts the file afresh; a
    resumed one first drops the lines after its checkpoint's step, so log and checkpoint agree."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        if resume_step and path.is_file():
            kept = [line for line in path.read_text().splitlines() if logged_step(line) <= resume_step]
            write_text_atomically(path, "".join(f"{line}\n" for line in kept))
        self.file = open(path, "a" if resume_step else "w")

    def write(self, record: dict) -> None:
        try:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        except OSError as e:
            if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
                raise DiskFull(disk_full_message(self.path, 1 << 20)) from None
            raise

    def close(self) -> None:
        try:
            self.file.close()
        except OSError:
            pass  # a full disk was reported when the line was written


def logged_step(line: str) -> float:
    """The step of a log line; a damaged line (cut by a kill) counts as after every step."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf
