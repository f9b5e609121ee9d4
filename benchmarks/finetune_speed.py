"""Fine-tuning measured as Dice per minute: random against PGL initialisation, paired seeds, time budgets.

What a user of the PGL Segmentation panel gets from "train for about N minutes": for each budget (--minutes) and
seed, `pgl finetune --minutes N` from random init and from a PGL-pretrained model on the same 2 labelled
phantoms, the test phantoms' Dice measured every budget/--points of training time (the evaluations are left out
of the clock and of the budget), so every run gives a curve and its final Dice. The cohorts are those of `pgl
compare` (venous phantoms; --unlabeled for pretraining, 2 labelled, --test held out), at its setting (48 x 48 x 32
patches at 3.2 x 3.2 x 6 mm) unless --patch-size / --spacing say otherwise.

Prints and writes (benchmarks/results/finetune_speed.json, docs/images/finetune_speed.png with --plot):
- the organ-mean test Dice at the end of each budget, per init (mean ± SD over seeds) and PGL − random (paired,
  95% t-interval);
- "converged" = the longest budget's final Dice per init, and per shorter budget how far below it each init is;
- from the longest budget's curves: the training time at which each run first reaches 90% of its init's
  converged Dice, and PGL − random of that time (paired);
- finishing early: --patience 0 N runs every budget and seed plain and with `pgl finetune --patience N`, and
  gives per budget and init how often the plateau ended the run, the training time saved and the Dice lost
  (paired with the plain runs); every plain run also says where --patience 2, 3, 5 and 10 would have ended it
  (its own training Dice replayed through the detector).
Levers: --finetune-option KEY=VALUE (any `pgl finetune` option, e.g. batch_size=1) for every run, in its own run
folder; a `network` setting with --inits random only.
Usage: python benchmarks/finetune_speed.py [--minutes 2 5 10] [--seeds 2] [--pretrain-steps 300] [--plot]
(about (sum of --minutes) x seeds x 2 + 10 minutes on 2 CPU cores). --quick: tiny sizes, seconds (the test).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import re
import time
from pathlib import Path

import numpy as np
import torch

from pgl_engine.cli import parse_key_values
from pgl_engine.comparison.config import CompareConfig
from pgl_engine.comparison.data import make_data
from pgl_engine.comparison.runs import pretrain_one
from pgl_engine.comparison.stats import Spread, paired_difference
from pgl_engine.config import FinetuneConfig
from pgl_engine.data.cache import ScanCache
from pgl_engine.data.labels import load_label_on_grid, read_dataset_json
from pgl_engine.errors import PGLError
from pgl_engine.finetuning.trainer import Finetuner, resolve_init
from pgl_engine.inference.evaluation import dice_per_label
from pgl_engine.inference.sliding_window import predict_logits
from pgl_engine.phantoms.tuning import LABELS, ORGANS
from pgl_engine.training.plateau import PlateauDetector
from pgl_engine.training.precision import PRECISIONS

ROOT = Path(__file__).resolve().parents[1]
ORGAN_VALUES = {v: n for v, n in LABELS.items() if n in ORGANS}
REPLAYED_PATIENCE = (2, 3, 5, 10)
TINY = {"network": {"feature_channels": 8, "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}}
TINY_PRETRAIN = {**TINY, "grid_size": 4, "projector_hidden": 8, "predictor_hidden": 8, "projector_dim": 8,
                 "workers": 0}


class CurveFinetuner(Finetuner):
    """A fine-tuning that evaluates the test cases every `every_s` seconds of training and at its end."""

    def __init__(self, config: FinetuneConfig, test_cases: list, every_s: float):
        super().__init__(config, None)
        self.test_cases, self.every_s, self.curve = test_cases, every_s, []

    def after_step(self, record: dict) -> None:
        super().after_step(record)
        training_s = self.plan.elapsed_s()
        last = self.step == self.config.steps
        # a point due in the last 2 % of the steps is left to the final evaluation (one evaluation, not two)
        if not last and (training_s < self.every_s * (len(self.curve) + 1) or self.step >= 0.98 * self.config.steps):
            return
        started = time.perf_counter()
        dice = test_dice(self.model, self.test_cases, self.config.patch_size, self.device)
        self.curve.append({"training_s": round(training_s, 2), "step": self.step, "dice": dice})
        self.plan.excluded_s += time.perf_counter() - started


def test_dice(model, cases: list, patch_size, device) -> float:
    """Organ-mean Dice over the test cases on their cached grid (what validation measures)."""
    scores = []
    for scan, labels in cases:
        predicted = predict_logits(model, scan.load(), patch_size, device).argmax(0).numpy().astype(np.uint8)
        scores += [d for d in dice_per_label(predicted, labels, ORGAN_VALUES).values() if not math.isnan(d)]
    model.train()
    return float(np.mean(scores))


def load_test_cases(folder: Path, cache_dir: Path, spacing, hu_window) -> list:
    pairs, names = read_dataset_json(folder / "dataset.json")
    cache = ScanCache(cache_dir, spacing, hu_window)
    return [(scan, load_label_on_grid(pair, scan, names)) for pair in pairs for scan in [cache.get(pair.image)]]


def run_one(args, data, init_model: str, budget: float, seed: int, patience: int, out: Path) -> dict:
    """One budgeted fine-tuning, finishing early on a plateau with `patience` > 0 (cached in out/result.json)."""
    result_file = out / "result.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    options = {"dataset": str(data.labeled / "dataset.json"), "out": str(out / "model"), "init": init_model,
               "max_labeled": 2, "seed": seed, "minutes": budget, "patch_size": tuple(args.patch_size),
               "spacing": tuple(args.spacing), "cache_dir": str(args.out / "cache"), "overwrite": True,
               "device": args.device, "precision": args.precision, "lr": args.lr, "patience": patience,
               **({**TINY, "workers": 0} if args.quick else {}), **args.options}
    if init_model != "none":
        options.pop("network", None)  # the pretrained model brings its own
    config = FinetuneConfig(**resolve_init(options))
    test_cases = load_test_cases(data.test, args.out / "cache", config.spacing, config.hu_window)
    started = time.perf_counter()
    run = CurveFinetuner(config, test_cases, budget * 60 / args.points)
    run.run()
    result = {"minutes": budget, "seed": seed, "init": "random" if init_model == "none" else "pgl",
              "patience": patience, "finished_early": run.finished_early, "steps": run.step, "curve": run.curve,
              "final_dice": run.curve[-1]["dice"],
              "training_s": run.curve[-1]["training_s"], "wall_s": round(time.perf_counter() - started, 1),
              "timing": run.timing()}
    out.mkdir(parents=True, exist_ok=True)
    result_file.write_text(json.dumps(result, indent=1))
    return result


def replay_plateau(train_log: Path, patience: int, val_every: int = FinetuneConfig.val_every) -> int | None:
    """The step at which `--patience` would have seen a plateau in a plain run's training Dice (None: never)."""
    records = [json.loads(line) for line in train_log.read_text().splitlines()]
    total = records[-1]["total"]
    warmup = max(1, round(0.05 * total))  # FinetuneConfig.effective_warmup at the default --warmup-steps
    detector = PlateauDetector(patience)
    for record in records:
        detector.add(record["train_dice"])
        step = record["step"]
        if step % val_every == 0 and warmup < step < total and detector.check():
            return step
    return None


