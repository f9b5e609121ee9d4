"""`pgl compare` and `pgl demo`: random vs BYOL vs PGL initialisation on a phantom cohort, paired over seeds.

Layout under --out: data/{unlabeled,labeled,test}, models/<init>/ (pretrained), runs/n<N>/seed<S>/<init>/
(fine-tuned model, predictions, result.json), report.md, results.json and PNG plots. Every finished piece is
reused when the command runs again, so an interrupted comparison continues where it stopped.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from .config import PRESETS, FinetuneConfig, NetworkConfig, PretrainConfig, option
from .errors import PGLError
from .evaluate import evaluate
from .finetune import finetune
from .model_store import is_model_dir, load_model
from .phantom import LABELS, ORGANS, phantom_name, phase_of, read_phases, write_cohort
from .pretrain import pretrain
from .progress import ProgressCallback, emit

# pretraining variants: method plus options that differ from the defaults. The defaults do not flip the views
# (flips cost the spleen on the phantoms); the flip-prior variants flip on every axis as in the paper, and the
# -paper variants are the paper's setting (--preset paper; BYOL with the same flips and no regulariser).
FLIPS = {"flip_axes": (0, 1, 2)}
INIT_VARIANTS = {
    "random": None,
    "byol": {"method": "byol"},
    "pgl": {"method": "pgl"},
    "pgl-flip": {"method": "pgl", **FLIPS},
    "pgl-noflip": {"method": "pgl", **FLIPS, "flip_prior": False},
    "pgl-nocrop": {"method": "pgl", "crop_prior": False},
    "pgl-noprior": {"method": "pgl", **FLIPS, "flip_prior": False, "crop_prior": False},
    "pgl-nodeep": {"method": "pgl", "deep_weight": 0.0},
    "pgl-noreg": {"method": "pgl", "anti_collapse_weight": 0.0, "deep_weight": 0.0},
    "pgl-paper": dict(PRESETS["paper"]),
    "byol-plain": {"method": "byol", "anti_collapse_weight": 0.0},
    "byol-paper": {"method": "byol", "anti_collapse_weight": 0.0, **FLIPS},
}
RENAMED = {"pgl-plain": "pgl-noreg (no regulariser, no deep level, no flips) or pgl-paper (the paper's setting)"}

# options compare sets per run, which --pretrain-option / --finetune-option cannot change
FIXED_BY_COMPARE = {"images", "out", "dataset", "init", "seed", "max_labeled", "overwrite", "labels", "resume"}


@dataclass
class CompareConfig:
    """Settings of `pgl compare` (CLI options of the same names)."""

    out: str = option("compare_output", "output folder (reused pieces let an interrupted comparison continue)")
    unlabeled: int = option(24, "unlabeled phantoms for pretraining")
    labeled: tuple[int, ...] = option((1, 2), "numbers of labelled scans to fine-tune from")
    test: int = option(6, "held-out test phantoms")
    seeds: int = option(5, "paired fine-tuning seeds per setting")
    inits: tuple[str, ...] = option(("random", "byol", "pgl"), "initialisations: " + ", ".join(INIT_VARIANTS))
    pretrain_steps: int = option(1800, "pretraining steps per method")
    finetune_steps: int = option(2000, "fine-tuning steps per run (random init still gains beyond 2000 steps)")
    batch_size: int = option(2, "batch size (pairs for pretraining, patches for fine-tuning)")
    patch_size: tuple[int, int, int] = option((48, 48, 32), "patch size in voxels")
    spacing: tuple[float, float, float] = option((3.2, 3.2, 6.0), "resampling spacing in mm")
    phantom_spacing_scale: float = option(2.0, "phantom scanner spacing multiplier (smaller files)")
    finetune_lr: float = option(1e-3, "fine-tuning learning rate")
    device: str = option("auto", "auto, cpu, cuda or mps")
    workers: int = option(2, "data loader workers")
    jobs: int = option(1, "pretraining / fine-tuning runs at a time, each in its own process (for GPUs, many cores)")
    data_seed: int = option(1000, "seed of the phantom cohorts")
    phases: tuple[str, ...] = option(("venous",), "contrast phases the unlabeled and test phantoms are drawn from "
                                     "(venous, arterial, native); the labelled ones stay venous")
    pretrain_options: dict = field(default_factory=dict)
    finetune_options: dict = field(default_factory=dict)

    def validate(self) -> None:
        if not self.inits or not self.labeled:
            raise PGLError("--inits and --labeled each need at least one value.")
        renamed = [f"{i} is now {RENAMED[i]}" for i in self.inits if i in RENAMED]
        if renamed:
            raise PGLError(f"--inits: {'; '.join(renamed)}.")
        unknown = [i for i in self.inits if i not in INIT_VARIANTS]
        if unknown:
            raise PGLError(f"--inits: unknown {unknown}; choose from {', '.join(INIT_VARIANTS)}.")
        for flag, options, cls in (("--pretrain-option", self.pretrain_options, PretrainConfig),
                                   ("--finetune-option", self.finetune_options, FinetuneConfig)):
            allowed = {f.name for f in fields(cls)} - FIXED_BY_COMPARE
            unknown = sorted(set(options) - allowed)
            if unknown:
                raise PGLError(f"{flag}: {unknown} unknown or set by compare itself; options of "
                               f"`pgl {cls.__name__[:-6].lower()} --help` other than {sorted(FIXED_BY_COMPARE)} work.")
        if min(self.labeled) < 1 or min(self.seeds, self.test, self.unlabeled, self.jobs) < 1:
            raise PGLError("--labeled, --seeds, --test, --unlabeled and --jobs must be >= 1.")
        phase_of(0, tuple(self.phases))  # names the unknown phases


def make_data(config: CompareConfig, progress: ProgressCallback | None) -> dict[str, Path]:
    """Three disjoint phantom cohorts (different seeds): unlabeled, labeled and test."""
    data = Path(config.out) / "data"
    mixed = tuple(config.phases)
    sets = {"unlabeled": (config.unlabeled, config.data_seed, False, mixed),
            "labeled": (max(config.labeled), config.data_seed + 500, True, ("venous",)),
            "test": (config.test, config.data_seed + 800, True, mixed)}
    paths = {}
    for name, (count, seed, labels, phases) in sets.items():
        folder = data / name
        done = folder / "images"
        if not (done.is_dir() and len(list(done.iterdir())) >= count and (not labels or (folder / "dataset.json").is_file())):
            emit(progress, "info", message=f"writing {count} {name} phantoms")
            write_cohort(folder, count, labels=labels, seed=seed, spacing_scale=config.phantom_spacing_scale,
                         phases=phases)
        check_phases(folder, seed, count, phases)
        paths[name] = folder
    return paths


def check_phases(folder: Path, seed: int, count: int, phases: tuple[str, ...]) -> None:
    """Refuse to reuse a cohort written with other contrast phases than this comparison asks for."""
    written = read_phases(folder)
    for i in range(count):
        name = phantom_name(seed + i)
        if written.get(name) != phase_of(seed + i, phases):
            raise PGLError(f"{folder} holds phantoms of other contrast phases than --phases {' '.join(phases)} "
                           f"asks for ({name}: {written.get(name)}); give another --out or remove {folder}.")


def common_options(config: CompareConfig) -> dict:
    return {"patch_size": config.patch_size, "spacing": config.spacing, "batch_size": config.batch_size,
            "device": config.device, "workers": config.workers, "cache_dir": str(Path(config.out) / "cache")}


def model_path(config: CompareConfig, init: str) -> str:
    """Where an init variant's pretrained model goes ("none" for random init)."""
    return "none" if INIT_VARIANTS[init] is None else str(Path(config.out) / "models" / init)


