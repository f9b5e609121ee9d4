"""Dice per minute on the held-out phantom family: PGL init against random init, paired seeds, at several budgets.

The held-out family (`pgl phantom --family heldout`) is for verdicts: nothing is tuned on these figures. Data:
2 labelled subjects (seeds 0-1), test subjects from seed 2 on, 16 unlabelled subjects (seeds 100-115) for
pretraining. The PGL model is made by `pgl pretrain` with its defaults on the unlabelled subjects (its time is
recorded), or reused with --pretrained. For each budget M and seed S both arms fine-tune with `pgl finetune`'s
defaults (fp32 unless asked: the step cost of a CPU without native bf16) and are scored with `pgl segment`'s
defaults on the test subjects (organ-mean Dice, pgl_engine.evaluate).

Two ways to give both arms the same time:
- `--mode wallclock`: each run alone with `--minutes M`, one after the other (the machine must be otherwise idle).
- `--mode equal-steps` (default): a calibration run (PGL init, seed 0, `--minutes M`, alone) records the
  configuration and step count M minutes buy; every pair then trains that configuration for that many steps. Both
  arms have the same network, so equal steps are equal time, and the machine need not be idle for the pairs. With
  `--jobs 2` the two arms of a seed run at once, one core each (on the 2-core CPU this was slower than one after
  the other: 0.45 s per step each against about 0.17 s alone). `--steps-at M=N` skips the calibration and gives
  the steps M minutes bought on the idle machine, on `--grid` (for a machine that cannot stay idle long).

Paired differences (PGL - random) get a 95% t-interval; "better" only where its lower bound is above 0. Results
accumulate in OUT/results.json (finished runs are reused), with a plot OUT/dice_per_minute.png.

Usage: python benchmarks/dice_per_minute.py --out DIR [--minutes 2 5 10] [--seeds 5] [--mode wallclock]
       python benchmarks/dice_per_minute.py --out DIR --rescore [--segment-arg=...]   (segment and score again)
       python benchmarks/dice_per_minute.py --out DIR --screen   (one question in under 20 minutes: 2 minutes,
                                                                  2 seeds, 4 test subjects)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from heldout_baseline import ROOT, cpu_model

from pgl_engine.comparison.stats import paired_difference
from pgl_engine.inference.evaluation import evaluate
from pgl_engine.phantoms.heldout import LABELS, write_heldout_cohort
from pgl_engine.training.precision import cpu_has_native_bf16

INITS = ("random", "pgl")


def pgl(args: list[str], log: Path, threads: int | None = None) -> float:
    """Run a `pgl` command in its own process, output to `log`; returns its wall-clock seconds."""
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    start = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run([sys.executable, "-m", "pgl_engine", *args], cwd=ROOT, env=env, stdout=out,
                              stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"pgl {args[0]} failed (exit {done.returncode}): see {log}")
    return time.perf_counter() - start


class Bench:
    def __init__(self, args):
        self.args, self.out = args, Path(args.out)
        self.results_path = self.out / "results.json"
        self.results = json.loads(self.results_path.read_text()) if self.results_path.exists() else {
            "cpu": cpu_model(), "native_bf16": cpu_has_native_bf16(), "precision": args.precision, "runs": {},
            "calibration": {}}

    def save(self) -> None:
        self.results_path.write_text(json.dumps(self.results, indent=2))

    def data(self) -> None:
        """The cohorts, written once."""
        for name, count, seed, labels in (("labelled", 2, 0, True), ("test", self.args.test, 2, True),
                                          ("unlabelled", 16, 100, False)):
            if not (self.out / name / "images").exists():
                write_heldout_cohort(self.out / name, count, seed=seed, labels=labels)

    def pretrained(self) -> Path:
        if self.args.pretrained:
            return Path(self.args.pretrained)
        model = self.out / "pgl_model"
        if not (model / "pgl_model.json").exists():
            seconds = pgl(["pretrain", "--images", str(self.out / "unlabelled" / "images"), "--out", str(model),
                           "--cache-dir", str(self.out / "cache"), "--progress", "log"], self.out / "pretrain.log")
            self.results["pretrain_s"] = round(seconds, 1)
            self.save()
        return model

    def finetune_and_score(self, key: str, extra: list[str], threads: int | None = None) -> dict:
        run = self.out / "runs" / key
        run.mkdir(parents=True, exist_ok=True)
        finetune_s = pgl(["finetune", "--dataset", str(self.out / "labelled" / "dataset.json"), "--out",
                          str(run / "model"), "--precision", self.args.precision, "--cache-dir",
                          str(self.out / "cache"), "--progress", "log", "--overwrite", *extra, *self.args.finetune_arg],
                         run / "finetune.log",
                         threads)
        meta = json.loads((run / "model" / "pgl_model.json").read_text())
        training = meta.get("training", {})
        return {**self.score(run, threads), "finetune_s": round(finetune_s, 1), "steps": training.get("steps"),
                "spacing": meta["spacing"], "patch_size": meta["patch_size"], "network": meta["network"]}

    def score(self, run: Path, threads: int | None = None) -> dict:
        """`pgl segment` (its defaults and --segment-arg) on the test subjects, and the Dice per organ."""
        pgl(["segment", "--model", str(run / "model"), "--input", str(self.out / "test" / "images"), "--output",
             str(run / "pred"), "--precision", self.args.precision, "--progress", "log", "--overwrite",
             *self.args.segment_arg], run / "segment.log", threads)
        scores = evaluate(run / "pred", self.out / "test" / "labels", names=LABELS)["mean"]
        dice = {name: round(scores[name]["dice"], 4) for name in LABELS.values()}
        return {"dice": dice, "organ_mean": round(float(np.mean(list(dice.values()))), 4),
                "segment_args": list(self.args.segment_arg)}

    def rescore(self) -> None:
        """Every finished run's model segmented and scored again (a post-processing change needs no training);
        the first scores stay under "scored_before"."""
        for key, run in self.results["runs"].items():
            minutes, seed, init = key.split("/")
            run.setdefault("scored_before", {k: run[k] for k in ("dice", "organ_mean")})
            run.update(self.score(self.out / "runs" / f"{minutes}min_seed{seed}_{init}"))
            print(f"{key}: organ mean {run['organ_mean']:.3f} (before {run['scored_before']['organ_mean']:.3f})",
                  flush=True)
            self.save()

    def calibrate(self, minutes: float, model: Path) -> dict:
        """What M minutes buy: PGL init (whose network is fixed by pretraining), seed 0, alone on the machine; or
        the steps given with --steps-at on the configuration of --grid."""
        key = f"{minutes:g}"
        given = dict(self.args.steps_at)
        if minutes in given:
            meta = json.loads((model / "pgl_model.json").read_text())
            grid = self.args.grid
            return {"steps": given[minutes], "spacing": grid[:3], "patch_size": [int(v) for v in grid[3:]],
                    "network": meta["network"]}
        if key not in self.results["calibration"]:
            self.results["calibration"][key] = self.finetune_and_score(
                f"calibration_{key}min", ["--minutes", str(minutes), "--seed", "0", "--init", str(model)])
            self.save()
        return self.results["calibration"][key]

    def arm_args(self, init: str, minutes: float, seed: int, model: Path) -> list[str]:
        args = ["--seed", str(seed)] + (["--init", str(model)] if init == "pgl" else [])
        if self.args.mode == "wallclock":
            return args + ["--minutes", str(minutes)]
        fixed = self.calibrate(minutes, model)
        args += ["--steps", str(fixed["steps"]), "--spacing", *map(str, fixed["spacing"]),
                 "--patch-size", *map(str, fixed["patch_size"])]
        if init == "random":  # the pretrained model's network, from random weights
            net = fixed["network"]
            args += ["--channels", *map(str, net["channels"]), "--feature-channels", str(net["feature_channels"]),
                     "--strides", *map(str, net["strides"]), "--num-res-units", str(net["num_res_units"]),
                     "--norm", net["norm"]]
        return args

    def budget(self, minutes: float, seeds: int, model: Path) -> None:
        """Every run of this budget not yet in results.json, --jobs at once (a seed's two arms side by side, then
        the next seed's, so an arm left from an earlier invocation does not leave a core idle); each run is
        recorded as it finishes."""
        todo = [(s, i) for s in range(seeds) for i in INITS if f"{minutes:g}/{s}/{i}" not in self.results["runs"]]
        jobs = self.args.jobs if self.args.mode == "equal-steps" else 1
        threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
        arm_args = {(s, i): self.arm_args(i, minutes, s, model) for s, i in todo}
        recording = threading.Lock()

        def run(task: tuple[int, str]) -> None:
            seed, init = task
            result = self.finetune_and_score(f"{minutes:g}min_seed{seed}_{init}", arm_args[task], threads)
            with recording:
                self.results["runs"][f"{minutes:g}/{seed}/{init}"] = result
                self.save()
                print(f"{minutes:g} min, seed {seed}, {init}: organ mean {result['organ_mean']:.3f} "
                      f"({result['steps']} steps)", flush=True)

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(run, todo))

    def summary(self) -> dict:
        """Every budget in results.json with its finished pairs (runs of other invocations included)."""
        table = {}
        runs = self.results["runs"]
        for minutes in sorted({float(key.split("/")[0]) for key in runs}):
            seeds = sorted({int(key.split("/")[1]) for key in runs if float(key.split("/")[0]) == minutes})
            pairs = [(runs.get(f"{minutes:g}/{s}/random"), runs.get(f"{minutes:g}/{s}/pgl")) for s in seeds]
            pairs = [(r["organ_mean"], p["organ_mean"]) for r, p in pairs if r and p]
            if not pairs:
                continue
            random_d, pgl_d = [r for r, _ in pairs], [p for _, p in pairs]
            row = {"seeds": len(pairs), "random": round(float(np.mean(random_d)), 4),
                   "pgl": round(float(np.mean(pgl_d)), 4)}
            if len(pairs) >= 2:
                diff = paired_difference(pgl_d, random_d)
                low, high = diff.ci95
                row.update(difference=round(diff.mean, 4), ci95=[round(low, 4), round(high, 4)],
                           verdict="PGL better" if low > 0 else "random better" if high < 0 else
                           "no difference shown")
            table[f"{minutes:g}"] = row
        self.results["summary"] = table
        self.save()
        return table

    def plot(self) -> None:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("matplotlib is not installed: no plot (pip install matplotlib)")
            return
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4))
        for init, colour in zip(INITS, ("tab:grey", "tab:blue")):
            xs, ys = [], []
            for key, run in self.results["runs"].items():
                minutes, _, arm = key.split("/")
                if arm == init:
                    xs.append(float(minutes))
                    ys.append(run["organ_mean"])
            ax.scatter(xs, ys, color=colour, alpha=0.6, label=f"{init} init")
        ax.set(xlabel="fine-tuning budget (minutes)", ylabel="organ-mean Dice (held-out family)")
        ax.legend()
        rows = self.results.get("summary", {})
        xs = [float(m) for m, r in rows.items() if "ci95" in r]
        if xs:
            mid = [rows[f"{m:g}"]["difference"] for m in xs]
            err = [[d - rows[f"{m:g}"]["ci95"][0] for m, d in zip(xs, mid)],
                   [rows[f"{m:g}"]["ci95"][1] - d for m, d in zip(xs, mid)]]
            bx.errorbar(xs, mid, yerr=err, fmt="o", capsize=4)
        bx.axhline(0, color="black", lw=0.8)
        bx.set(xlabel="fine-tuning budget (minutes)", ylabel="PGL - random (95% interval)")
        fig.suptitle(f"{self.results['cpu']}, {self.results['precision']}, mode {self.args.mode}")
        fig.tight_layout()
        fig.savefig(self.out / "dice_per_minute.png", dpi=100)


def steps_at(text: str) -> tuple[float, int]:
    minutes, steps = text.split("=")
    return float(minutes), int(steps)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="work folder (results.json accumulates there)")
    parser.add_argument("--minutes", type=float, nargs="+", default=[2.0, 5.0, 10.0], help="budgets")
    parser.add_argument("--seeds", type=int, default=5, help="paired seeds per budget (default: 5)")
    parser.add_argument("--test", type=int, default=8, help="test subjects (default: 8)")
    parser.add_argument("--mode", choices=("equal-steps", "wallclock"), default="equal-steps")
    parser.add_argument("--jobs", type=int, default=1, help="equal-steps: runs at once (default: 1)")
    parser.add_argument("--precision", default="fp32", help="pgl finetune/segment --precision (default: fp32)")
    parser.add_argument("--pretrained", default="", help="PGL model to use instead of pretraining one")
    parser.add_argument("--screen", action="store_true", help="2 minutes, 2 seeds, 4 test subjects")
    parser.add_argument("--report", action="store_true", help="no runs: the summary and plot of results.json")
    parser.add_argument("--finetune-arg", action="append", default=[], metavar="ARG",
                        help="extra pgl finetune argument for every run, repeated (e.g. "
                             "--finetune-arg=--structure-shift-hu --finetune-arg=40)")
    parser.add_argument("--segment-arg", action="append", default=[], metavar="ARG",
                        help="extra pgl segment argument for every run, repeated (e.g. "
                             "--segment-arg=--largest-component --segment-arg=none)")
    parser.add_argument("--rescore", action="store_true",
                        help="no training: segment every finished run's model again (current defaults and "
                             "--segment-arg) and score it")
    parser.add_argument("--steps-at", type=steps_at, nargs="+", default=[], metavar="M=STEPS",
                        help="equal-steps without a calibration run: the steps M minutes bought on this machine "
                             "when it was idle (e.g. from `pgl finetune --minutes M` logs), on --grid")
    parser.add_argument("--grid", type=float, nargs=6, default=[3.2, 3.2, 6.0, 48, 48, 32],
                        metavar=("SX", "SY", "SZ", "PX", "PY", "PZ"),
                        help="spacing and patch for --steps-at (default: the engine's coarse grid)")
    args = parser.parse_args(argv)
    if args.screen:
        args.minutes, args.seeds, args.test = [2.0], 2, 4
    bench = Bench(args)
    bench.out.mkdir(parents=True, exist_ok=True)
    bench.data()
    if args.rescore:
        bench.rescore()
    model = None if args.report or args.rescore else bench.pretrained()
    for minutes in [] if args.report or args.rescore else args.minutes:
        bench.budget(minutes, args.seeds, model)
    table = bench.summary()
    bench.plot()
    print(json.dumps({"cpu": bench.results["cpu"], "native_bf16": bench.results["native_bf16"],
                      "pretrain_s": bench.results.get("pretrain_s"), "summary": table}, indent=2))
    return table


if __name__ == "__main__":
    main()
