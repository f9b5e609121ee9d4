"""`pgl segment` end to end: the sliding window (every model's default) against the one pass that batch-normalised
models allow (`--one-pass`), each split into phases, against the network alone, with Dice against the truth.

Input: a CT-like volume of 512 x 512 x 200 voxels at 0.78 x 0.78 x 2.5 mm (a phantom resampled onto that grid)
and its true label map. Models: trained ones (--instance-model, --batch-model: e.g. the fine-tuned models of
`pgl compare` runs with --finetune-option 'network={"norm": "batch"}') or, without them, untrained ones of the
default network (timing only: weights do not change it; Dice is then skipped).

In one run it prints:
- each end-to-end path (`pgl segment` in a subprocess: start-up, read, preprocess, inference, resample back,
  write) with its peak RSS: instance norm + sliding window in fp32 (the path before batch normalisation and
  bf16) and at the automatic precision (bf16 on CPUs with native bf16), batch norm + sliding window at the
  automatic precision, batch norm + one pass at the automatic precision and in fp32;
- the network alone on the preprocessed volume: the sliding window, and the one-pass limit in fp32 and bf16;
- the Dice per organ of every path against the truth and of the new path against the old one;
- the time the model's measured rates predicted (segment_time.estimate_seconds) against the time taken.
Writes benchmarks/results/segment_end_to_end.json.
Usage: python benchmarks/segment_end_to_end.py [--instance-model DIR --batch-model DIR] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
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
from pgl_engine.data.imaging import load_ras, normalise_hu
from pgl_engine.data.labels import label_table
from pgl_engine.inference.evaluation import dice_per_label
from pgl_engine.inference.sliding_window import predict_logits
from pgl_engine.inference.time_estimate import estimate_seconds
from pgl_engine.models.networks import build_segmentation_net
from pgl_engine.models.store import load_model, read_metadata, save_model
from pgl_engine.phantoms.tuning import LABELS, make_phantom
from pgl_engine.training.loop import resolve_device
from pgl_engine.training.precision import inference_dtype

SHAPE, SPACING = (512, 512, 200), (0.78, 0.78, 2.5)
ORGANS = {1: "liver", 2: "spleen", 3: "right kidney", 4: "left kidney"}
OLD, NEW = "instance, sliding window, fp32", "batch, one pass, auto precision"  # before / the fastest path


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


def make_model(path: Path, norm: str, spacing=(3.2, 3.2, 6.0), patch=(48, 48, 32),
               network: NetworkConfig | None = None) -> Path:
    """An untrained segmentation model (the default network with `norm`, or `network`), for timing only."""
    torch.manual_seed(0)
    network = network or NetworkConfig(norm=norm)
    net = build_segmentation_net(network, len(LABELS) + 1)
    save_model(path, net.state_dict(), {"kind": "segmentation", "method": "benchmark", "network": network.to_dict(),
                                        "spacing": list(spacing), "hu_window": [-1024.0, 325.0],
                                        "patch_size": list(patch), "labels": label_table(LABELS), "training": {}})
    return path


def run_segment(model: Path, image: Path, output: Path, device: str, *extra: str) -> dict:
    """`pgl segment` in a subprocess: wall seconds, seconds per phase (start-up = the rest), peak RSS (MB)."""
    with tempfile.TemporaryFile("w+") as events:
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "pgl_engine", "segment", "--model", str(model), "--input",
                                    str(image), "--output", str(output), "--device", device, "--progress", "json",
                                    "--overwrite", *extra], stdout=events, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own peak RSS
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        if process.returncode:
            raise SystemExit(f"pgl segment failed ({process.returncode}) on {model}")
        events.seek(0)
        lines = [json.loads(line) for line in events if line.startswith("{")]
    phases = next(e["seconds"] for e in lines if e.get("stage") == "segment")
    phases["startup"] = wall - sum(phases.values())  # interpreter, imports, model loading, device set-up
    return {"wall_s": wall, "phases_s": phases, "peak_rss_mb": usage.ru_maxrss / 1024}


def network_only(model_dir: Path, image: Path, device: torch.device, precisions: tuple[str, ...],
                 one_pass: bool = False) -> tuple[dict[str, float], tuple]:
    """Seconds of the network alone on the preprocessed volume (sliding window, or one pass), per precision;
    the model is loaded and the scan preprocessed once."""
    model = load_model(model_dir)
    meta = model.metadata
    volume = normalise_hu(load_ras(image, tuple(meta["spacing"])).array, tuple(meta["hu_window"]))
    model.network.to(device)
    patch = tuple(meta["patch_size"])
    seconds = {}
    for precision in precisions:
        predict_logits(model.network, volume[:96, :96, :48], patch, device, precision=precision,
                       one_pass=one_pass)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        predict_logits(model.network, volume, patch, device, precision=precision, one_pass=one_pass)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds[precision] = time.perf_counter() - start
    return seconds, volume.shape


def read_labels(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj, dtype=np.uint8)


def organ_dice(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    return {ORGANS[k]: round(float(v), 4) for k, v in dice_per_label(a, b, ORGANS).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--instance-model", default="", help="a trained instance-normalised segmentation model")
    parser.add_argument("--batch-model", default="", help="a trained batch-normalised segmentation model")
    parser.add_argument("--work-dir", default="")
    args = parser.parse_args()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="pgl_seg_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    image, truth_path = work / "ct_512x512x200.nii.gz", work / "truth.nii.gz"
    if not image.is_file() or not truth_path.is_file():
        make_input(image, truth_path)
    trained = bool(args.instance_model and args.batch_model)
    models = {"instance": Path(args.instance_model) if trained else make_model(work / "model_instance", "instance"),
              "batch": Path(args.batch_model) if trained else make_model(work / "model_batch", "batch")}
    device = resolve_device(args.device)
    paths = {OLD: (models["instance"], ("--precision", "fp32")),
             "instance, sliding window, auto precision": (models["instance"], ()),
             "batch, sliding window, auto precision": (models["batch"], ()),
             NEW: (models["batch"], ("--one-pass",)),
             "batch, one pass, fp32": (models["batch"], ("--one-pass", "--precision", "fp32"))}
    runs = {}
    for i, (name, (model, extra)) in enumerate(paths.items()):
        output = work / f"path{i}.nii.gz"
        runs[name] = {**run_segment(model, image, output, device.type, *extra), "output": str(output),
                      "estimate_s": estimate_seconds(read_metadata(model), SHAPE, SPACING)}
    one_pass, grid = network_only(models["batch"], image, device, ("fp32", "auto"), one_pass=True)
    network = {"sliding window, fp32": network_only(models["instance"], image, device, ("fp32",))[0]["fp32"],
               "one pass, fp32": one_pass["fp32"],
               f"one pass, {str(inference_dtype(device, 'auto')).replace('torch.', '')}": one_pass["auto"]}
    dice = {}
    if trained:
        truth = read_labels(truth_path)
        outputs = {name: read_labels(Path(run["output"])) for name, run in runs.items()}
        dice = {f"{name} vs truth": organ_dice(labels, truth) for name, labels in outputs.items()}
        for name in paths:
            if name != OLD:
                dice[f"{name} vs {OLD}"] = organ_dice(outputs[name], outputs[OLD])
    limit = min(network.values())
    result = {"device": str(device), "cpu": platform.processor() or platform.machine(),
              "threads": torch.get_num_threads(), "input_shape": list(SHAPE), "input_spacing": list(SPACING),
              "model_grid": list(grid), "trained_models": trained, "runs": runs, "network_only_s": network,
              "one_pass_limit_s": limit, "ratio_new_to_limit": runs[NEW]["wall_s"] / limit,
              "ratio_old_to_new": runs[OLD]["wall_s"] / runs[NEW]["wall_s"], "dice": dice}
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "segment_end_to_end.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    for name, run in runs.items():
        estimate = f", estimated {run['estimate_s']:.1f} s" if run["estimate_s"] else ""
        print(f"{name}: {run['wall_s']:.1f} s end to end{estimate}, peak RSS {run['peak_rss_mb']:.0f} MB; "
              + ", ".join(f"{k} {v:.2f}" for k, v in run["phases_s"].items()))
    print("network alone: " + ", ".join(f"{k} {v:.2f} s" for k, v in network.items()))
    print(f"new path / one-pass limit: {result['ratio_new_to_limit']:.2f} (goal <= 2 on the CPU, 3 on a GPU); "
          f"old / new: {result['ratio_old_to_new']:.2f}")
    for name, scores in dice.items():
        print(f"Dice {name}: {scores}")


if __name__ == "__main__":
    main()
