"""`pgl demo`: the clinician's path on phantoms it writes, in about four minutes on a 2-core CPU.

Phantoms (unlabelled scans, 2 labelled, test scans in mixed contrast phases) -> PGL pretraining -> fine-tuning from
that model within a time budget (the engine chooses grid and patch for this machine) -> segmenting the test scans
-> Dice against their labels -> report.md with each stage's wall-clock time. Each stage's budget is a constant
below. The paper's comparison (random vs BYOL vs PGL, paired seeds) is `pgl compare` (`make compare`).

Layout under --out: data/{unlabeled,labeled,test}, models/{pgl,segmentation}, predictions/, dice.csv, report.md.
"""
from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

from .atomic import write_text_atomically
from .contract import COARSE_PATCH_SIZE, COARSE_SPACING_MM
from .finetuning.trainer import finetune
from .inference.evaluation import evaluate
from .inference.segmentation import segment
from .models.store import read_metadata
from .phantoms.tuning import ORGANS, read_phases, write_cohort
from .pretraining.trainer import pretrain
from .progress import ProgressCallback, emit

__all__ = ["DemoPlan", "DEMO", "QUICK", "demo"]


@dataclass(frozen=True)
class DemoPlan:
    """What the demo writes and how long each stage may take."""

    unlabeled: int  # phantoms to pretrain on (contrast phases mixed)
    labeled: int  # labelled phantoms to fine-tune from (portal-venous, as annotated sets mostly are)
    test: int  # labelled phantoms to segment and score (phases mixed, so some look unlike the labelled ones)
    spacing_scale: float  # phantom scanner spacing multiplier: coarser voxels, smaller files, faster reading
    pretrain_steps: int  # PGL steps, sized to take about `budgets_s["pretrain"]` seconds on a 2-core CPU
    pretrain_grid: tuple[tuple[float, float, float], tuple[int, int, int]]  # spacing (mm), patch (voxels)
    finetune_minutes: float  # wall clock, start to saved model; the engine chooses grid and patch for it
    finetune_steps: int = 0  # instead of the minutes (--quick: a run too short to choose a configuration for)
    finetune_grid: tuple | None = None  # spacing and patch with finetune_steps
    budgets_s: tuple[tuple[str, float], ...] = ()  # stage -> the seconds it is sized for, said in the report


# sized on a 2-core AMD EPYC (bf16) shared with other jobs: writing a phantom takes ~0.5 s, a PGL step at 3.2 x 3.2 x
# 6 mm ~1.4 s, segmenting and scoring a test scan ~1-2 s. Most of the time goes to fine-tuning, the step a clinician
# waits for; pretraining is on the coarse grid that fine-tuning chooses on such a CPU (a GPU may choose finer)
PHANTOM_BUDGET_S = 10.0
PRETRAIN_STEPS = 30
PRETRAIN_BUDGET_S = 45.0  # what PRETRAIN_STEPS take there: pretraining has a step count, not a time budget
FINETUNE_MINUTES = 2.5  # a time budget: the engine plans its steps for it on the machine it runs on
SEGMENT_BUDGET_S = 10.0
EVALUATE_BUDGET_S = 5.0
COARSE_GRID = (COARSE_SPACING_MM, COARSE_PATCH_SIZE)

DEMO = DemoPlan(unlabeled=8, labeled=2, test=3, spacing_scale=2.0, pretrain_steps=PRETRAIN_STEPS,
                pretrain_grid=COARSE_GRID, finetune_minutes=FINETUNE_MINUTES,
                budgets_s=(("phantoms", PHANTOM_BUDGET_S), ("pretrain", PRETRAIN_BUDGET_S),
                           ("finetune", FINETUNE_MINUTES * 60), ("segment", SEGMENT_BUDGET_S),
                           ("evaluate", EVALUATE_BUDGET_S)))
# --quick: the same path at toy sizes, for tests (seconds, not minutes)
TOY_GRID = ((12.0, 12.0, 12.0), (16, 16, 16))
QUICK = DemoPlan(unlabeled=2, labeled=1, test=1, spacing_scale=4.0, pretrain_steps=2, pretrain_grid=TOY_GRID,
                 finetune_minutes=0.0, finetune_steps=2, finetune_grid=TOY_GRID)

PHASES = ("venous", "arterial", "native")
DATA_SEED = 2000  # other subjects than `pgl compare`'s cohorts


