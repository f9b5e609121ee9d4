"""Crash safety in figures: a real `pgl pretrain` process killed with SIGKILL at random moments, again and again.

Each chain trains one run of `--steps` steps (checkpoint every `--every`) and kills it at a random progress step,
or right after a checkpoint event (a third of the kills), then resumes it with --resume; until the run ends.
Chains follow one another until `--kills` kills were made. For each kill: the step it died at, the step the
resume started from, and whether that was the last checkpoint written. For each chain: whether its final weights
equal, bit for bit, those of an uninterrupted run, and whether its train_log.jsonl lists every step once with the
uninterrupted run's losses.

Writes benchmarks/results/crash_resume.json.
Usage: python benchmarks/crash_resume.py [--kills 20] [--steps 24] [--every 4] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "Testing")]
RESULTS = ROOT / "benchmarks" / "results"


def train(images: Path, out: Path, cache: Path, steps: int, every: int, extra: list[str], kill_at=None):
    """Run pgl pretrain; SIGKILL it when kill_at(event) is true. Returns (exit code, events)."""
    from cli_args import pretrain_args, run_engine

    args = pretrain_args(images, out, cache, "--steps", str(steps), "--checkpoint-every", str(every),
                         "--progress", "json", *extra)
    code, events, _ = run_engine(args, kill_at, timeout=600)
    return code, events


def kill_rule(after_checkpoint: bool, step: int):
    """When to kill: right after the next checkpoint event, or at the first progress event at or past `step`."""
    if after_checkpoint:
        return lambda event: event["event"] == "checkpoint"
    return lambda event: event["event"] == "progress" and event.get("stage") == "pretrain" and event["step"] >= step


def log_of(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--every", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from safetensors.torch import load_file

    from pgl_engine.phantoms.tuning import write_cohort

    rng = np.random.default_rng(args.seed)
    work = Path(tempfile.mkdtemp(prefix="pgl_crash_"))
    write_cohort(work / "cohort", 3, seed=0, spacing_scale=4.0)
    images, cache = work / "cohort" / "images", work / "cache"
    code, _ = train(images, work / "straight", cache, args.steps, args.every, [])
    assert code == 0, "the uninterrupted run failed"
    straight, straight_log = load_file(str(work / "straight" / "model.safetensors")), log_of(work / "straight")
    kills, chains = [], []
    while len(kills) < args.kills:
        run, resume, last_checkpoint = work / f"chain{len(chains)}", [], 0
        while True:
            more = len(kills) < args.kills
            after_checkpoint = more and rng.random() < 1 / 3
            stop = kill_rule(after_checkpoint, int(rng.integers(1, args.steps + 1))) if more else None
            code, events = train(images, run, cache, args.steps, args.every, resume, stop)
            started = next((int(e["message"].split("resuming at step ")[1].split()[0]) for e in events
                            if e["event"] == "info" and "resuming at step" in e.get("message", "")), 0)
            if kills and kills[-1].get("resumed_at") is None and resume:
                kills[-1]["resumed_at"] = started
                kills[-1]["at_last_checkpoint"] = started == kills[-1]["last_checkpoint"]
            steps_seen = [e["step"] for e in events if e["event"] == "progress" and e.get("stage") == "pretrain"]
            last_checkpoint = max([e["step"] for e in events if e["event"] == "checkpoint"] + [last_checkpoint])
            if code == 0:
                break
            kills.append({"chain": len(chains), "died_after_step": max(steps_seen, default=started),
                          "after_checkpoint_event": after_checkpoint, "last_checkpoint": last_checkpoint,
                          "resumed_at": None})
            if last_checkpoint == 0:  # killed before its first checkpoint: start again
                resume = ["--overwrite"]
                kills[-1]["resumed_at"] = 0
                kills[-1]["at_last_checkpoint"] = True
            else:
                resume = ["--resume"]
        final = load_file(str(run / "model.safetensors"))
        log = log_of(run)
        chains.append({"weights_identical": all(final[k].equal(straight[k]) for k in straight),
                       "log_every_step_once": [r["step"] for r in log] == list(range(1, args.steps + 1)),
                       "log_losses_identical": [r["loss"] for r in log] == [r["loss"] for r in straight_log]})
    lost = [k["died_after_step"] - k["resumed_at"] for k in kills]
    summary = {"kills": len(kills), "after_checkpoint_events": sum(k["after_checkpoint_event"] for k in kills),
               "resumed_at_last_checkpoint": sum(k["at_last_checkpoint"] for k in kills),
               "max_steps_lost": max(lost), "checkpoint_every": args.every, "chains": len(chains),
               "chains_bit_identical": sum(c["weights_identical"] for c in chains),
               "chains_log_agrees": sum(c["log_every_step_once"] and c["log_losses_identical"] for c in chains)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "crash_resume.json").write_text(json.dumps({"summary": summary, "kills": kills, "chains": chains},
                                                          indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