def run_tag(args, patience: int) -> str:
    """The runs' folder for a learning rate other than the default, --finetune-option settings and a patience (so
    the runs of each setting stay apart)."""
    tags = ([] if args.lr == FinetuneConfig.lr else [f"lr{args.lr:g}"])
    tags += [f"{key}{json.dumps(value, separators=(',', ':'))}" for key, value in sorted(args.options.items())]
    tags += [f"patience{patience}"] if patience else []
    return re.sub(r"[^\w.-]", "", "-".join(tags).replace(",", "x"))


def first_reaching(curve: list[dict], target: float) -> float:
    """Training seconds at which the curve first reaches `target` (inf if never)."""
    return next((point["training_s"] for point in curve if point["dice"] >= target), math.inf)


def summarise(results: list[dict], budgets: list[float], inits: list[str]) -> dict:
    longest = max(budgets)
    by: dict[tuple, list[dict]] = {}  # (init, budget) -> runs in seed order
    for r in sorted(results, key=lambda r: r["seed"]):
        by.setdefault((r["init"], r["minutes"]), []).append(r)
    converged = {i: Spread.of([r["final_dice"] for r in by[(i, longest)]]).mean for i in inits}
    summary = {"converged_dice": converged, "budgets": {}}
    for budget in budgets:
        row = {i: Spread.of([r["final_dice"] for r in by[(i, budget)]]).__dict__ for i in inits}
        row["steps"] = {i: Spread.of([r["steps"] for r in by[(i, budget)]]).mean for i in inits}
        row["below_converged"] = {i: converged[i] - row[i]["mean"] for i in inits}
        if len(inits) == 2:
            a, b = ([r["final_dice"] for r in by[(i, budget)]] for i in ("pgl", "random"))
            row["pgl_minus_random"] = paired_difference(a, b).__dict__
        summary["budgets"][str(budget)] = row
    times = {i: [first_reaching(r["curve"], 0.9 * converged[i]) for r in by[(i, longest)]] for i in inits}
    summary["time_to_90pct_s"] = {i: times[i] for i in inits}
    if len(inits) == 2 and all(math.isfinite(t) for i in inits for t in times[i]):
        summary["time_to_90pct_pgl_minus_random_s"] = paired_difference(times["pgl"], times["random"]).__dict__
    # the common target: 90% of random init's converged Dice, reached by each init when?
    target = 0.9 * converged.get("random", max(converged.values()))
    summary["time_to_90pct_of_random_s"] = {i: [first_reaching(r["curve"], target) for r in by[(i, longest)]]
                                            for i in inits}
    return summary