def forwarder(progress: ProgressCallback | None, stage: str):
    """Pass a stage's events on, its progress under the demo's stage name; its own `done` is the demo's to say."""
    def forward(event: dict) -> None:
        if progress is None or event.get("event") == "done":
            return
        if event.get("event") == "progress":
            event = {**event, "stage": f"{stage}: {event.get('stage')}"}
        progress(event)
    return forward


def demo(out: str = "demo_output", quick: bool = False, device: str = "auto", workers: int = 2,
         progress: ProgressCallback | None = None, plan: DemoPlan | None = None) -> Path:
    """Run the clinician's path on phantoms and return the path of report.md (`plan` overrides DEMO / QUICK)."""
    plan = plan or (QUICK if quick else DEMO)
    out = Path(out)
    cache, times, started = str(out / "cache"), {}, time.perf_counter()

    def stage(name: str, message: str, run):
        emit(progress, "info", message=f"demo, {len(times) + 1}/5: {message}")
        start = time.perf_counter()
        result = run(forwarder(progress, name))
        times[name] = time.perf_counter() - start
        return result

    data = stage("phantoms", f"writing {plan.unlabeled} unlabelled, {plan.labeled} labelled and {plan.test} test "
                             f"phantoms", lambda p: write_data(out / "data", plan, p))
    pretrained = stage("pretrain", f"PGL pretraining, {plan.pretrain_steps} steps", lambda p: pretrain(
        images=str(data / "unlabeled" / "images"), out=str(out / "models" / "pgl"), steps=plan.pretrain_steps,
        spacing=plan.pretrain_grid[0], patch_size=plan.pretrain_grid[1], checkpoint_every=plan.pretrain_steps,
        device=device, workers=workers, cache_dir=cache, overwrite=True, progress=p))
    budget = ({"minutes": plan.finetune_minutes} if plan.finetune_minutes else
              {"steps": plan.finetune_steps, "spacing": plan.finetune_grid[0], "patch_size": plan.finetune_grid[1]})
    model = stage("finetune", "fine-tuning from the PGL model on the labelled phantoms" + (
        f" within {plan.finetune_minutes:g} minutes" if plan.finetune_minutes else ""), lambda p: finetune(
        dataset=str(data / "labeled" / "dataset.json"), out=str(out / "models" / "segmentation"),
        init=str(pretrained), device=device, workers=workers, cache_dir=cache, overwrite=True, progress=p, **budget))
    stage("segment", f"segmenting the {plan.test} test phantoms", lambda p: segment(
        model, data / "test" / "images", out / "predictions", device=device, progress=p))
    metrics = stage("evaluate", "Dice against the test phantoms' labels", lambda p: evaluate(
        out / "predictions", data / "test" / "labels", csv_path=out / "dice.csv", progress=p))
    report = out / "report.md"
    write_text_atomically(report, render_report(plan, times, metrics, read_metadata(pretrained),
                                                read_metadata(model), read_phases(data / "test")))
    organ_mean = nanmean([metrics["mean"][o]["dice"] for o in ORGANS if o in metrics["mean"]])
    emit(progress, "done", report=str(report), seconds=time.perf_counter() - started,
         stage_seconds={k: round(v, 1) for k, v in times.items()}, organ_mean_dice=organ_mean)
    return report


def write_data(folder: Path, plan: DemoPlan, progress) -> Path:
    """The three cohorts, disjoint subjects; rewritten each run (seconds; the same files for the same plan)."""
    write_cohort(folder / "unlabeled", plan.unlabeled, seed=DATA_SEED, spacing_scale=plan.spacing_scale,
                 phases=PHASES, progress=progress)
    write_cohort(folder / "labeled", plan.labeled, labels=True, seed=DATA_SEED + 500,
                 spacing_scale=plan.spacing_scale, progress=progress)
    write_cohort(folder / "test", plan.test, labels=True, seed=DATA_SEED + 800, spacing_scale=plan.spacing_scale,
                 phases=PHASES, progress=progress)
    return folder


def nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def cell(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.2f}"


