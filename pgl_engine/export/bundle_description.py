"""What a MONAI Bundle says about its model: `configs/metadata.json` (MONAI's bundle specification, with the
label names and values machine-readable), `docs/README.md` and `LICENSE`.

An export is meant to be shared: the cases the model learnt from are named by neutral IDs (case_001, ...) unless
the caller keeps their names, and no path of the model's metadata is copied.
"""
from __future__ import annotations

from importlib import metadata as package_metadata

import numpy as np
import torch

from .. import __version__
from .bundle_config import OUTPUT_POSTFIX, SCHEMA, class_values

BUNDLE_VERSION = "1.0.0"


def case_ids(meta: dict, keep_case_names: bool) -> list[str]:
    """The cases the model learnt from (across its lineage, each once), as neutral IDs or as named."""
    names: list[str] = []
    for entry in [*meta.get("lineage", []), {"cases": meta.get("cases", [])}]:
        names += [str(c) for c in entry.get("cases", []) if str(c) not in names]
    return names if keep_case_names else [f"case_{i:03d}" for i in range(1, len(names) + 1)]


def validation_dice(meta: dict) -> dict[str, float] | None:
    """Per-structure Dice on held-out validation cases, and their mean; None when the model had none."""
    learnt = meta.get("learnt") or {}
    validation = meta.get("validation") or {}
    if learnt.get("source") != "validation" and not validation:
        return None
    dice = {name: d for name, d in (learnt.get("dice") or {}).items() if d is not None} \
        if learnt.get("source") == "validation" else {}
    if validation.get("dice") is not None:
        dice["mean"] = float(validation["dice"])
    return dice or None


def _version(package: str) -> str:
    try:
        return package_metadata.version(package)
    except package_metadata.PackageNotFoundError:
        return "unknown"


def bundle_metadata(meta: dict, keep_case_names: bool = False) -> dict:
    """configs/metadata.json: the specification's required keys, the label table, and how the model was made."""
    names = {int(k): v["name"] for k, v in meta["labels"].items()}
    values = class_values(meta["labels"])
    by_class = {str(k): ("background" if v == 0 else names[v]) for k, v in enumerate(values)}
    by_value = {"0": "background", **{str(v): names[v] for v in sorted(names)}}
    patch = [int(s) for s in meta["patch_size"]]
    cases = case_ids(meta, keep_case_names)
    structures = ", ".join(names[v] for v in sorted(names))
    dice = validation_dice(meta)
    out = {
        "schema": SCHEMA,
        "version": BUNDLE_VERSION,
        "changelog": {BUNDLE_VERSION: f"exported from a PGL segmentation model by pgl_engine {__version__}"},
        "monai_version": _version("monai"),
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": {"nibabel": _version("nibabel")},
        "name": f"PGL CT segmentation ({structures})",
        "task": f"Segmentation of {structures} in CT",
        "description": (f"A residual MONAI UNet with a pointwise head, fine-tuned with PGL (pgl_engine "
                        f"{meta.get('engine_version', __version__)}) on {len(cases)} labelled CT scan(s). Scans are "
                        f"reoriented to RAS, resampled to {_mm(meta['spacing'])} mm, windowed to "
                        f"[{meta['hu_window'][0]:g}, {meta['hu_window'][1]:g}] HU scaled to [0, 1], and segmented "
                        f"with a Gaussian sliding window of {'x'.join(map(str, patch))} voxels; label maps are "
                        f"written on each input's grid."),
        "authors": "the model's trainers (exported with pgl_engine)",
        "copyright": "Copyright (c) the model's trainers",
        "intended_use": "Research; not for diagnostic use.",
        "data_source": f"{len(cases)} labelled CT scan(s): {', '.join(cases)}",
        "data_type": "nifti",
        "image_classes": "one channel, CT in HU",
        "label_classes": ", ".join(f"{v}: {n}" for v, n in by_value.items()),
        "pred_classes": f"{len(values)} channels of class logits: " + ", ".join(f"{k}: {n}" for k, n in by_class.items()),
        "supported_apps": ["monai-label"],
        "network_data_format": {
            "inputs": {"image": {
                "type": "image", "format": "hounsfield", "modality": "CT", "num_channels": 1,
                "spatial_shape": patch, "dtype": "float32", "value_range": [0, 1], "is_patch_data": True,
                "channel_def": {"0": "image"}}},
            "outputs": {"pred": {
                "type": "image", "format": "labels", "num_channels": len(values), "spatial_shape": patch,
                "dtype": "float32", "value_range": [], "is_patch_data": True, "channel_def": by_class}},
            # after postprocessing: one channel of label values on the input's grid
            "post_processed_outputs": {"pred": {
                "type": "image", "format": "segmentation", "num_channels": 1, "spatial_shape": ["*", "*", "*"],
                "dtype": "uint8", "value_range": [0, max(values)], "is_patch_data": False,
                "channel_def": by_value}},
        },
        # the same facts as plain data for programs: class k of the network is written as label_values[k]
        "pgl": {"label_values": values, "labels": {v: meta["labels"][v] for v in sorted(meta["labels"], key=int)},
                "spacing": list(meta["spacing"]), "hu_window": list(meta["hu_window"]), "patch_size": patch,
                "network": meta["network"], "cases": cases, "training_steps": meta.get("training", {}).get("steps"),
                "validation_dice": dice, "engine_version": meta.get("engine_version", __version__)},
    }
    if dice and "mean" in dice:
        out["eval_metrics"] = {"mean_dice": dice["mean"]}
    return out


