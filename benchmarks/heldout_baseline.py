"""Today's default fine-tuning on the held-out phantom family: the figure the family must keep at or below 0.40.

Writes 2 labelled and 8 test subjects of `pgl phantom --family heldout` (seeds apart from each other), fine-tunes
with `pgl finetune`'s defaults from random initialisation except the time (--minutes) and the precision (fp32
unless asked: the CPU the target is set for has no native bf16, so fp32 is its step cost), segments the test
scans with `pgl segment`'s defaults and prints the Dice per organ and the organ mean (pgl_engine.evaluate), with
the CPU it ran on. The held-out family is for verdicts: nothing may be tuned on this figure.

Usage: python benchmarks/heldout_baseline.py [--minutes 5] [--precision fp32] [--out DIR] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from pgl_engine.inference.evaluation import evaluate
from pgl_engine.phantoms.heldout import LABELS, write_heldout_cohort
from pgl_engine.phantoms.tuning import write_cohort
from pgl_engine.training.precision import cpu_has_native_bf16

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def pgl(*args: str) -> float:
    """Run a `pgl` command in its own process (as a user would); returns its wall-clock seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pgl_engine", *args], check=True, cwd=ROOT)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="fine-tuning budget (default: 5)")
    parser.add_argument("--precision", default="fp32", help="pgl finetune/segment --precision (default: fp32)")
    parser.add_argument("--seed", type=int, default=0, help="fine-tuning seed (default: 0)")
    parser.add_argument("--labelled", type=int, default=2, help="labelled subjects (default: 2)")
    parser.add_argument("--test", type=int, default=8, help="test subjects (default: 8)")
    parser.add_argument("--data-seed", type=int, default=0, help="first subject's seed (default: 0)")
    parser.add_argument("--spacing-scale", type=float, default=1.0, help="phantom spacing multiplier (smaller runs)")
    parser.add_argument("--family", choices=("heldout", "phantom"), default="heldout",
                        help="heldout: the verdict family; phantom: `pgl phantom`'s, the family to tune on (venous "
                             "labelled scans, test scans in all three contrast phases)")
    parser.add_argument("--finetune-arg", action="append", default=[], metavar="ARG",
                        help="extra pgl finetune argument, repeated (e.g. --finetune-arg=--steps --finetune-arg=5)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "work" / "heldout_baseline"))
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "heldout_baseline.json"))
    args = parser.parse_args(argv)

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        parser.error(f"{out} is not empty: give another --out")
    start = time.perf_counter()
    if args.family == "heldout":
        write_heldout_cohort(out / "labelled", args.labelled, seed=args.data_seed, spacing_scale=args.spacing_scale)
        write_heldout_cohort(out / "test", args.test, seed=args.data_seed + args.labelled,
                             spacing_scale=args.spacing_scale)
    else:
        write_cohort(out / "labelled", args.labelled, labels=True, seed=args.data_seed,
                     spacing_scale=args.spacing_scale)
        write_cohort(out / "test", args.test, labels=True, seed=args.data_seed + args.labelled,
                     spacing_scale=args.spacing_scale, phases=("venous", "arterial", "native"))
    data_s = time.perf_counter() - start
    finetune_s = pgl("finetune", "--dataset", str(out / "labelled" / "dataset.json"), "--out", str(out / "model"),
                     "--minutes", str(args.minutes), "--precision", args.precision, "--seed", str(args.seed),
                     "--cache-dir", str(out / "cache"), "--progress", "log", *args.finetune_arg)
    segment_s = pgl("segment", "--model", str(out / "model"), "--input", str(out / "test" / "images"),
                    "--output", str(out / "pred"), "--precision", args.precision, "--progress", "log")
    result = evaluate(out / "pred", out / "test" / "labels", names=LABELS)
    dice = {name: round(result["mean"][name]["dice"], 4) for name in LABELS.values()}
    metadata = json.loads((out / "model" / "pgl_model.json").read_text())
    figures = {
        "cpu": cpu_model(), "native_bf16": cpu_has_native_bf16(), "precision": args.precision,
        "family": args.family, "minutes": args.minutes, "seed": args.seed, "labelled": args.labelled, "test": args.test,
        "data_seed": args.data_seed, "spacing_scale": args.spacing_scale, "finetune_args": args.finetune_arg,
        "steps": metadata.get("training", {}).get("steps"), "data_s": round(data_s, 1),
        "finetune_s": round(finetune_s, 1), "segment_s": round(segment_s, 1),
        "dice": dice, "organ_mean_dice": round(sum(dice.values()) / len(dice), 4),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