def model_ready(config: CompareConfig, init: str) -> bool:
    path = model_path(config, init)
    return path == "none" or is_model_dir(Path(path))


def pretrain_one(config: CompareConfig, data: dict[str, Path], init: str, progress) -> str:
    """The pretrained model of one init variant ("none" for random); reused when already there."""
    variant, out = INIT_VARIANTS[init], model_path(config, init)
    if not model_ready(config, init):
        emit(progress, "info", message=f"pretraining {init} ({config.pretrain_steps} steps)")
        options = {**common_options(config), "steps": config.pretrain_steps, **config.pretrain_options, **variant}
        pretrain(images=str(data["unlabeled"] / "images"), out=str(out), overwrite=True,
                 progress=stage_forwarder(progress, f"pretrain {init}"), **options)
    return out


def stage_forwarder(progress: ProgressCallback | None, stage: str):
    """Pass inner progress events on under a descriptive stage name (done events become info)."""
    def forward(event: dict) -> None:
        if progress is None:
            return
        if event.get("event") == "progress":
            progress({**event, "stage": f"{stage}: {event.get('stage')}"})
        elif event.get("event") == "warning":
            progress(event)
    return forward


def run_folder(config: CompareConfig, init: str, labeled: int, seed: int) -> Path:
    return Path(config.out) / "runs" / f"n{labeled}" / f"seed{seed}" / init


