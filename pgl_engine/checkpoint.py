"""Resumable training checkpoints: tensors and plain data only, loaded with weights_only=True."""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from .atomic import atomic_write
from .errors import PGLError

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.pt"


def checkpoint_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / CHECKPOINT_DIR / LATEST


def save_checkpoint(out_dir: str | Path, state: dict) -> Path:
    """Write atomically: the previous checkpoint stays intact until the new one is complete."""
    path = checkpoint_path(out_dir)
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    return path


def load_checkpoint(out_dir: str | Path) -> dict:
    path = checkpoint_path(out_dir)
    if not path.is_file():
        raise PGLError(f"{Path(out_dir)}: has no checkpoint to resume ({CHECKPOINT_DIR}/{LATEST}); start a new "
                       f"run without --resume.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
        raise PGLError(f"{path}: cannot be read as a PGL checkpoint ({str(e).splitlines()[0][:200]}).") from e
