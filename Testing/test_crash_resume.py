"""A real training process killed with SIGKILL at several moments resumes at its last checkpoint and ends with the
weights and the log of a run that was never interrupted; a log file (stderr not a terminal) gets every warning."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cli_args import pretrain_args, run_engine
from conftest import ROOT
from safetensors.torch import load_file

pytestmark = pytest.mark.slow  # real engine processes, killed and resumed

STEPS, EVERY = 12, 4
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def train(cohort: Path, out: Path, cache: Path, *extra: str, kill_when=None) -> tuple[int, list[dict], str]:
    """The tiny pretraining of this module in its own process, SIGKILLed once kill_when(event) is true."""
    return run_engine(pretrain_args(cohort / "images", out, cache, "--steps", str(STEPS), "--checkpoint-every",
                                    str(EVERY), "--progress", "json", *extra), kill_when)


def checkpoints(events: list[dict]) -> list[int]:
    return [e["step"] for e in events if e["event"] == "checkpoint"]


def at_step(step: int):
    return lambda e: e["event"] == "progress" and e.get("stage") == "pretrain" and e["step"] == step


def resumed_at(events: list[dict]) -> int:
    message = next(e["message"] for e in events if e["event"] == "info" and "resuming at step" in e["message"])
    return int(message.split("resuming at step ")[1].split()[0])


def test_sigkill_at_any_moment_resumes_at_the_last_checkpoint_and_ends_like_a_straight_run(cohort, tmp_path):
    cache = tmp_path / "cache"
    code, straight_events, err = train(cohort, tmp_path / "straight", cache)
    assert code == 0, err
    assert checkpoints(straight_events) == [4, 8, 12]

    out = tmp_path / "killed"
    # 1. killed before its first checkpoint: nothing to resume, and the message says what works instead
    code, _, _ = train(cohort, out, cache, kill_when=at_step(2))
    assert code == -signal.SIGKILL
    code, events, _ = train(cohort, out, cache, "--resume")
    error = events[-1]
    assert code == 1 and error["event"] == "error"
    assert "nothing to resume" in error["message"] and "--overwrite instead of --resume" in error["message"]
    # 2. killed right after a checkpoint event
    code, events, _ = train(cohort, out, cache, "--overwrite", kill_when=lambda e: e["event"] == "checkpoint")
    assert code == -signal.SIGKILL
    first = max(checkpoints(events))
    # 3. killed between checkpoints, after the resumed run wrote one of its own
    code, events, _ = train(cohort, out, cache, "--resume", kill_when=at_step(first + EVERY + 2))
    assert code == -signal.SIGKILL and resumed_at(events) == first
    second = max(checkpoints(events))
    assert second == first + EVERY
    # 4. an interrupted checkpoint write left an empty temporary file: cleared when the next run starts
    stale = out / "checkpoints" / ".tmp-12345-deadbeef-latest.pt"
    stale.write_bytes(b"")
    code, events, err = train(cohort, out, cache, "--resume")
    assert code == 0, err
    assert resumed_at(events) == second and not stale.exists()

    straight, killed = load_file(str(tmp_path / "straight" / "model.safetensors")), load_file(
        str(out / "model.safetensors"))
    assert straight.keys() == killed.keys()
    assert all(straight[k].equal(killed[k]) for k in straight), "the resumed run's weights differ"
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    reference = [json.loads(line) for line in (tmp_path / "straight" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, STEPS + 1))  # every step once: log and checkpoint agree
    assert [r["loss"] for r in log] == [r["loss"] for r in reference]


def test_a_log_file_gets_every_warning_and_progress_lines(cohort, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    good = sorted((cohort / "images").iterdir())[0]
    (scans / good.name).write_bytes(good.read_bytes())
    (scans / "truncated.nii.gz").write_bytes(good.read_bytes()[:2000])
    log = tmp_path / "run.log"
    args = pretrain_args(scans, tmp_path / "out", tmp_path / "cache", "--steps", "3")
    with open(log, "w") as stderr:  # like `pgl pretrain ... 2>run.log` under cron or SLURM
        code = subprocess.run([sys.executable, "-m", "pgl_engine", *args], env=ENV, stderr=stderr,
                              stdout=subprocess.DEVNULL, timeout=300).returncode
    text = log.read_text()
    assert code == 0, text
    assert "warning: skipped 1 unreadable file(s)" in text and "truncated.nii.gz" in text
    assert "info: 1 scans ready" in text
    assert "progress: pretrain 1/3 (33%)" in text and "progress: pretrain 3/3 (100%)" in text
    assert text.rstrip().splitlines()[-1].startswith("done: ")
