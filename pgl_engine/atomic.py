"""Atomic file writes: write under a unique temporary name beside the target, then rename over it."""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp) and rename tmp to `path`; tmp ends with path's name, so writers see the same suffix.

    Readers never see a half-written file, an interrupted write leaves the previous file intact, and
    several processes may write the same path at once (the last rename wins).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # some writers create private temp files; results are ordinary files
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