def _mm(values) -> str:
    return " x ".join(f"{float(v):g}" for v in values)


def readme(meta: dict, keep_case_names: bool = False) -> str:
    """docs/README.md: what the model segments, from which cases, how, how well, and how to run it."""
    names = {int(k): v["name"] for k, v in meta["labels"].items()}
    cases = case_ids(meta, keep_case_names)
    dice = validation_dice(meta)
    labels = "\n".join(f"| {v} | {names[v]} |" for v in sorted(names))
    if dice:
        quality = "Dice on held-out validation cases: " + ", ".join(f"{k} {d:.3f}" for k, d in dice.items()) + "."
    else:
        quality = "No validation Dice: the model was fine-tuned without held-out validation cases."
    patch = "x".join(str(int(s)) for s in meta["patch_size"])
    one_piece = [names[int(v)] for v in meta.get("one_piece_labels", []) if int(v) in names]
    pieces = (f" of {', '.join(one_piece)} (one piece in every training case) only the largest 26-connected piece "
              f"kept;" if one_piece else "")
    return f"""# PGL CT segmentation model (MONAI Bundle)

Segments {', '.join(names[v] for v in sorted(names))} in CT scans. Exported by pgl_engine {__version__} from a
model fine-tuned with PGL (Prior-Guided Local self-supervised pretraining, then supervised fine-tuning).

## Labels

| value | structure |
|---|---|
{labels}

0 is background. The same table is in `configs/metadata.json` (`network_data_format`: `outputs` gives the
network's channels, `post_processed_outputs` the label values written).

## Training data

Learnt from {len(cases)} labelled CT scan(s): {', '.join(cases)}.
{"" if keep_case_names else "(Neutral IDs: the scans' names were left out of this export.)"}

## Preprocessing and inference

- reoriented to RAS and resampled (linear) onto an axis-aligned grid of {_mm(meta['spacing'])} mm covering
  the scan;
- HU window [{meta['hu_window'][0]:g}, {meta['hu_window'][1]:g}] clipped and scaled to [0, 1];
- Gaussian sliding window of {patch} voxels (overlap 0.5); class logits resampled linearly back onto the
  input's grid, then the arg-max;{pieces} label maps written as `<scan>_{OUTPUT_POSTFIX}.nii.gz` (uint8).

## Quality

{quality}

## Run

```
pip install monai nibabel fire
python -m monai.bundle run --config_file BUNDLE/configs/inference.json --dataset_dir SCANS --output_dir OUT
```

`SCANS` is a folder of NIfTI scans (`*.nii`, `*.nii.gz`); `configs/metadata.json` is found beside the config, and the
bundle finds its own folder (give `--bundle_root BUNDLE` if the config is run from elsewhere than this layout).

## Serve with MONAI Label

1. `pip install monailabel`
2. `monailabel apps --download --name monaibundle --output apps`
3. Copy this folder to `apps/monaibundle/model/pgl_ct_segmentation` (a name with `segmentation` in it makes
   MONAI Label treat it as a segmentation model).
4. `monailabel start_server --app apps/monaibundle --studies STUDIES --conf models pgl_ct_segmentation`
5. In 3D Slicer's MONAI Label module, connect to the server and run the model on a loaded scan.

MONAI Label names the labels from `network_data_format` `outputs` `channel_def`, whose keys are the network's
channels: they are the label values written when the values run 1, 2, 3, ... without gaps.

## Intended use

Research only; not for diagnostic use.
"""


LICENSE_TEXT = """The configuration files of this MONAI Bundle were generated by pgl_engine and are licensed under the
Apache License, Version 2.0 (https://www.apache.org/licenses/LICENSE-2.0).

The model weights (models/model.pt) were trained by the model's owners on their data; the terms on which they
may be used and shared are theirs to set. Replace this paragraph with those terms before sharing the bundle.
"""

LOGGING_CONF = """[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=fullFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)

[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""