def run_one(config: CompareConfig, data: dict[str, Path], init: str, model: str, labeled: int, seed: int,
            progress) -> dict:
    """Fine-tune one (init, labelled count, seed), segment the test set and evaluate; cached in result.json."""
    from .segment import segment

    run = run_folder(config, init, labeled, seed)
    result_file = run / "result.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    started = time.perf_counter()
    options = {**common_options(config), "steps": config.finetune_steps, "lr": config.finetune_lr,
               **config.finetune_options}
    finetune(dataset=str(data["labeled"] / "dataset.json"), out=str(run / "model"), init=model, seed=seed,
             max_labeled=labeled, overwrite=True,
             progress=stage_forwarder(progress, f"finetune {init} n={labeled} seed={seed}"), **options)
    segment(run / "model", data["test"] / "images", run / "pred", device=config.device)
    evaluation = evaluate(run / "pred", data["test"] / "labels", run / "evaluation.csv", names=LABELS)
    curve = [json.loads(line)["loss"] for line in (run / "model" / "train_log.jsonl").read_text().splitlines()]
    result = {"init": init, "labeled": labeled, "seed": seed, "dice": {k: v["dice"] for k, v in evaluation["mean"].items()},
              "hd95_mm": {k: v["hd95_mm"] for k, v in evaluation["mean"].items()}, "loss_curve": curve,
              "organ_mean_by_phase": organ_mean_by_phase(evaluation["cases"], read_phases(data["test"])),
              "seconds": time.perf_counter() - started}
    result_file.write_text(json.dumps(result))
    return result


def report_run(progress, result: dict) -> None:
    emit(progress, "info", message=f"n={result['labeled']} seed={result['seed']} {result['init']}: "
                                   f"mean Dice {result['dice']['mean']:.3f}")


def run_in_turn(config: CompareConfig, data: dict[str, Path], progress) -> tuple[dict, dict]:
    """Pretrain every variant, then fine-tune every (labelled count, seed, init), one after another."""
    models = {init: pretrain_one(config, data, init, progress) for init in config.inits}
    finished = {}
    for n in config.labeled:
        for seed in range(config.seeds):
            for init in config.inits:
                finished[(n, seed, init)] = run_one(config, data, init, models[init], n, seed, progress)
                report_run(progress, finished[(n, seed, init)])
    return models, finished


