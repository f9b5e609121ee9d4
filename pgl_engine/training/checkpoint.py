"""Resumable training checkpoints: tensors and plain data only, loaded with weights_only=True."""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from ..atomic import atomic_write
from ..contract import CHECKPOINT_DIR
from ..errors import PGLError

LATEST = "latest.pt"


def checkpoint_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / CHECKPOINT_DIR / LATEST


def tensor_bytes(value) -> int:
    """Bytes of the tensors in a nested state (what a checkpoint needs on disk, about)."""
    if torch.is_tensor(value):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v) for v in value)
    return 0


def save_checkpoint(out_dir: str | Path, state: dict) -> Path:
    """Write atomically: the previous checkpoint stays intact until the new one is complete."""
    path = checkpoint_path(out_dir)
    atomic_write(path, lambda tmp: torch.save(state, tmp), size_hint=tensor_bytes(state))
    return path


def load_checkpoint(out_dir: str | Path) -> dict:
    path = checkpoint_path(out_dir)
    out = Path(out_dir)
    if not path.is_file():
        if not out.is_dir():
            raise PGLError(f"{out}: no such folder to resume; start a new run without --resume.")
        if any(out.iterdir()):
            raise PGLError(f"{out}: the run there stopped before its first checkpoint ({CHECKPOINT_DIR}/{LATEST}), "
                           f"so there is nothing to resume. Start it again with --overwrite instead of --resume "
                           f"(its log is replaced), or use another --out folder.")
        raise PGLError(f"{out}: is empty, so there is nothing to resume; start a new run there without --resume.")
    if not _starts_like_zip(path):
        _refuse(path, "it is not in the format pgl writes (another program's file, or overwritten)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        _refuse(path, "it holds Python objects other than tensors and plain data, and such a file may contain code")
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError, TypeError) as e:
        raise PGLError(f"{path}: cannot be read as a PGL checkpoint (it is damaged or truncated: "
                       f"{_first_line(e)}). Start again with --overwrite, or restore the file.") from None


def _starts_like_zip(path: Path) -> bool:
    """torch.save writes a zip archive; anything else is never handed to the unpickler."""
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _refuse(path: Path, what: str) -> None:
    raise PGLError(f"{path}: is not a PGL checkpoint: {what}; it was not loaded. Resume only from checkpoints "
                   f"that pgl wrote, or start again with --overwrite.")


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:160]
