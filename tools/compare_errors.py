"""Where a comparison's Dice goes: the resolution ceiling, and which labels each init confuses.

Usage: python tools/compare_errors.py COMPARE_OUT [--labeled 2]

1. Ceiling: each test label map is taken to the model grid the way `pgl segment` treats logits (one channel
   per label, linear resampling) and back; its Dice against the original is what a perfect model at the
   comparison's spacing would score.
2. Confusion, per init (summed over seeds and test scans): of each label's voxels, the share predicted as
   background or as each label.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from pgl_engine.inference.evaluation import dice_per_label
from pgl_engine.comparison.experiment import CompareConfig
from pgl_engine.data.imaging import ras_grid_covering, read_image, resample
from pgl_engine.phantoms.tuning import LABELS
from pgl_engine.inference.segmentation import geometry_reference, labels_on_grid


def read_zyx(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(read_image(path)).astype(np.uint8)


def round_trip(label_path: Path, spacing: tuple[float, float, float], values: list[int]) -> np.ndarray:
    """The label map after one-hot channels go to the `spacing` grid (linear) and back (arg-max), (z, y, x)."""
    image = read_image(label_path)
    affine, size = ras_grid_covering(image, spacing)
    channels = [resample(sitk.Cast(image == v, sitk.sitkFloat32), affine, size, fill=float(v == 0))
                for v in [0, *values]]
    best = labels_on_grid(torch.from_numpy(np.stack(channels)), affine, geometry_reference(image))
    return np.array([0, *values], dtype=np.uint8)[best]


def ceiling(label_dir: Path, spacing: tuple[float, float, float], names: dict[int, str]) -> dict[str, float]:
    """Mean Dice per label of the round trip over every label map in the folder."""
    per_label: dict[int, list[float]] = {v: [] for v in names}
    for path in sorted(label_dir.glob("*.nii*")):
        truth = read_zyx(path)
        for value, dice in dice_per_label(round_trip(path, spacing, list(names)), truth, names).items():
            per_label[value].append(dice)
    return {names[v]: float(np.nanmean(d)) for v, d in per_label.items()}


def confusion(pred_dirs: list[Path], label_dir: Path, classes: int) -> np.ndarray:
    """Voxel counts [truth, prediction] over every prediction in the folders (paired by file name)."""
    counts = np.zeros((classes, classes), dtype=np.int64)
    truths: dict[str, np.ndarray] = {}  # each reference read once, whatever the number of folders
    for folder in pred_dirs:
        for path in sorted(folder.glob("*.nii*")):
            pred = read_zyx(path)
            if path.name not in truths:
                truths[path.name] = read_zyx(label_dir / path.name)
            truth = truths[path.name]
            counts += np.bincount(truth.ravel().astype(np.int64) * classes + pred.ravel(),
                                  minlength=classes * classes).reshape(classes, classes)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="a `pgl compare` output folder")
    parser.add_argument("--labeled", type=int, default=2, help="labelled-scan setting to analyse")
    args = parser.parse_args()
    results = args.out / "results.json"
    spacing = json.loads(results.read_text())["config"]["spacing"] if results.is_file() else CompareConfig().spacing
    spacing = tuple(float(s) for s in spacing)
    labels = args.out / "data" / "test" / "labels"
    print(f"ceiling at {spacing} mm (Dice %):",
          {name: round(100 * d, 1) for name, d in ceiling(labels, spacing, LABELS).items()})
    header = " ".join(f"{n[:10]:>10s}" for n in ["background", *LABELS.values()])
    for init_dir in sorted({p.name for p in (args.out / "runs" / f"n{args.labeled}").glob("seed*/*")}):
        folders = sorted((args.out / "runs" / f"n{args.labeled}").glob(f"seed*/{init_dir}/pred"))
        counts = confusion(folders, labels, len(LABELS) + 1)
        print(f"\n{init_dir} ({len(folders)} seeds): % of each label's voxels predicted as\n{'':13s}{header}")
        for value, name in LABELS.items():
            row = counts[value] / max(counts[value].sum(), 1)
            print(f"{name[:12]:13s}" + " ".join(f"{100 * v:10.1f}" for v in row))


if __name__ == "__main__":
    main()