def _limit_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def run_in_processes(config: CompareConfig, data: dict[str, Path], progress) -> tuple[dict, dict]:
    """The same pieces, `config.jobs` at a time in separate processes. Pretraining starts first; fine-tuning runs
    start as soon as their init is ready (random at once), lowest seed first, so that an interrupted comparison
    has whole seeds done and the CPU cores or the GPU stay busy."""
    threads = max(1, (os.cpu_count() or 1) // config.jobs)
    order = {init: i for i, init in enumerate(config.inits)}
    models, finished, running, ready = {}, {}, {}, []
    total = len(config.labeled) * config.seeds * len(config.inits)
    pool = ProcessPoolExecutor(config.jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_limit_threads, initargs=(threads,))

    def make_ready(init: str) -> None:
        ready.extend((seed, n, order[init], init) for seed in range(config.seeds) for n in config.labeled)
        ready.sort()

    def record(result: dict) -> None:
        finished[(result["labeled"], result["seed"], result["init"])] = result
        report_run(progress, result)
        emit(progress, "progress", stage="compare: fine-tuning runs", step=len(finished), total=total)

    try:
        for init in config.inits:
            if model_ready(config, init):  # random init, or pretrained by an earlier call
                models[init] = model_path(config, init)
                make_ready(init)
            else:
                emit(progress, "info", message=f"pretraining {init} ({config.pretrain_steps} steps)")
                running[pool.submit(pretrain_one, config, data, init, None)] = ("pretrain", init)
        while running or ready:
            while ready and len(running) < config.jobs:
                seed, n, _, init = ready.pop(0)
                if (run_folder(config, init, n, seed) / "result.json").is_file():  # finished earlier: no process
                    record(run_one(config, data, init, models[init], n, seed, None))
                    continue
                running[pool.submit(run_one, config, data, init, models[init], n, seed, None)] = ("run", init)
            if not running:
                continue
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                kind, init = running.pop(future)
                if kind == "pretrain":
                    models[init] = future.result()
                    emit(progress, "info", message=f"pretrained {init}")
                    make_ready(init)
                    continue
                record(future.result())
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return models, finished


def feature_rank(backbone: torch.nn.Module, volumes: list[np.ndarray], patch: tuple[int, int, int]) -> float:
    """Effective rank of the backbone's voxel features on centre patches of the given volumes."""
    from .losses import effective_rank, grid_to_samples
    from .views import pad_to

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


def paired_difference(a: list[float], b: list[float]) -> dict:
    """Mean of a - b over paired seeds with a 95% t-interval (NaN interval with one seed)."""
    from scipy import stats

    d = np.asarray(a) - np.asarray(b)
    if len(d) < 2:
        return {"mean": float(d.mean()), "ci95": [float("nan"), float("nan")], "n": len(d)}
    half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return {"mean": float(d.mean()), "ci95": [float(d.mean() - half), float(d.mean() + half)], "n": len(d)}


def compare(config: CompareConfig | None = None, progress: ProgressCallback | None = None, **options) -> Path:
    """Run the comparison; returns the path of report.md."""
    from .cache import ScanCache
    from .imaging import list_scans
    from .networks import build_backbone
    from .report import write_report

    config = config or CompareConfig(**options)
    config.validate()
    started = time.perf_counter()
    Path(config.out).mkdir(parents=True, exist_ok=True)
    data = make_data(config, progress)
    run_all = run_in_processes if config.jobs > 1 else run_in_turn
    models, finished = run_all(config, data, progress)
    results = [finished[(n, seed, init)] for n in config.labeled for seed in range(config.seeds)
               for init in config.inits]
    cache = ScanCache(Path(config.out) / "cache", config.spacing, (-1024.0, 325.0))
    volumes = [cache.get(p).load() for p in list_scans(data["test"] / "images")]
    ranks = {}
    for init, model in models.items():
        torch.manual_seed(0)
        loaded = None if model == "none" else load_model(model)
        backbone = build_backbone(NetworkConfig()) if loaded is None else loaded.backbone
        ranks[init] = {"test_features": feature_rank(backbone, volumes, config.patch_size),
                       "pretraining": None if loaded is None else loaded.metadata.get("effective_rank")}
    results = [with_organ_mean(r) for r in results]
    summary = summarise(config, results, ranks, time.perf_counter() - started)
    (Path(config.out) / "results.json").write_text(json.dumps({"config": asdict(config), **summary,
                                                               "runs": results}, indent=2))
    report = write_report(Path(config.out), config, summary, results)
    emit(progress, "done", report=str(report), seconds=time.perf_counter() - started,
         organ_mean_dice={f"n{n}": {i: summary["table"][str(n)][i]["organ mean"]["mean"] for i in config.inits}
                    for n in config.labeled})
    return report


HEADLINES = ("organ mean", "mean")  # mean over the organs (the paper's figure) and over every label


def organ_mean(dice: dict) -> float:
    """Mean Dice over the organs, leaving lesions out (NaN-aware)."""
    return float(np.nanmean([dice[o] for o in ORGANS if o in dice]))


def organ_mean_by_phase(cases: list[dict], phase_by_file: dict[str, str]) -> dict[str, float]:
    """Organ-mean Dice over the test scans of each contrast phase (`evaluate`'s per-case rows)."""
    by_phase = {}
    for phase in sorted(set(phase_by_file.values())):
        rows = [r for r in cases if phase_by_file.get(r["case"]) == phase]
        by_phase[phase] = organ_mean({o: np.nanmean([r["dice"] for r in rows if r["name"] == o] or [np.nan])
                                      for o in ORGANS})
    return by_phase


def with_organ_mean(result: dict) -> dict:
    """A copy of one run's result whose Dice also holds the organ mean."""
    return {**result, "dice": {**result["dice"], "organ mean": organ_mean(result["dice"])}}


def spread(values: list[float]) -> dict:
    """Mean and SD over seeds (NaN-aware; SD 0 for one seed)."""
    return {"mean": float(np.nanmean(values)), "sd": float(np.nanstd(values, ddof=1)) if len(values) > 1 else 0.0}


def compared_pairs(inits, baselines: list[str]) -> list[tuple[str, str]]:
    """(init, baseline) pairs of the paired differences: each init but random against random and BYOL."""
    return [(a, b) for a in inits if a != "random" for b in baselines if a != b]


def summarise(config: CompareConfig, results: list[dict], ranks: dict, seconds: float) -> dict:
    """Per labelled count: Dice per organ per init (mean, SD over seeds) and paired differences of the
    organ mean and the all-label mean; each result's Dice must hold the organ mean (`with_organ_mean`)."""
    organs = list(LABELS.values()) + list(HEADLINES)
    table, differences, by_phase = {}, {}, {}
    for n in config.labeled:
        runs = [r for r in results if r["labeled"] == n]
        by_init = {i: sorted((r for r in runs if r["init"] == i), key=lambda r: r["seed"]) for i in config.inits}
        table[str(n)] = {i: {o: spread([r["dice"][o] for r in rs]) for o in organs} for i, rs in by_init.items()}
        baselines = [b for b in ("random", "byol") if b in by_init]
        differences[str(n)] = {
            metric: {f"{a} - {b}": paired_difference([r["dice"][metric] for r in by_init[a]],
                                                     [r["dice"][metric] for r in by_init[b]])
                     for a, b in compared_pairs(config.inits, baselines)}
            for metric in HEADLINES}
        if all(len(r.get("organ_mean_by_phase", {})) > 1 for r in runs):
            by_phase[str(n)] = summarise_phases(by_init, baselines)
    return {"table": table, "differences": differences, "by_phase": by_phase, "ranks": ranks, "seconds": seconds}


def summarise_phases(by_init: dict[str, list[dict]], baselines: list[str]) -> dict:
    """Organ mean per contrast phase of the test scans: mean, SD over seeds and paired differences per init."""
    phases = list(next(iter(by_init.values()))[0]["organ_mean_by_phase"])
    values = {i: {p: [r["organ_mean_by_phase"][p] for r in rs] for p in phases} for i, rs in by_init.items()}
    table = {i: {p: spread(v) for p, v in by_phase.items()} for i, by_phase in values.items()}
    differences = {f"{a} - {b}": {p: paired_difference(values[a][p], values[b][p]) for p in phases}
                   for a, b in compared_pairs(by_init, baselines)}
    return {"table": table, "differences": differences}


DEMO_PRESETS = {
    "default": dict(unlabeled=16, labeled=(2,), test=4, seeds=2, pretrain_steps=200, finetune_steps=200),
    "quick": dict(unlabeled=6, labeled=(1,), test=2, seeds=1, pretrain_steps=40, finetune_steps=60),
}


def demo(out: str = "demo_output", quick: bool = False, device: str = "auto", workers: int = 2, jobs: int = 1,
         progress: ProgressCallback | None = None) -> Path:
    """The README's main job: phantoms -> PGL and BYOL pretraining -> fine-tuning -> segmentation -> report."""
    preset = DEMO_PRESETS["quick" if quick else "default"]
    return compare(CompareConfig(out=out, device=device, workers=workers, jobs=jobs, **preset), progress)
