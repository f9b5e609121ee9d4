"""What the engine and the Slicer side must agree on, defined once: exit codes, file names, event names, the
defaults the panels show, the segment-time formula.

The engine imports it and so do the Slicer modules (PGLCommon, PGLPretrain, PGLSegmentation), in Slicer's own
Python (3.9 in Slicer 5.8, 3.12 in 5.10), where torch may not be installed yet: standard library only, and no
other pgl_engine module.
"""
from __future__ import annotations

import math

# --- exit codes of `pgl <command>` (`python -m pgl_engine <command>`) -------------------------------------------
EXIT_OK = 0
EXIT_ERROR = 1  # a failure; the last JSON event (or stderr line) says what and what to do
EXIT_CANCELLED = 130  # stopped on request (stop file, Ctrl-C, SIGTERM, the caller gone), checkpoint saved first;
# 128 + SIGINT, what a shell reports for Ctrl-C

# --- file and folder names ------------------------------------------------------------------------------------
MODEL_METADATA_FILE = "pgl_model.json"  # a model folder: its metadata (docs/formats.md) ...
MODEL_WEIGHTS_FILE = "model.safetensors"  # ... and its weights
MODEL_FORMAT = "pgl-model"  # MODEL_METADATA_FILE's "format": what tells our model folders from others
CHECKPOINT_DIR = "checkpoints"  # a training run's output folder: resumable checkpoints ...
TRAIN_LOG_FILE = "train_log.jsonl"  # ... and one JSON line per training step
LABEL_TABLE_SUFFIX = ".labels.json"  # `<label map>.labels.json` beside a label map: label names and colours

# --- the JSON events of `--progress json`, one object per line with its name under "event" (docs/formats.md) ------
EVENTS = ("progress", "info", "warning", "checkpoint", "done", "cancelled", "error")

# the start of the engine's info event on what it chose for the machine and the time budget, which the panels
# show as soon as it arrives
CONFIGURATION_CHOSEN = "configuration chosen"

# --- defaults: the engine's options and what the panels show before anyone changes them ----------------------
PRETRAIN_METHOD = "pgl"  # or "byol"
PATCH_SIZE = (64, 64, 32)  # network input in voxels, x y z (fine-tuning with fixed steps; the fine grid)
SPACING_MM = (1.5, 1.5, 3.0)  # resampling spacing, x y z
# the coarse grid a CPU fine-tunes on within minutes (pgl_engine/finetuning/budget_choice.py) ...
COARSE_PATCH_SIZE = (48, 48, 32)
COARSE_SPACING_MM = (3.2, 3.2, 6.0)
# ... is where pretraining learns by default: fine-tuning a model on the grid it was pretrained on keeps the
# structures at the size its filters learnt them
PRETRAIN_PATCH_SIZE = COARSE_PATCH_SIZE
PRETRAIN_SPACING_MM = COARSE_SPACING_MM
# PGL's local loss still falls at 500 steps; 2000 gave a better start (docs/benchmarks.md, "Pretraining length")
PRETRAIN_STEPS = 2000
BATCH_SIZE = 2  # samples per step (per process)
DEVICE = "auto"
# fine-tuning without steps or minutes: this many minutes of wall clock from the start to the saved model
# (reading, preprocessing and the choice of configuration included)
DEFAULT_FINETUNE_MINUTES = 5.0
# ... and when continuing a segmentation model: a refine round (the correction learnt, then the scan segmented
# again) that the user waits for
REFINE_MINUTES = 0.5
# `pgl check-pretraining` and the panel's Check: fine-tuning steps per run
CHECK_PRETRAINING_STEPS = 300

# --- how long `pgl segment` will take: shown by `pgl finetune` and by the Slicer panel before Apply -------------
SEGMENT_RATES_KEY = "segment_rates"  # the model metadata's rates, measured when fine-tuning ends
# interpreter, imports (torch, MONAI) and model loading of `pgl segment` on a CPU (docs/benchmarks.md): a
# constant, not measured per machine; also the value for rates stored without it
SEGMENT_STARTUP_S = 5.0


def model_grid_voxels(model_spacing, size, spacing) -> int:
    """Voxels of the model's grid (`model_spacing` mm) covering a volume of `size` voxels at `spacing` mm
    (axis-aligned)."""
    voxels = 1
    for n, mm, model_mm in zip(size, spacing, model_spacing):
        voxels *= max(math.ceil(n * abs(float(mm)) / float(model_mm) - 1e-6), 1)
    return voxels


def segment_seconds(metadata: dict, size, spacing) -> float | None:
    """Expected seconds of `pgl segment` on one volume of `size` voxels at `spacing` mm, from the rates in the
    model's metadata (seconds per million input voxels and per million model-grid voxels, docs/formats.md); None
    for a model without them (fine-tuned with an older version)."""
    rates = metadata.get(SEGMENT_RATES_KEY)
    if not isinstance(rates, dict) or not rates or not metadata.get("spacing"):
        return None
    return (rates.get("startup_s", SEGMENT_STARTUP_S) + rates["input_s_per_megavoxel"] * math.prod(size) / 1e6
            + rates["network_s_per_megavoxel"] * model_grid_voxels(metadata["spacing"], size, spacing) / 1e6)


def describe_seconds(seconds: float) -> str:
    """'about 20 s', 'about 3 min'."""
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    return f"about {round(seconds / 60)} min"
