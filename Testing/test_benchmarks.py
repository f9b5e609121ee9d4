"""The benchmark scripts still run against the engine (tiny sizes; the figures themselves are not tested)."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_pretrain_throughput_benchmark_runs(tmp_path):
    out = tmp_path / "figures.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "pretrain_throughput.py"), "--steps", "1",
                    "--warmup", "0", "--patch-size", "16", "16", "16", "--workers", "0", "--device", "cpu",
                    "--work-dir", str(tmp_path / "work"), "--json", str(out)], check=True, cwd=ROOT,
                   capture_output=True, timeout=300)
    figures = json.loads(out.read_text())
    assert figures["device"] == "cpu" and figures["pgl_step_s"] > 0 and figures["supervised_step_s"] > 0
    assert 0 <= figures["loader_wait_fraction"] < 1


def test_finetune_speed_benchmark_gives_curves_per_init_and_budget(tmp_path):
    out = tmp_path / "figures.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "finetune_speed.py"), "--quick", "--minutes", "0.03",
                    "0.06", "--seeds", "1", "--points", "3", "--out", str(tmp_path / "work"), "--json", str(out),
                    "--plot", str(tmp_path / "curves.png")], check=True, cwd=ROOT, capture_output=True, timeout=600)
    figures = json.loads(out.read_text())
    runs = figures["runs"]
    assert sorted((r["init"], r["minutes"]) for r in runs) == [("pgl", 0.03), ("pgl", 0.06), ("random", 0.03),
                                                               ("random", 0.06)]
    for run in runs:
        times = [p["training_s"] for p in run["curve"]]
        assert len(times) >= 2 and times == sorted(times) and run["curve"][-1]["step"] == run["steps"]
        assert all(0 <= p["dice"] <= 1 for p in run["curve"])
    summary = figures["summary"]
    assert set(summary["budgets"]) == {"0.03", "0.06"} and set(summary["converged_dice"]) == {"random", "pgl"}
    assert (tmp_path / "curves.png").stat().st_size > 1000
