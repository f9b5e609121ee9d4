"""`pgl compare`: random vs BYOL vs PGL initialisation on a phantom cohort, paired over seeds.

Layout under --out: data/{unlabeled,labeled,test}, models/<init>/ (pretrained), runs/n<N>/seed<S>/<init>/
(fine-tuned model, predictions, result.json), report.md, results.json and PNG plots. Every finished piece is
reused when the command runs again, so an interrupted comparison continues where it stopped. The pieces:
compare_config (settings, variants), compare_data (cohorts), compare_runs (jobs and their scheduling),
compare_stats (typed results and statistics), report (report.md and plots).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..atomic import write_text_atomically
from ..config import WIDE_NETWORK
from ..models.store import load_model
from ..progress import ProgressCallback, emit
from .config import COMPARISON_HU_WINDOW, CompareConfig
from .data import Cohorts, make_data
from .runs import ProcessScheduler, run_in_turn
from .stats import Ranks, summarise

__all__ = ["CompareConfig", "compare"]


def feature_rank(backbone: torch.nn.Module, volumes: list[np.ndarray], patch: tuple[int, int, int]) -> float:
    """Effective rank of the backbone's voxel features on centre patches of the given volumes."""
    from ..pretraining.losses import effective_rank, grid_to_samples
    from ..pretraining.views import pad_to

    backbone.eval()
    feats = []
    with torch.inference_mode():
        for v in volumes:
            v = pad_to(np.asarray(v, np.float32), patch)
            lo = [(s - p) // 2 for s, p in zip(v.shape, patch)]
            crop = v[lo[0]:lo[0] + patch[0], lo[1]:lo[1] + patch[1], lo[2]:lo[2] + patch[2]]
            f = backbone(torch.from_numpy(np.ascontiguousarray(crop))[None, None])
            feats.append(grid_to_samples(f[:, :, ::2, ::2, ::2]))
    return effective_rank(torch.cat(feats))


def backbone_ranks(config: CompareConfig, data: Cohorts, models: dict[str, str]) -> dict[str, Ranks]:
    """Each init's feature rank on the test scans (random init: a fresh backbone) and at the end of pretraining."""
    from ..data.cache import ScanCache
    from ..data.imaging import list_scans
    from ..models.networks import build_backbone

    cache = ScanCache(Path(config.out) / "cache", config.spacing, COMPARISON_HU_WINDOW)
    volumes = [cache.get(p).load() for p in list_scans(data.test / "images")]
    ranks = {}
    for init, model in models.items():
        torch.manual_seed(0)
        loaded = None if model == "none" else load_model(model)
        backbone = build_backbone(WIDE_NETWORK) if loaded is None else loaded.backbone
        ranks[init] = Ranks(feature_rank(backbone, volumes, config.patch_size),
                            None if loaded is None else loaded.metadata.get("effective_rank"))
    return ranks


def compare(config: CompareConfig | None = None, progress: ProgressCallback | None = None, **options) -> Path:
    """Run the comparison; returns the path of report.md."""
    from .report import write_report

    config = config or CompareConfig(**options)
    config.validate()
    started = time.perf_counter()
    Path(config.out).mkdir(parents=True, exist_ok=True)
    data = make_data(config, progress)
    if config.jobs > 1:
        models, finished = ProcessScheduler(config, data, progress).run()
    else:
        models, finished = run_in_turn(config, data, progress)
    results = [finished[(n, seed, init)].scored() for n in config.labeled for seed in range(config.seeds)
               for init in config.inits]
    summary = summarise(config.labeled, config.inits, results, backbone_ranks(config, data, models),
                        time.perf_counter() - started)
    write_text_atomically(Path(config.out) / "results.json", json.dumps(
        {"config": asdict(config), **summary.to_json(), "runs": [r.to_json() for r in results]}, indent=2))
    report = write_report(Path(config.out), config, summary, results)
    emit(progress, "done", report=str(report), seconds=time.perf_counter() - started,
         organ_mean_dice={f"n{n}": {i: s.table[i]["organ mean"].mean for i in config.inits}
                          for n, s in summary.by_labelled.items()})
    return report

