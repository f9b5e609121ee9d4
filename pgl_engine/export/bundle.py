"""`pgl export`: a fine-tuned model as a MONAI Bundle that MONAI's own runner and MONAI Label run without
pgl_engine (bundle_config.py says how it reproduces `pgl segment`).

Layout (MONAI's bundle specification): configs/{metadata,inference}.json and logging.conf, models/model.pt (the
state dict, tensors only), docs/README.md, LICENSE. The folder appears whole or not at all.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import torch

from ..atomic import TEMP_PREFIX
from ..errors import PGLError
from ..models.store import LoadedModel, load_model
from ..progress import ProgressCallback, emit
from .bundle_config import inference_config
from .bundle_description import LICENSE_TEXT, LOGGING_CONF, bundle_metadata, readme

FORMATS = ("monai-bundle",)
MAX_OUTPUT_DIFFERENCE = 1e-4  # of the logits of the bundle's network and the model's, on one random patch


def export_model(model: str | Path | LoadedModel, out: str | Path, format: str = "monai-bundle",
                 keep_case_names: bool = False, progress: ProgressCallback | None = None) -> Path:
    """Write a segmentation model folder as a MONAI Bundle in `out` (a new or empty folder); returns `out`.

    Cases the model learnt from are named case_001, ... unless keep_case_names."""
    if format not in FORMATS:
        raise PGLError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}.")
    out = Path(out)
    refuse_occupied(out)
    model = model if isinstance(model, LoadedModel) else load_model(model)
    if model.kind != "segmentation":
        raise PGLError(f"{model.path}: is a {model.kind} model; a MONAI Bundle holds a segmentation model. "
                       f"Fine-tune one from it first (`pgl finetune --init {model.path} ...`) and export that.")
    config = inference_config_for(model)
    state = {k: v.detach().cpu().contiguous() for k, v in model.network.state_dict().items()}
    check_network(model, config, state)
    files = {
        "configs/inference.json": json.dumps(config, indent=2),
        "configs/metadata.json": json.dumps(bundle_metadata(model.metadata, keep_case_names), indent=2),
        "configs/logging.conf": LOGGING_CONF,
        "docs/README.md": readme(model.metadata, keep_case_names),
        "LICENSE": LICENSE_TEXT,
    }
    write_folder(out, files, state)
    emit(progress, "done", out=str(out), format=format, files=sorted([*files, "models/model.pt"]))
    return out


def refuse_occupied(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise PGLError(f"{out}: exists and is a file; give a new or empty folder for --out.")
    if out.is_dir() and any(out.iterdir()):
        raise PGLError(f"{out}: already holds files; give a new or empty folder for --out (nothing was written).")


def inference_config_for(model: LoadedModel) -> dict:
    try:
        return inference_config(model.metadata)
    except PGLError as e:  # the reason, with the folder it concerns
        raise PGLError(str(e).replace("this model", str(model.path), 1)) from None


def check_network(model: LoadedModel, config: dict, state: dict) -> None:
    """Build the network as the bundle will (MONAI's config parser on its network items), load the state dict
    strictly and compare logits with the model's own: anything the config does not express is caught here."""
    from monai.bundle import ConfigParser

    items = {k: config[k] for k in ("imports", "network_backbone", "network_head", "network_def")}
    network = ConfigParser(items).get_parsed_content("network_def", instantiate=True)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise PGLError(f"{model.path}: its weights do not fit the network a MONAI Bundle can express with MONAI and "
                       f"torch layers ({str(e).splitlines()[0]}); it cannot be exported.") from e
    generator = torch.Generator().manual_seed(0)
    x = torch.rand((1, 1, *model.metadata["patch_size"]), generator=generator)
    device = next(model.network.parameters()).device
    with torch.inference_mode():
        ours = model.network.eval()(x.to(device)).cpu()
        theirs = network.eval()(x)
    difference = float((ours - theirs).abs().max())
    if not difference <= MAX_OUTPUT_DIFFERENCE:
        raise PGLError(f"{model.path}: the network a MONAI Bundle can express with MONAI and torch layers computes "
                       f"another function than this model's (logits differ by {difference:.3g}); it cannot be "
                       f"exported.")


def write_folder(out: Path, files: dict[str, str], state: dict) -> None:
    """All files into a temporary folder beside `out`, then one rename: never a half-written bundle."""
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(f"{TEMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-{out.name}")
    try:
        for name, text in files.items():
            (temp / name).parent.mkdir(parents=True, exist_ok=True)
            (temp / name).write_text(text)
        (temp / "models").mkdir(parents=True, exist_ok=True)
        torch.save(state, temp / "models" / "model.pt")
        if out.is_dir():
            out.rmdir()  # empty (checked above); a folder that filled meanwhile stops the export here
        os.replace(temp, out)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
