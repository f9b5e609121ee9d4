"""`pgl check-pretraining`: did the pretrained model help on *these* labelled scans?

Leave-one-case-out over the labelled pairs: for each held-out case and seed, fine-tune from random init and from
the pretrained model on the other cases (same seed, steps and settings; the network is the pretrained model's),
segment the held-out case with both, and compare their Dice. The answer is the mean paired difference
(pretrained - random) with its 95% t-interval over all (case, seed) runs.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..atomic import write_text_atomically
from ..comparison.stats import paired_difference
from ..config import NetworkConfig, option
from ..contract import CHECK_PRETRAINING_STEPS
from ..data.imaging import read_image, scan_name
from ..data.labels import labelled_values, pair_folders
from ..errors import PGLError
from ..finetuning.trainer import finetune
from ..inference.evaluation import dice_per_label
from ..inference.segmentation import segment
from ..models.store import read_metadata
from ..progress import ProgressCallback, emit


@dataclass
class CheckConfig:
    """Settings of `pgl check-pretraining` (CLI options of the same names)."""

    images: str = option("", "folder of labelled scans (at least 2)", required=True)
    labels: str = option("", "folder of their label maps (same names)", required=True)
    init: str = option("", "the pretrained model to check", required=True)
    out: str = option("", "work folder for the fold models and the report (check.json)", required=True)
    label_names: tuple[str, ...] = option((), "names of labels 1, 2, ... (default: label 1, label 2, ...)")
    steps: int = option(CHECK_PRETRAINING_STEPS, "fine-tuning steps per run")
    seeds: int = option(2, "paired seeds per held-out case")
    patch_size: tuple[int, int, int] = option((64, 64, 32), "patch size in voxels (1 or 3 values)")
    batch_size: int = option(2, "patches per step")
    device: str = option("auto", "auto, cpu, cuda or mps")
    workers: int = option(0, "data loader workers per run")
    cache_dir: str = option("", "preprocessed-scan cache (default: ~/.cache/pgl_engine)")


def check_pretraining(config: CheckConfig, progress: ProgressCallback | None = None) -> dict:
    """Run the paired leave-one-case-out comparison; returns (and writes to OUT/check.json) the summary."""
    pairs, _ = pair_folders(config.images, config.labels)
    if len(pairs) < 2:
        raise PGLError(f"{config.images}: checking the pretraining needs at least 2 labelled scans (found "
                       f"{len(pairs)}): one is held out while the others train.")
    series = [str(p.image) for p in pairs if not isinstance(p.image, Path)]
    if series:
        raise PGLError(f"{series[0]}: checking the pretraining reads scan files; write the DICOM series as NIfTI "
                       f"or NRRD first (e.g. from Slicer).")
    if config.seeds < 1 or config.steps < 1:
        raise PGLError("--seeds and --steps must be >= 1.")
    metadata = read_metadata(config.init)
    if metadata.get("kind") != "pretrained":
        raise PGLError(f"{config.init}: is a {metadata.get('kind')} model; choose the pretrained model to check.")
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    values = sorted({int(v) for p in pairs for v in np.unique(_labels(p.label)) if v})
    names = {v: (config.label_names[i] if i < len(config.label_names) else f"label {v}")
             for i, v in enumerate(values)}
    common = dict(steps=config.steps, patch_size=config.patch_size, batch_size=config.batch_size,
                  device=config.device, workers=config.workers, cache_dir=config.cache_dir,
                  checkpoint_every=10 ** 9, overwrite=True)
    runs, total = [], len(pairs) * config.seeds
    for k, held_out in enumerate(pairs):
        dataset = _fold_dataset(out / f"fold_{k}" / "dataset.json", [p for p in pairs if p is not held_out], names)
        truth = _labels(held_out.label)
        listed = labelled_values(held_out.label)  # partial labels: score what the held-out case labels
        scored = names if listed is None else {v: n for v, n in names.items() if v in listed or (truth == v).any()}
        for seed in range(config.seeds):
            dice = {}
            for init in ("random", "pretrained"):
                options = dict(init=config.init) if init == "pretrained" else \
                    dict(network=NetworkConfig.from_dict(metadata["network"]), spacing=tuple(metadata["spacing"]),
                         hu_window=tuple(metadata["hu_window"]))
                model = finetune(dataset=str(dataset), out=str(out / f"fold_{k}" / f"{init}_seed{seed}"), seed=seed,
                                 **common, **options)
                predicted = segment(model, held_out.image, out / f"fold_{k}" / f"{init}_seed{seed}.nii.gz",
                                    device=config.device)[0]
                dice[init] = float(np.nanmean(list(dice_per_label(_labels(predicted), truth, scored).values())))
            runs.append({"held_out": scan_name(held_out.image), "seed": seed, **dice})
            emit(progress, "progress", stage="check", step=len(runs), total=total,
                 message=f"{scan_name(held_out.image)}, seed {seed}: random {dice['random']:.3f}, "
                         f"pretrained {dice['pretrained']:.3f}")
    summary = {"init": str(Path(config.init).resolve()), "cases": len(pairs), "seeds": config.seeds,
               "steps": config.steps, "runs": runs,
               "difference": asdict(paired_difference([r["pretrained"] for r in runs], [r["random"] for r in runs])),
               "random_mean": float(np.mean([r["random"] for r in runs])),
               "pretrained_mean": float(np.mean([r["pretrained"] for r in runs]))}
    summary["text"] = describe_check(summary)
    write_text_atomically(out / "check.json", json.dumps(summary, indent=2))
    emit(progress, "done", **summary)
    return summary


def _labels(path) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(read_image(path)).astype(np.uint8)


def _fold_dataset(path: Path, pairs: list, names: dict[int, str]) -> Path:
    """A dataset.json naming the fold's training pairs by absolute path (nothing is copied)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"labels": {"0": "background", **{str(k): v for k, v in names.items()}},
                                "training": [{"image": str(Path(p.image).resolve()),
                                              "label": str(Path(p.label).resolve())} for p in pairs]}))
    return path


def describe_check(summary: dict) -> str:
    d = summary["difference"]
    interval = "no interval with one run" if d["n"] < 2 or d["ci95"][0] != d["ci95"][0] else \
        f"95% interval {d['ci95'][0]:+.3f} to {d['ci95'][1]:+.3f}"
    verdict = "helped" if d["n"] >= 2 and d["ci95"][0] > 0 else "hurt" if d["n"] >= 2 and d["ci95"][1] < 0 else \
        "made no clear difference"
    return (f"Pretrained minus random init: {d['mean']:+.3f} Dice ({interval}) over {d['n']} paired run(s) "
            f"({summary['cases']} held-out cases x {summary['seeds']} seeds, {summary['steps']} steps each): "
            f"the pretraining {verdict} on these scans (random {summary['random_mean']:.3f}, pretrained "
            f"{summary['pretrained_mean']:.3f}).")