def patience_against_plain(results: list[dict], patience: int, budgets: list[float], inits: list[str]) -> dict:
    """Per budget and init: what finishing early with `patience` saved (training time) and cost (final Dice), paired
    by seed with the plain runs (patience 0) of the same budget."""
    def of(p: int, init: str, budget: float) -> list[dict]:
        return sorted((r for r in results if (r["patience"], r["init"], r["minutes"]) == (p, init, budget)),
                      key=lambda r: r["seed"])

    rows = {}
    for budget in budgets:
        for init in inits:
            early, plain = of(patience, init, budget), of(0, init, budget)
            rows[f"{budget:g}min {init}"] = {
                "finished_early": sum(bool(r["finished_early"]) for r in early), "runs": len(early),
                "dice_minus_plain": paired_difference([r["final_dice"] for r in early],
                                                      [r["final_dice"] for r in plain]).__dict__,
                "training_s": Spread.of([r["training_s"] for r in early]).__dict__,
                "plain_training_s": Spread.of([r["training_s"] for r in plain]).__dict__,
                "time_saved_fraction": float(np.mean([1 - e["training_s"] / p["training_s"]
                                                      for e, p in zip(early, plain)]))}
    return rows


def plot(results: list[dict], budgets: list[float], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(budgets), figsize=(4.2 * len(budgets), 3.6), sharey=True, squeeze=False)
    colours = {"random": "tab:grey", "pgl": "tab:blue"}
    for ax, budget in zip(axes[0], budgets):
        for r in (r for r in results if r["minutes"] == budget):
            minutes = [p["training_s"] / 60 for p in r["curve"]]
            ax.plot(minutes, [100 * p["dice"] for p in r["curve"]], color=colours[r["init"]], alpha=0.8,
                    label=f"{r['init']} seed {r['seed']}", linestyle="-" if r["seed"] % 2 == 0 else "--")
        ax.set_title(f"train for about {budget:g} min")
        ax.set_xlabel("training time (min)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test organ-mean Dice (%)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "work" / "finetune_speed")
    parser.add_argument("--minutes", type=float, nargs="+", default=[2.0, 5.0, 10.0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--inits", nargs="+", default=["random", "pgl"], choices=["random", "pgl"])
    parser.add_argument("--points", type=int, default=10, help="test evaluations per run (besides the last)")
    parser.add_argument("--pretrain-steps", type=int, default=300, help="PGL pretraining steps (the panel's)")
    parser.add_argument("--unlabeled", type=int, default=16)
    parser.add_argument("--test", type=int, default=4)
    parser.add_argument("--patch-size", type=int, nargs=3, default=[48, 48, 32])
    parser.add_argument("--spacing", type=float, nargs=3, default=[3.2, 3.2, 6.0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lr", type=float, default=FinetuneConfig.lr, help="pgl finetune --lr (the peak)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="pgl finetune --precision (auto: bf16 on CPUs with native bf16)")
    parser.add_argument("--patience", type=int, nargs="+", default=[0],
                        help="pgl finetune --patience values to run (0 = plain); beside 0, each is compared with the "
                             "plain runs: time saved, Dice lost")
    parser.add_argument("--finetune-option", action="append", default=[], metavar="KEY=VALUE",
                        help="a pgl finetune option for every run, e.g. batch_size=1 or patch_size=[80,80,40] (the "
                             "levers; each setting gets its own run folder)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "finetune_speed.json")
    parser.add_argument("--plot", type=Path, nargs="?", const=ROOT / "docs" / "images" / "finetune_speed.png")
    parser.add_argument("--quick", action="store_true", help="tiny cohorts and network (a smoke test)")
    args = parser.parse_args(argv)
    args.options = parse_key_values(args.finetune_option, "--finetune-option")
    if "network" in args.options and "pgl" in args.inits:
        parser.error("--finetune-option network=... changes random init only (a PGL model brings its own network); "
                     "add --inits random.")
    if args.quick:
        args.unlabeled, args.test, args.pretrain_steps = 2, 1, 2
    sizes = {"patch_size": tuple(args.patch_size), "spacing": tuple(args.spacing), "workers": 0 if args.quick else 2,
             "device": args.device, "unlabeled": args.unlabeled, "labeled": (2,), "test": args.test,
             "pretrain_steps": args.pretrain_steps, "phantom_spacing_scale": 4.0 if args.quick else 2.0}
    config = CompareConfig(out=str(args.out), inits=("pgl",), pretrain_options=TINY_PRETRAIN if args.quick else {},
                           finetune_options=args.options, **sizes)
    try:
        config.validate()  # names an unknown --finetune-option before any work, as `pgl compare` does
    except PGLError as error:
        parser.error(str(error))
    data = make_data(config, None)
    models = {"random": "none"}
    if "pgl" in args.inits:
        started = time.perf_counter()
        models["pgl"] = pretrain_one(config, data, "pgl", None)
        print(f"PGL model ready ({time.perf_counter() - started:.0f} s)", flush=True)
    results = []
    for patience in args.patience:
        for budget in args.minutes:
            for seed in range(args.seeds):
                for init in args.inits:
                    folder = (args.out / "runs" / f"{budget:g}min" / args.precision / run_tag(args, patience)
                              / f"seed{seed}" / init)
                    result = run_one(args, data, models[init], budget, seed, patience, folder)
                    if not patience:  # where each --patience value would have ended this plain run
                        result["plateau_replay"] = {str(p): replay_plateau(folder / "model" / "train_log.jsonl", p)
                                                    for p in REPLAYED_PATIENCE}
                    results.append(result)
                    print_run(result)
    first = args.patience[0]
    summary = summarise([r for r in results if r["patience"] == first], args.minutes, args.inits)
    summary["plateau_replay"] = {f"{r['minutes']:g}min seed{r['seed']} {r['init']}": r["plateau_replay"]
                                 for r in results if "plateau_replay" in r}
    if 0 in args.patience:
        summary["patience_against_plain"] = {str(p): patience_against_plain(results, p, args.minutes, args.inits)
                                             for p in args.patience if p}
    figures = {"machine": {"cpu_count": torch.get_num_threads(), "platform": platform.platform(),
                           "torch": torch.__version__, "device": args.device},
               "settings": {**{k: list(v) if isinstance(v, tuple) else v for k, v in sizes.items()},
                            "precision": args.precision, "lr": args.lr, "patience": args.patience,
                            "finetune_options": args.options},
               "summary": summary, "runs": results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=1, default=float))
    print(json.dumps(summary, indent=1, default=float))
    if args.plot:
        plot([r for r in results if r["patience"] == first], args.minutes, args.plot)
    return figures


def print_run(result: dict) -> None:
    early = result["finished_early"]
    print(f"{result['minutes']:g} min, seed {result['seed']}, {result['init']}"
          + (f", patience {result['patience']}" if result["patience"] else "")
          + f": {result['steps']} steps" + (f" (plateau at step {early['step']})" if early else "")
          + f", organ-mean Dice {100 * result['final_dice']:.1f} (curve: "
          + ", ".join(f"{p['training_s']:.0f}s {100 * p['dice']:.1f}" for p in result["curve"]) + ")", flush=True)


if __name__ == "__main__":
    main()
