"""`pgl segment` end to end against MONAI's sliding_window_inference alone, in one run.

Input: a CT-like volume of 512 x 512 x 200 voxels at 0.78 x 0.78 x 2.5 mm (a phantom resampled onto that grid),
a segmentation model with 5 labels (default UNet; weights do not change the timing). The end-to-end run
(`pgl segment` in a subprocess: read, preprocess, infer, resample back, write) is timed with its peak RSS;
the network-only run times sliding_window_inference on the already preprocessed tensor with the same network,
window, overlap and batch. The end-to-end time is also split into phases (from `pgl segment`'s JSON events).
Writes benchmarks/results/segment_end_to_end.json.
Usage: python benchmarks/segment_end_to_end.py [--device cpu] [--spacing 1.5 1.5 3] [--patch 64 64 32]
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch

from pgl_engine.config import NetworkConfig
from pgl_engine.imaging import load_ras, normalise_hu
from pgl_engine.inference import predict_logits
from pgl_engine.labels import label_table
from pgl_engine.model_store import load_model, save_model
from pgl_engine.networks import build_segmentation_net
from pgl_engine.phantom import LABELS, make_phantom
from pgl_engine.training import resolve_device

SHAPE, SPACING = (512, 512, 200), (0.78, 0.78, 2.5)


def make_input(path: Path, labels_path: Path | None = None) -> None:
    """A phantom resampled onto the benchmark grid (centred, axis-aligned RAS); its label map too if asked."""
    case = make_phantom(7, spacing_scale=1.0)
    ref = sitk.Image(SHAPE, sitk.sitkInt16)
    ref.SetSpacing(SPACING)
    ref.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    ref.SetOrigin(tuple(-(np.array(SHAPE) - 1) / 2 * np.array(SPACING) * np.array([-1, -1, 1])))
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = -(np.array(SHAPE) - 1) / 2 * np.array(SPACING)
    outputs = [(case.image, path, sitk.sitkLinear, -1024, np.int16)]
    if labels_path is not None:
        outputs.append((case.labels, labels_path, sitk.sitkNearestNeighbor, 0, np.uint8))
    for array, target, interpolator, fill, dtype in outputs:
        src = sitk.GetImageFromArray(array.transpose(2, 1, 0))
        src.SetSpacing(tuple(float(v) for v in np.diag(case.affine)[:3]))
        src.SetOrigin(tuple(float(v) for v in case.affine[:3, 3] * np.array([-1, -1, 1])))
        src.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
        out = sitk.GetArrayFromImage(sitk.Resample(src, ref, sitk.Transform(), interpolator, fill))
        nib.save(nib.Nifti1Image(out.transpose(2, 1, 0).astype(dtype), affine), str(target))


def make_model(path: Path, spacing, patch) -> None:
    torch.manual_seed(0)
    network = NetworkConfig()
    net = build_segmentation_net(network, len(LABELS) + 1)
    save_model(path, net.state_dict(), {"kind": "segmentation", "method": "benchmark", "network": network.to_dict(),
                                        "spacing": list(spacing), "hu_window": [-1024.0, 325.0],
                                        "patch_size": list(patch), "labels": label_table(LABELS), "training": {}})


def network_only(model_dir: Path, image: Path, device: torch.device, sw_batch_size: int) -> tuple[float, tuple]:
    model = load_model(model_dir)
    meta = model.metadata
    volume = normalise_hu(load_ras(image, tuple(meta["spacing"])).array, tuple(meta["hu_window"]))
    model.network.to(device)
    if device.type == "cuda":  # CUDA context, cuDNN algorithm choice: not part of the steady-state figure
        predict_logits(model.network, volume[:96, :96, :48], tuple(meta["patch_size"]), device, 0.5, sw_batch_size)
        torch.cuda.synchronize()
    start = time.perf_counter()
    predict_logits(model.network, volume, tuple(meta["patch_size"]), device, 0.5, sw_batch_size)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, volume.shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--spacing", type=float, nargs=3, default=(1.5, 1.5, 3.0), help="model spacing (mm)")
    parser.add_argument("--patch", type=int, nargs=3, default=(64, 64, 32), help="model patch size")
    parser.add_argument("--sw-batch-size", type=int, default=4)
    parser.add_argument("--work-dir", default="")
    args = parser.parse_args()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="pgl_seg_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    image, model = work / "ct_512x512x200.nii.gz", work / "model"
    if not image.is_file():
        make_input(image)
    make_model(model, args.spacing, args.patch)
    device = resolve_device(args.device)

    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "pgl_engine", "segment", "--model", str(model), "--input",
                          str(image), "--output", str(work / "seg.nii.gz"), "--device", str(device.type),
                          "--sw-batch-size", str(args.sw_batch_size), "--progress", "json"],
                         check=True, capture_output=True, text=True)
    end_to_end = time.perf_counter() - start
    events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    phases = next(e["seconds"] for e in events if e.get("stage") == "segment")
    phases["startup"] = end_to_end - sum(phases.values())  # interpreter, imports, model loading, device set-up
    peak_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    net_s, grid = network_only(model, image, device, args.sw_batch_size)
    result = {"device": str(device), "cpu": platform.machine(), "threads": torch.get_num_threads(),
              "input_shape": list(SHAPE), "input_spacing": list(SPACING), "model_spacing": list(args.spacing),
              "model_grid": list(grid), "patch": list(args.patch), "labels": len(LABELS),
              "end_to_end_s": end_to_end, "network_only_s": net_s, "ratio": end_to_end / net_s,
              "peak_rss_mb": peak_rss_mb, "phases_s": phases}
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "segment_end_to_end.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"\nend to end {end_to_end:.1f} s vs network only {net_s:.1f} s: ratio {result['ratio']:.2f} "
          f"(goal <= 1.3); peak RSS {peak_rss_mb:.0f} MB (goal < 1500 MB)")
    print("end to end by phase: " + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items()))


if __name__ == "__main__":
    main()
