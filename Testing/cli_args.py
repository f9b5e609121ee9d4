"""Command lines of tiny `pgl` runs, for tests that run the engine as users do."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, SEG_NETWORK, PRETRAIN_NETWORK


def network_args(network: dict) -> list[str]:
    return ["--feature-channels", str(network["feature_channels"]), "--channels", *map(str, network["channels"]),
            "--strides", *map(str, network["strides"]), "--num-res-units", str(network["num_res_units"])]


def pretrain_args(images: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    """A pretraining of 2 steps (more with --steps in `extra`) on 8 mm voxels with the tiny network."""
    return ["pretrain", "--images", str(images), "--out", str(out), "--cache-dir", str(cache), "--steps", "2",
            "--batch-size", "2", "--patch-size", "16", "16", "16", "--spacing", "8", "8", "8", "--grid-size", "6",
            "--workers", "0", "--projector-hidden", "16", "--predictor-hidden", "16", "--projector-dim", "8",
            "--device", "cpu", *network_args(PRETRAIN_NETWORK), *extra]


def finetune_args(images: Path, labels: Path, out: Path, cache: Path, *extra: str, network: bool = True) -> list[str]:
    """A fine-tuning of 2 steps on 6 x 6 x 8 mm voxels (the network from --init when network=False)."""
    return ["finetune", "--images", str(images), "--labels", str(labels), "--out", str(out), "--cache-dir",
            str(cache), "--steps", "2", "--patch-size", "32", "32", "16", "--spacing", "6", "6", "8", "--workers",
            "0", "--device", "cpu", *(network_args(SEG_NETWORK) if network else []), *extra]


def run_engine(args: list[str], kill_when=None, timeout: float = 300) -> tuple[int, list[dict], str]:
    """`python -m pgl_engine ARGS` (with --progress json) in its own process; SIGKILL it as soon as
    kill_when(event) is true. Returns the exit code, every JSON event it printed (also those still in the pipe
    when it was killed) and its stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "pgl_engine", *args], env={**os.environ, "PYTHONPATH": str(ROOT)},
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    events = []
    for line in proc.stdout:
        events.append(json.loads(line))
        if kill_when and kill_when(events[-1]):
            proc.send_signal(signal.SIGKILL)
            break
    rest, err = proc.communicate(timeout=timeout)
    return proc.returncode, events + [json.loads(line) for line in rest.splitlines()], err
