"""What a folder the user picked holds, read without the engine (so without torch): a model, a run, nothing."""
from __future__ import annotations

import json
from pathlib import Path

from pgl_engine.contract import CHECKPOINT_DIR, MODEL_FORMAT, MODEL_METADATA_FILE, TRAIN_LOG_FILE

MODEL_FILE, LOG_FILE = MODEL_METADATA_FILE, TRAIN_LOG_FILE  # the names this side has used


def is_model_folder(path: str) -> bool:
    """A PGL model folder (pgl_model.json of our format) of any kind."""
    try:
        return json.loads((Path(path) / MODEL_FILE).read_text()).get("format") == MODEL_FORMAT
    except (OSError, ValueError, AttributeError, TypeError):
        return False


def holds_pgl_run(path: str) -> bool:
    """A model, checkpoints, or a run stopped before its first checkpoint: what --overwrite would replace."""
    folder = Path(path) if path else None
    if folder is None or not folder.is_dir():
        return False
    # hidden files (the engine's run lock, temporary files of an interrupted write) are not the folder's content
    visible = [p.name for p in folder.iterdir() if not p.name.startswith(".")]
    return is_model_folder(path) or (folder / CHECKPOINT_DIR).is_dir() or visible == [LOG_FILE]


def same_folder(a: str, b: str) -> bool:
    return bool(a) and bool(b) and Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
