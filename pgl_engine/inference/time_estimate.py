"""How long `pgl segment` will take on a volume: rates measured on this machine when the model was fine-tuned
(one synthetic CT segmented end to end), applied to the volume's size. Shown by `pgl finetune` and the Slicer
panel before anyone presses Apply.

The measurement splits the time into what grows with the input's voxels (read, preprocess, resample back,
write: CPU work) and what grows with the model grid's voxels (the network), so one figure serves a thin-slice
CT and a coarse one alike.
"""
from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

# the formula and its start-up constant are the contract's, which the Slicer panel uses too
from ..contract import SEGMENT_RATES_KEY as RATES_KEY
from ..contract import SEGMENT_STARTUP_S as STARTUP_S
from ..contract import describe_seconds
from ..contract import model_grid_voxels as grid_voxels
from ..contract import segment_seconds

# the synthetic CT: a 256 x 256 x 200 mm field of view at a common thin-slice spacing
PROBE_SHAPE, PROBE_SPACING = (320, 320, 80), (0.8, 0.8, 2.5)
INPUT_PHASES = ("read", "preprocess", "resample_back", "write")
EXAMPLE_CT = ((512, 512, 200), (0.78, 0.78, 2.5))  # a typical abdominal CT: size, spacing (mm)


def probe_scan(path: Path) -> Path:
    """A CT-like int16 volume (air around a soft-tissue ellipse holding denser boxes), written as NIfTI."""
    x, y = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in PROBE_SHAPE[:2]], indexing="ij")
    slice_hu = np.where(x ** 2 / 0.8 + y ** 2 / 0.6 < 1, 40, -1000).astype(np.int16)
    hu = np.repeat(slice_hu[:, :, None], PROBE_SHAPE[2], axis=2)
    for k, (cx, cy) in enumerate(((100, 140), (200, 120), (160, 210))):
        hu[cx - 25:cx + 25, cy - 20:cy + 20, 10 + 15 * k:40 + 15 * k] = 150 + 100 * k
    nib.save(nib.Nifti1Image(hu, np.diag([*PROBE_SPACING, 1.0])), str(path))
    return path


def measure_rates(model, device) -> dict:
    """Segment the synthetic CT with `model` (a LoadedModel) on `device`; seconds per million voxels."""
    import monai.inferers  # noqa: F401  (imported at start-up by pgl segment, not part of the rate)

    from .segmentation import InferenceOptions, finish_scan, prepare_scan
    with tempfile.TemporaryDirectory(prefix="pgl-rate-") as folder:
        scan = probe_scan(Path(folder) / "probe.nii.gz")
        started = time.perf_counter()
        prepared = prepare_scan(model, scan)
        model_voxels = prepared.volume.size
        seconds = finish_scan(model, prepared, Path(folder) / "labels.nii.gz", device, InferenceOptions())
        total = time.perf_counter() - started
    input_voxels = math.prod(PROBE_SHAPE)
    return {"device": device.type, "startup_s": STARTUP_S,
            "input_s_per_megavoxel": sum(seconds[p] for p in INPUT_PHASES) / input_voxels * 1e6,
            "network_s_per_megavoxel": seconds["inference"] / model_voxels * 1e6,
            "measured_s": total}


def model_grid_voxels(metadata: dict, size, spacing) -> int:
    """Voxels of the model's grid covering a volume of `size` voxels at `spacing` mm (axis-aligned)."""
    return grid_voxels(metadata["spacing"], size, spacing)


def estimate_seconds(metadata: dict, size, spacing) -> float | None:
    """Expected seconds of `pgl segment` on one volume, from the model's measured rates (None without them); the
    Slicer panel's figure too (pgl_engine.contract.segment_seconds)."""
    return segment_seconds(metadata, size, spacing)


def example_estimate(metadata: dict) -> str | None:
    """The estimate for a typical abdominal CT (512 x 512 x 200 at 0.78 x 0.78 x 2.5 mm), as a sentence."""
    seconds = estimate_seconds(metadata, *EXAMPLE_CT)
    if seconds is None:
        return None
    device = metadata[RATES_KEY]["device"]
    return (f"segmenting a 512 x 512 x 200 CT (0.78 x 0.78 x 2.5 mm) with this model takes "
            f"{describe_seconds(seconds)} on this machine ({device})")