def dice_table(metrics: dict, phases: dict[str, str]) -> list[str]:
    """Structures as rows, test scans (with their contrast phase) as columns, then the mean over scans."""
    cases = list(dict.fromkeys(r["case"] for r in metrics["cases"]))
    names = list(dict.fromkeys(r["name"] for r in metrics["cases"]))
    dice = {(r["case"], r["name"]): r["dice"] for r in metrics["cases"]}
    lines = ["| structure | " + " | ".join(f"{c.split('.')[0]} ({phases.get(c, '?')})" for c in cases) + " | mean |",
             "|---|" + "---|" * (len(cases) + 1)]
    for name in names:
        row = [dice[(c, name)] for c in cases]
        lines.append(f"| {name} | " + " | ".join(map(cell, row)) + f" | {cell(nanmean(row))} |")
    organ = [nanmean([dice[(c, o)] for o in ORGANS if (c, o) in dice]) for c in cases]
    lines.append("| **organ mean** | " + " | ".join(map(cell, organ)) + f" | **{cell(nanmean(organ))}** |")
    return lines


def render_report(plan: DemoPlan, times: dict[str, float], metrics: dict, pretrained: dict, model: dict,
                  phases: dict[str, str]) -> str:
    budgets = dict(plan.budgets_s)
    training = model.get("training", {})
    choice = model.get("configuration")
    lines = ["# PGL demo", "",
             "The clinician's path on synthetic phantoms: unlabelled scans -> PGL pretraining -> fine-tuning from "
             "the pretrained model on labelled scans -> segmenting new scans -> Dice against their labels.", "",
             "## What was done", "",
             f"1. **phantoms**: {plan.unlabeled} unlabelled (contrast phases {', '.join(PHASES)} in turn), "
             f"{plan.labeled} labelled (portal-venous) and {plan.test} test scans with labels (phases in turn), "
             f"written to `data/`.",
             f"2. **pretrain**: PGL for {pretrained.get('training', {}).get('steps', plan.pretrain_steps)} steps at "
             f"{fmt(pretrained['spacing'])} mm, UNet channels {tuple(pretrained['network']['channels'])} "
             f"-> `models/pgl`.",
             f"3. **finetune**: from `models/pgl` on the {plan.labeled} labelled scans, "
             + (f"a {plan.finetune_minutes:g}-minute budget" if plan.finetune_minutes else
                f"{plan.finetune_steps} steps") + f": {training.get('steps', '?')} steps at "
             f"{fmt(model['spacing'])} mm, patches {fmt(model['patch_size'], 'x')} -> `models/segmentation`.",
             f"4. **segment**: the {plan.test} test scans -> `predictions/`.",
             "5. **evaluate**: Dice per structure against the test labels -> `dice.csv`.", "",
             f"## Wall-clock time per stage ({machine()})", "",
             "| stage | sized for (s) | took (s) |", "|---|---|---|"]
    lines += [f"| {name} | {budgets[name]:.0f} | {t:.1f} |" if name in budgets else f"| {name} | – | {t:.1f} |"
              for name, t in times.items()]
    total = sum(times.values())
    lines += [f"| **total** | {sum(budgets.values()):.0f} | **{total:.1f}** ({total / 60:.1f} min) |"
              if budgets else f"| **total** | – | **{total:.1f}** |", "",
              "## The configuration fine-tuning chose", "",
              (f"{choice['why']} (device {choice['device']}, {choice['precision']})." if choice else
               "None: a step count and grid were given (--quick), not a time budget, so nothing was chosen."), "",
              "## Dice on the test scans", ""]
    lines += dice_table(metrics, phases)
    not_learnt = (model.get("learnt") or {}).get("not_learnt") or []
    lines += ["", "*organ mean*: liver, spleen and both kidneys (the tumour is small and not in every scan)."
              + (f" The model said it had not learnt: {', '.join(not_learnt)}." if not_learnt else ""), "",
              "## Caveats", "",
              "- The phantoms are synthetic (`pgl phantom`): these numbers show that the path works end to end, not "
              "how well a model does on patients' scans.",
              f"- {plan.pretrain_steps} pretraining steps on {plan.unlabeled} scans is far too short for PGL to help "
              "(the engine says so when it starts); pretrain for longer on your own unlabelled scans. Whether PGL "
              "helps is what `pgl compare` (`make compare`) and `pgl check-pretraining` measure.", ""]
    return "\n".join(lines)


def machine() -> str:
    """The CPU the times were taken on, as the report's reader needs it to compare (Linux names the model)."""
    cpuinfo = Path("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text(errors="replace").splitlines()
              if line.startswith("model name")] if cpuinfo.is_file() else []
    return f"{models[0] if models else platform.machine()}, {os.cpu_count()} cores"


def fmt(values, sep: str = " x ") -> str:
    return sep.join(f"{v:g}" for v in values)
