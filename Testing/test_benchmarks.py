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
