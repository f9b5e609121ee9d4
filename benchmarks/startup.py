"""Engine start-up: how long a fresh process takes to import what `pgl segment` needs, against `import torch` alone.

Each probe is a new interpreter (as the Slicer panel starts one per job); the probes alternate, so a busy
moment slows both. Besides the median seconds it lists the engine modules the segment probe loaded and the
engine's share above torch, and with --against GIT_REF the same probe on that commit's `pgl_engine` (checked out
into a temporary folder), so a change to the imports is measured in one run.
Usage: python benchmarks/startup.py [--repeats 10] [--against HEAD~1]
Writes benchmarks/results/startup.json and prints a summary.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEGMENT_PROBE = ("import sys, json, pgl_engine, pgl_engine.cli; pgl_engine.segment; "  # loads segment's module
                 "print(json.dumps(sorted(m for m in sys.modules if m.startswith('pgl_engine.'))))")
TORCH_PROBE = "import torch"


def run_probe(code: str, engine_root: Path) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(engine_root)}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                            cwd=engine_root)
    return time.perf_counter() - started, result.stdout


def checkout(ref: str, into: Path) -> Path:
    """`pgl_engine` as it was at `ref`, extracted under `into`."""
    archive = subprocess.run(["git", "archive", ref, "pgl_engine"], cwd=ROOT, capture_output=True, check=True)
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(into)
    return into


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--against", help="a git ref whose pgl_engine is timed in the same run")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "startup.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        roots = {"segment": ROOT, **({"segment at " + args.against: checkout(args.against, Path(tmp))}
                                     if args.against else {})}
        probes = {"torch": (TORCH_PROBE, ROOT), **{name: (SEGMENT_PROBE, root) for name, root in roots.items()}}
        times: dict[str, list[float]] = {name: [] for name in probes}
        loaded: dict[str, list[str]] = {}
        for name, (code, root) in probes.items():  # one warm-up each (file cache)
            loaded[name] = json.loads(run_probe(code, root)[1] or "[]")
        for _ in range(args.repeats):
            for name, (code, root) in probes.items():
                times[name].append(run_probe(code, root)[0])
    median = {name: round(statistics.median(t), 3) for name, t in times.items()}
    figures = {"median_s": median, "above_torch_s": {n: round(median[n] - median["torch"], 3) for n in roots},
               "engine_modules": {n: loaded[n] for n in roots}, "repeats": args.repeats}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=1))
    for name in probes:
        extra = f", {len(loaded[name])} engine modules" if name in roots else ""
        print(f"{name}: median {median[name]:.2f} s{extra}")
    return figures


if __name__ == "__main__":
    main()
