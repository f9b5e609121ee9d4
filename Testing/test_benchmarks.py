"""The benchmark scripts still run against the engine (tiny sizes; the figures themselves are not tested)."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_pretrain_throughput_benchmark_runs(tmp_path):
    out = tmp_path / "figures.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "pretrain_throughput.py"), "--steps", "1",
                    "--warmup", "0", "--patch-size", "16", "16", "16", "--workers", "0", "--device", "cpu",
                    "--work-dir", str(tmp_path / "work"), "--json", str(out)], check=True, cwd=ROOT,
                   capture_output=True, timeout=300)
    figures = json.loads(out.read_text())
    assert figures["device"] == "cpu" and figures["pgl_step_s"] > 0 and figures["supervised_step_s"] > 0
    assert 0 <= figures["loader_wait_fraction"] < 1


@pytest.mark.slow
def test_finetune_speed_benchmark_gives_curves_per_init_and_budget(tmp_path):
    out = tmp_path / "figures.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "finetune_speed.py"), "--quick", "--minutes", "0.03",
                    "0.06", "--seeds", "1", "--points", "3", "--out", str(tmp_path / "work"), "--json", str(out),
                    "--plot", str(tmp_path / "curves.png"), "--patience", "0", "2"], check=True, cwd=ROOT,
                   capture_output=True, timeout=600)
    figures = json.loads(out.read_text())
    runs = [r for r in figures["runs"] if r["patience"] == 0]
    assert sorted((r["init"], r["minutes"]) for r in runs) == [("pgl", 0.03), ("pgl", 0.06), ("random", 0.03),
                                                               ("random", 0.06)]
    assert len(figures["runs"]) == 8  # the same runs again with --patience 2
    for run in figures["runs"]:
        times = [p["training_s"] for p in run["curve"]]
        assert len(times) >= 2 and times == sorted(times) and run["curve"][-1]["step"] == run["steps"]
        assert all(0 <= p["dice"] <= 1 for p in run["curve"])
    summary = figures["summary"]
    assert set(summary["budgets"]) == {"0.03", "0.06"} and set(summary["converged_dice"]) == {"random", "pgl"}
    against_plain = summary["patience_against_plain"]["2"]
    assert set(against_plain) == {"0.03min random", "0.03min pgl", "0.06min random", "0.06min pgl"}
    assert all(row["runs"] == 1 and row["dice_minus_plain"]["n"] == 1 for row in against_plain.values())
    assert all(set(replayed) == {"2", "3", "5", "10"} for replayed in summary["plateau_replay"].values())
    assert (tmp_path / "curves.png").stat().st_size > 1000


@pytest.mark.slow
def test_finetune_speed_benchmark_runs_a_lever_in_its_own_folder(tmp_path):
    """--finetune-option reaches every fine-tuning (the model records it) and keeps its runs apart from the plain."""
    out, work = tmp_path / "figures.json", tmp_path / "work"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "finetune_speed.py"), "--quick", "--minutes", "0.03",
                    "--seeds", "1", "--points", "2", "--inits", "random", "--out", str(work), "--json", str(out),
                    "--finetune-option", "batch_size=1", "--finetune-option", "patch_size=[24,24,16]"],
                   check=True, cwd=ROOT, capture_output=True, timeout=600)
    figures = json.loads(out.read_text())
    assert figures["settings"]["finetune_options"] == {"batch_size": 1, "patch_size": [24, 24, 16]}
    (run,) = figures["runs"]
    folder = work / "runs" / "0.03min" / "auto" / "batch_size1-patch_size24x24x16" / "seed0" / "random"
    metadata = json.loads((folder / "model" / "pgl_model.json").read_text())
    assert metadata["patch_size"] == [24, 24, 16] and metadata["training"]["batch_size"] == 1
    assert json.loads((folder / "result.json").read_text())["steps"] == run["steps"]
    # a PGL model brings its own network: a network lever beside PGL init is refused before any work
    refused = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "finetune_speed.py"), "--quick",
                              "--out", str(tmp_path / "refused"), "--finetune-option", 'network={"channels":[4,8]}'],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "--inits random" in refused.stderr and not (tmp_path / "refused").exists()
    misspelt = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "finetune_speed.py"), "--quick",
                               "--out", str(tmp_path / "misspelt"), "--finetune-option", "batchsize=1"],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert misspelt.returncode == 2 and "['batchsize'] unknown" in misspelt.stderr
    assert not (tmp_path / "misspelt").exists()


def test_a_plain_runs_training_log_replays_where_patience_would_have_ended_it(tmp_path):
    spec = importlib.util.spec_from_file_location("finetune_speed", ROOT / "benchmarks" / "finetune_speed.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    # the training Dice rises for 300 steps, then stays flat: each check (every 50 steps) after that gains nothing
    log = tmp_path / "train_log.jsonl"
    log.write_text("".join(json.dumps({"step": s, "total": 2000, "train_dice": min(s, 300) / 400}) + "\n"
                           for s in range(1, 2001)))
    assert benchmark.replay_plateau(log, 2) == 450  # the check at 350 still gains (on 251-300); 400, 450 are flat
    assert benchmark.replay_plateau(log, 5) == 600
    assert benchmark.replay_plateau(log, 40) is None  # the run ends before 40 flat checks


@pytest.mark.slow
def test_startup_benchmark_times_the_segment_imports_against_torch_and_an_earlier_commit(tmp_path):
    out = tmp_path / "startup.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "startup.py"), "--repeats", "1", "--against", "HEAD",
                    "--json", str(out)], check=True, cwd=ROOT, capture_output=True, timeout=300)
    figures = json.loads(out.read_text())
    assert set(figures["median_s"]) == {"torch", "segment", "segment at HEAD"}
    assert all(t > 0 for t in figures["median_s"].values())
    assert "pgl_engine.inference.segmentation" in figures["engine_modules"]["segment"]
    assert "pgl_engine.comparison.experiment" not in figures["engine_modules"]["segment"]
