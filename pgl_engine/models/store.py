"""Model folders: weights in safetensors (loading cannot run code) plus JSON metadata."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..atomic import TEMP_PREFIX, atomic_write, remove_stale_temp_files, write_text_atomically
from ..config import NetworkConfig
from ..contract import CHECKPOINT_DIR, MODEL_FORMAT, MODEL_METADATA_FILE, MODEL_WEIGHTS_FILE, TRAIN_LOG_FILE
from ..data.cache import file_digest
from ..errors import PGLError
from ..training.run_lock import LOCK_FILE
from .networks import SegmentationNet, build_backbone, build_segmentation_net

WEIGHTS_FILE, METADATA_FILE = MODEL_WEIGHTS_FILE, MODEL_METADATA_FILE
FORMAT_VERSION = 1
KINDS = ("pretrained", "segmentation")


@dataclass
class LoadedModel:
    """A model folder read back: its metadata and its network with the stored weights.

    `network` is the backbone for a pretrained model and the whole SegmentationNet for a segmentation model.
    """

    path: Path
    metadata: dict
    network: nn.Module

    @property
    def kind(self) -> str:
        return self.metadata["kind"]

    @property
    def backbone(self) -> nn.Module:
        return self.network.backbone if isinstance(self.network, SegmentationNet) else self.network

    @property
    def label_table(self) -> dict[str, dict]:
        return self.metadata.get("labels", {})

    @property
    def network_config(self) -> NetworkConfig:
        return NetworkConfig.from_dict(self.metadata["network"])


def save_model(out_dir: str | Path, tensors: dict[str, torch.Tensor], metadata: dict) -> Path:
    """Write weights, then metadata (which records the weights' hash), each atomically."""
    out_dir = Path(out_dir)
    weights = out_dir / WEIGHTS_FILE
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(weights, lambda tmp: save_file(tensors, str(tmp)),
                 size_hint=sum(t.numel() * t.element_size() for t in tensors.values()))
    metadata = {"format": MODEL_FORMAT, "format_version": FORMAT_VERSION, **metadata,
                "weights_sha256": file_digest(weights)}
    write_text_atomically(out_dir / METADATA_FILE, json.dumps(metadata, indent=2))
    return out_dir


def update_metadata(out_dir: str | Path, entries: dict) -> dict:
    """Add or replace metadata entries of a saved model (the weights stay as they are); returns the metadata."""
    path = Path(out_dir) / METADATA_FILE
    metadata = {**json.loads(path.read_text()), **entries}
    write_text_atomically(path, json.dumps(metadata, indent=2))
    return metadata


def is_model_dir(path: Path) -> bool:
    return (path / METADATA_FILE).is_file()


def read_metadata(model_dir: str | Path) -> dict:
    """The metadata of a PGL model folder; PGLError saying what is wrong otherwise."""
    path = Path(model_dir)
    if path.is_file():
        raise PGLError(
            f"{path}: is a file. A PGL model is a folder holding {METADATA_FILE} and {WEIGHTS_FILE}; "
            f"pickled files (.pt, .pth, .ckpt) are never loaded because loading them can run code."
        )
    if not path.is_dir():
        raise PGLError(f"{path}: no such model folder.")
    meta_path = path / METADATA_FILE
    if not meta_path.is_file():
        raise PGLError(f"{path}: is not a PGL model folder (no {METADATA_FILE}). Choose the folder that "
                       f"`pgl pretrain` or `pgl finetune` wrote.")
    try:
        metadata = json.loads(meta_path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise PGLError(f"{meta_path}: is not valid JSON ({e}); the model folder is damaged.") from e
    if not isinstance(metadata, dict) or metadata.get("format") != MODEL_FORMAT:
        raise PGLError(f"{meta_path}: is not PGL model metadata (format must be {MODEL_FORMAT!r}).")
    if metadata.get("format_version", 0) > FORMAT_VERSION:
        raise PGLError(f"{path}: was written by a newer pgl_engine (format {metadata['format_version']}); "
                       f"update the engine.")
    if metadata.get("kind") not in KINDS or "network" not in metadata:
        raise PGLError(f"{meta_path}: has no valid 'kind' ({'/'.join(KINDS)}) or 'network' entry.")
    return metadata


def load_model(model_dir: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a PGL model folder without executing anything from its files."""
    path = Path(model_dir)
    metadata = read_metadata(path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise PGLError(f"{path}: has no {WEIGHTS_FILE}; the model folder is incomplete.")
    if metadata.get("weights_sha256") and file_digest(weights) != metadata["weights_sha256"]:
        raise PGLError(f"{weights}: does not match {METADATA_FILE} (hash differs); the folder is incomplete "
                       f"or was modified. Re-run the training or restore the folder.")
    try:
        tensors = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise PGLError(f"{weights}: is not a safetensors file ({e}). PGL loads only safetensors weights.") from e
    network_config = NetworkConfig.from_dict(metadata["network"])
    if metadata["kind"] == "segmentation":
        network = build_segmentation_net(network_config, len(metadata.get("labels", {})) + 1)
    else:
        network = build_backbone(network_config)
        tensors = {k.removeprefix("backbone."): v for k, v in tensors.items() if k.startswith("backbone.")}
    try:
        network.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise PGLError(f"{weights}: weights do not fit the network described in {METADATA_FILE}.") from e
    return LoadedModel(path, metadata, network.to(device))


def require_kind(model: LoadedModel, kind: str, hint: str) -> None:
    """Refuse a model folder of the wrong kind with a message that says what to do."""
    if model.kind != kind:
        raise PGLError(f"{model.path}: is a {model.kind} model, not a {kind} model; {hint}")


LOG_FILE = TRAIN_LOG_FILE  # one JSON line per training step, written by training.TrainingRun
IGNORED = (LOCK_FILE, f"{LOCK_FILE}.takeover")  # the run lock is not content of the folder


def _contents(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name not in IGNORED and not p.name.startswith(TEMP_PREFIX))


def stopped_before_first_checkpoint(out: Path) -> bool:
    """A run that ended (failed or was killed) before writing anything but its log."""
    return out.is_dir() and _contents(out) == [LOG_FILE]


def refuse_foreign_output(out: str | Path) -> Path:
    """Refuse an --out that is a file or a folder holding files that are not a PGL run (writes nothing)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PGLError(f"{out}: exists and is a file; give a folder for --out.")
    if out.is_dir() and _contents(out):
        ours = is_model_dir(out) or (out / CHECKPOINT_DIR).is_dir() or stopped_before_first_checkpoint(out)
        if not ours:
            raise PGLError(f"{out}: already holds other files; choose an empty or new folder for --out "
                           f"(nothing was changed).")
    return out


def prepare_output_dir(out: str | Path, resume: bool, overwrite: bool) -> Path:
    """Refuse an output folder that holds something other than our own run, so nothing is lost; call it while
    holding the folder's run lock (it clears temporary files that interrupted writes left)."""
    out = refuse_foreign_output(out)
    if not resume and out.is_dir() and _contents(out) and not overwrite:
        if stopped_before_first_checkpoint(out):
            raise PGLError(f"{out}: holds a run that stopped before its first checkpoint, so there is nothing to "
                           f"resume; add --overwrite to start it again there (its {LOG_FILE} is replaced), or "
                           f"choose another --out folder.")
        raise PGLError(f"{out}: already holds a PGL run; use --resume to continue it, --overwrite to "
                       f"replace it, or another --out folder.")
    out.mkdir(parents=True, exist_ok=True)
    for folder in (out, out / CHECKPOINT_DIR):
        remove_stale_temp_files(folder)
    return out
