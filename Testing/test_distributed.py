"""Data-parallel pretraining with torchrun on CPU (gloo): real processes, real process groups."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config

from pgl_engine import load_model, pretrain
from pgl_engine.data.cache import ScanCache
from pgl_engine.data.imaging import list_scans
from pgl_engine.training.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow  # torchrun: real processes and process groups

ROOT = Path(__file__).resolve().parents[1]
DDP_PROBE = ROOT / "Testing" / "helpers" / "ddp_probe.py"
ONE_THREAD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    result = subprocess.run(command, capture_output=True, text=True, env=ONE_THREAD_ENV, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def probe(tmp_path, cohort, name, nproc, **overrides):
    """Pretrain under torchrun and return each rank's final state dict."""
    config = tiny_config(cohort / "images", tmp_path / name, tmp_path / "cache", **overrides)
    (tmp_path / f"{name}.json").write_text(json.dumps(config.to_dict()))
    torchrun(nproc, str(DDP_PROBE), str(tmp_path / f"{name}.json"), str(tmp_path / f"{name}_ranks"))
    return [torch.load(tmp_path / f"{name}_ranks" / f"rank{r}.pt") for r in range(nproc)]


def flat(state, prefix):
    return torch.cat([v.flatten().float() for k, v in state.items() if k.startswith(prefix)])


def test_two_processes_train_one_model_and_rank0_writes(tmp_path, cohort):
    rank0, rank1 = probe(tmp_path, cohort, "ddp", 2, steps=10, batch_size=1, lr=3e-3)
    assert rank0.keys() == rank1.keys()
    for name in rank0:  # online, target and their BatchNorm statistics alike
        assert torch.equal(rank0[name], rank1[name]), name
    log = [json.loads(line) for line in (tmp_path / "ddp" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 11))  # one writer
    losses = [r["loss"] for r in log]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    assert sorted(p.name for p in (tmp_path / "ddp" / "checkpoints").iterdir()) == ["latest.pt"]
    training = load_model(tmp_path / "ddp").metadata["training"]
    assert training["processes"] == 2 and training["effective_batch_size"] == 2


def test_two_processes_of_batch_b_match_one_process_of_batch_2b(tmp_path, cohort):
    two = probe(tmp_path, cohort, "two", 2, steps=4, batch_size=1)[0]
    one = probe(tmp_path, cohort, "one", 1, steps=4, batch_size=2)[0]
    other_seed = probe(tmp_path, cohort, "seed", 1, steps=4, batch_size=2, seed=5)[0]
    for prefix in ("online_backbone.", "target_backbone."):
        reference = flat(one, prefix)
        gap = float((flat(two, prefix) - reference).norm() / reference.norm())
        seed_gap = float((flat(other_seed, prefix) - reference).norm() / reference.norm())
        # the same samples and gradients; only BatchNorm statistics are per process on CPU
        assert gap < 0.1 and gap < 0.1 * seed_gap, (prefix, gap, seed_gap)


def test_cli_under_torchrun_then_resume_with_one_process(tmp_path, cohort):
    out = tmp_path / "run"
    torchrun(2, "-m", "pgl_engine", "pretrain", "--images", str(cohort / "images"), "--out", str(out),
             "--cache-dir", str(tmp_path / "cache"), "--steps", "4", "--batch-size", "1", "--patch-size", "16",
             "--spacing", "8", "--grid-size", "4", "--workers", "0", "--feature-channels", "8", "--channels", "4",
             "8", "16", "--strides", "2", "2", "--device", "cpu", "--lr-scaling", "linear", "--progress", "json")
    state = load_checkpoint(out)
    assert state["step"] == 4
    assert load_model(out).metadata["training"]["effective_lr"] == pytest.approx(2e-3)
    config = tiny_config(cohort / "images", out, tmp_path / "cache", steps=7, resume=True, batch_size=1)
    pretrain(config)
    assert load_checkpoint(out)["step"] == 7
    assert load_model(out).metadata["training"]["processes"] == 1


def test_two_runs_filling_one_cache_at_once_leave_it_consistent(tmp_path, cohort):
    cache = tmp_path / "shared_cache"
    script = ("import sys; from pgl_engine.data.cache import ScanCache, cache_scans; "
              "from pgl_engine.data.imaging import list_scans; "
              "c = ScanCache(sys.argv[1], (8.0, 8.0, 8.0), (-1024.0, 325.0)); cache_scans(list_scans(sys.argv[2]), c)")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(cache), str(cohort / "images")], env=ONE_THREAD_ENV)
             for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert not [p for p in cache.rglob("*") if p.name.startswith(".tmp-")]
    fresh = ScanCache(tmp_path / "fresh", (8.0, 8.0, 8.0), (-1024.0, 325.0))
    shared = ScanCache(cache, (8.0, 8.0, 8.0), (-1024.0, 325.0))
    for path in list_scans(cohort / "images"):
        entry = shared.get(path)
        assert np.array_equal(entry.load(), fresh.get(path).load())
    assert shared.misses == 0
