"""Data-parallel scaling of PGL pretraining: torchrun with 2 processes against 1, in one run.

Each configuration pretrains for --steps steps on a phantom cohort (warm cache) and the throughput is read
from the training log (median step time after --warmup steps). On CPU the processes use gloo and one thread
each, so `1 process` is one core; the 1-process/2-thread figure is shown too. On CUDA, use --device cuda
and one GPU per process.
Usage: python benchmarks/ddp_scaling.py [--steps 15] [--device cpu] [--nproc 2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from pgl_engine.phantoms.tuning import write_cohort


def run(work: Path, name: str, nproc: int, threads: int, args) -> float:
    """Views per second (all processes together) of one torchrun pretraining run."""
    out = work / name
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "pgl_engine", "pretrain", "--images", str(work / "data" / "images"), "--out", str(out),
               "--cache-dir", str(work / "cache"), "--steps", str(args.steps), "--batch-size", str(args.batch_size),
               "--patch-size", *map(str, args.patch_size), "--spacing", "3.2", "3.2", "6", "--workers", "1",
               "--device", args.device, "--overwrite", "--progress", "none"]
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    step_s = statistics.median(r["step_s"] for r in log[args.warmup:])
    return 2 * args.batch_size * nproc / step_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=2, help="view pairs per process per step")
    parser.add_argument("--patch-size", type=int, nargs=3, default=(48, 48, 32))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--work-dir", default="")
    args = parser.parse_args()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="pgl_ddp_bench_"))
    if not (work / "data" / "images").is_dir():
        write_cohort(work / "data", 6, seed=300, spacing_scale=2.0)
    one = run(work, "one", 1, 1, args)
    one_all_threads = run(work, "one_threads", 1, args.nproc, args)
    many = run(work, "many", args.nproc, 1, args)
    result = {"device": args.device, "processes": args.nproc, "patch_size": args.patch_size,
              "batch_per_process": args.batch_size, "views_per_s_1proc_1thread": one,
              f"views_per_s_1proc_{args.nproc}threads": one_all_threads,
              f"views_per_s_{args.nproc}proc": many, "scaling_efficiency": many / (args.nproc * one),
              f"speedup_vs_1proc_{args.nproc}threads": many / one_all_threads}
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "ddp_scaling.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
