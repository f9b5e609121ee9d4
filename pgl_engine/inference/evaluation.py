"""`pgl evaluate`: Dice and 95% Hausdorff distance (mm) per label, per case and on average."""
from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from ..atomic import atomic_write
from ..data.imaging import SCAN_SUFFIXES, image_affine_ras, is_scan_file, read_image, strip_scan_suffix
from ..data.labels import LabelledPair, names_from_sidecar
from ..errors import PGLError
from ..progress import ProgressCallback, emit


def dice_per_label(pred: np.ndarray, truth: np.ndarray, names: dict[int, str]) -> dict[int, float]:
    """Dice per label; NaN where the label is absent from both."""
    out = {}
    for value in names:
        p, t = pred == value, truth == value
        total = int(p.sum()) + int(t.sum())
        out[value] = float("nan") if total == 0 else 2.0 * int((p & t).sum()) / total
    return out


def hd95_mm(pred: np.ndarray, truth: np.ndarray, value: int, spacing: tuple[float, ...]) -> float:
    """95th-percentile symmetric surface distance in mm; NaN when either side lacks the label."""
    p, t = pred == value, truth == value
    if not p.any() or not t.any():
        return float("nan")
    # crop to the union's bounding box (plus a margin) so the distance transforms stay small
    idx = np.argwhere(p | t)
    lo, hi = np.maximum(idx.min(0) - 2, 0), idx.max(0) + 3
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    from monai.metrics import compute_hausdorff_distance  # MONAI is imported by the commands that use it

    p_t = torch.from_numpy(p[box])[None, None]
    t_t = torch.from_numpy(t[box])[None, None]
    with warnings.catch_warnings():  # MONAI deprecation notice from inside its own metric code
        warnings.simplefilter("ignore", FutureWarning)
        return float(compute_hausdorff_distance(p_t, t_t, include_background=True, percentile=95,
                                                spacing=list(spacing))[0, 0])


def _read_labels(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    image = read_image(path)
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0), image_affine_ras(image), image.GetSpacing()


CSV_FIELDS = ["case", "label", "name", "dice", "hd95_mm"]


def pair_label_maps(pred: str | Path, labels: str | Path) -> list[LabelledPair]:
    """Predicted and reference label maps with the same file name (suffix aside), each folder's own files."""
    pred, labels = Path(pred), Path(labels)
    found = {}
    for folder, option, what in ((pred, "--pred", "predicted label maps (the --output folder of pgl segment)"),
                                 (labels, "--labels", "reference label maps")):
        if not folder.is_dir():
            raise PGLError(f"{folder}: no such folder of {what}; check {option}.")
        found[option] = {strip_scan_suffix(p.name): p for p in sorted(folder.iterdir()) if is_scan_file(p)}
        if not found[option]:
            raise PGLError(f"{folder}: holds no label maps ({', '.join(SCAN_SUFFIXES)}); give {option} the folder "
                           f"of {what}.")
    predicted, references = found["--pred"], found["--labels"]
    pairs = [LabelledPair(predicted[k], references[k]) for k in sorted(predicted) if k in references]
    if not pairs:
        raise PGLError(f"{pred} and {labels}: no predicted label map has a reference with the same file name "
                       f"(e.g. {next(iter(predicted.values())).name} and {next(iter(references.values())).name}); "
                       f"name each reference like its scan, as pgl segment names its outputs.")
    return pairs


def check_csv_target(csv_path: str | Path, inputs: list, overwrite: bool) -> Path:
    """Where the CSV may go: a file in an existing folder, never an input, and an existing file only if it is a
    previous CSV of `pgl evaluate` (or with overwrite)."""
    path = Path(csv_path)
    if path.is_dir():
        raise PGLError(f"{path}: is a folder; give --csv a file name, e.g. {path / 'metrics.csv'}.")
    if not path.parent.is_dir():
        raise PGLError(f"{path.parent}: no such folder for --csv {path}; create it first or choose another path.")
    if any(path.resolve() == Path(p).resolve() for p in inputs):
        raise PGLError(f"{path}: is one of the label maps being evaluated; choose another --csv.")
    if path.exists() and not overwrite and not _written_by_us(path):
        raise PGLError(f"{path}: exists and is not a CSV written by pgl evaluate; choose another --csv, or add "
                       f"--overwrite to replace it.")
    return path


def _written_by_us(path: Path) -> bool:
    try:
        with open(path, newline="") as f:
            return f.readline().strip() == ",".join(CSV_FIELDS)
    except (OSError, UnicodeDecodeError):
        return False


def evaluate(pred: str | Path, labels: str | Path, csv_path: str | Path | None = None,
             names: dict[int, str] | None = None, progress: ProgressCallback | None = None,
             overwrite: bool = False) -> dict:
    """Compare predicted label maps with reference ones (paired by file name).

    Returns {"cases": [{"case", "label", "name", "dice", "hd95_mm"}, ...], "mean": {name: {"dice", "hd95_mm"}}}.
    The CSV replaces only a previous CSV of ours unless overwrite=True, and never an input.
    """
    pairs = pair_label_maps(pred, labels)
    if csv_path:
        csv_path = check_csv_target(csv_path, [x for p in pairs for x in (p.image, p.label)], overwrite)
    names = names or names_from_sidecar(pairs[0].image)
    rows = []
    for i, pair in enumerate(pairs):
        p, p_affine, spacing = _read_labels(pair.image)
        t, t_affine, _ = _read_labels(pair.label)
        if p.shape != t.shape or not np.allclose(p_affine, t_affine, atol=1e-3 * min(spacing)):
            raise PGLError(f"{pair.image}: has another grid than the reference {pair.label}; segment the same scan.")
        values = names or {int(v): f"label {int(v)}" for v in np.union1d(np.unique(p), np.unique(t)) if v != 0}
        dice = dice_per_label(p, t, values)
        for value, name in values.items():
            rows.append({"case": pair.image.name, "label": value, "name": name, "dice": dice[value],
                         "hd95_mm": hd95_mm(p, t, value, spacing)})
        emit(progress, "progress", stage="evaluate", step=i + 1, total=len(pairs), file=pair.image.name)
    mean = {}
    for name in dict.fromkeys(r["name"] for r in rows):
        sel = [r for r in rows if r["name"] == name]
        mean[name] = {k: _nanmean([r[k] for r in sel]) for k in ("dice", "hd95_mm")}
    mean["mean"] = {k: _nanmean([m[k] for m in mean.values()]) for k in ("dice", "hd95_mm")}
    if csv_path:
        atomic_write(csv_path, lambda tmp: _write_csv(tmp, rows))
    return {"cases": rows, "mean": mean}


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def format_table(result: dict) -> str:
    """Plain-text table of the per-label means."""
    lines = [f"{'label':<16}{'Dice':>8}{'HD95 mm':>10}"]
    for name, m in result["mean"].items():
        lines.append(f"{name:<16}{m['dice']:>8.3f}{m['hd95_mm']:>10.1f}")
    return "\n".join(lines)
