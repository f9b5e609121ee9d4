"""Atomic file writes: write under a unique temporary name beside the target, then rename over it."""
from __future__ import annotations

import errno
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable

from .errors import DiskFull

TEMP_PREFIX = ".tmp-"
_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}


def atomic_write(path: Path, write: Callable[[Path], None], size_hint: int = 0) -> None:
    """Call write(tmp) and rename tmp to `path`; tmp ends with path's name, so writers see the same suffix.

    Readers never see a half-written file, an interrupted write leaves the previous file intact, and
    several processes may write the same path at once (the last rename wins). A full disk (or quota) raises
    DiskFull naming the folder and about how much the file needs (`size_hint` bytes, when the caller knows).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TEMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # some writers create private temp files; results are ordinary files
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        written = tmp.stat().st_size if tmp.exists() else 0
        if _disk_full(e, path.parent, max(size_hint, written)):
            tmp.unlink(missing_ok=True)
            raise DiskFull(disk_full_message(path, max(size_hint, written))) from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomically(path: Path, text: str) -> None:
    """A text file (a result, a report, metadata) written whole or not at all."""
    atomic_write(path, lambda tmp: tmp.write_text(text), size_hint=len(text))


def _disk_full(error: BaseException, folder: Path, needed: int) -> bool:
    """Whether a failed write failed for lack of space: ENOSPC/EDQUOT anywhere in the exception chain (some
    writers, e.g. torch.save, raise their own RuntimeError instead), or less room left than the file needs."""
    seen = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _FULL:
            return True
        seen = seen.__cause__ or seen.__context__
    try:
        return shutil.disk_usage(folder).free < max(needed, 1 << 20)
    except OSError:
        return False


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def disk_full_message(path: Path, needed: int) -> str:
    try:
        free = f"{_megabytes(shutil.disk_usage(path.parent).free)} free"
    except OSError:
        free = "free space unknown"
    need = f"; {path.name} needs about {_megabytes(needed)}" if needed else ""
    return (f"{path.parent}: the disk is full ({free}{need}). Free some space there or choose another folder; "
            f"the files already there were kept as they were.")


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the temporary files interrupted writes left in `folder` (only call while holding its run lock)."""
    removed = []
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.startswith(TEMP_PREFIX) and p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed
