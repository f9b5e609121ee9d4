"""`pgl segment` end to end on a 512 x 512 x 200 CT (0.78 x 0.78 x 2.5 mm): a model of the configuration a 2-core
CPU is now given for the default budget (3.2 x 3.2 x 6 mm, patches 48 x 48 x 32, the narrow UNet) against one of
the fixed configuration before it (1.5 x 1.5 x 3 mm, 64 x 64 x 32, the wide UNet), in the same run, alternating,
each `pgl segment` in its own process at the given precision. Untrained models: weights do not change the time
(the Dice of each configuration comes from benchmarks/heldout_baseline.py).

Usage: python benchmarks/segment_speedup.py [--repeats 2] [--precision fp32] [--device cpu]
Writes benchmarks/results/segment_speedup.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from heldout_baseline import cpu_model  # noqa: E402
from segment_end_to_end import make_input, make_model, run_segment  # noqa: E402

from pgl_engine.config import WIDE_NETWORK, NetworkConfig  # noqa: E402
from pgl_engine.training.precision import cpu_has_native_bf16  # noqa: E402

MODELS = {"chosen": ((3.2, 3.2, 6.0), (48, 48, 32), NetworkConfig()),
          "former": ((1.5, 1.5, 3.0), (64, 64, 32), WIDE_NETWORK)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--precision", default="fp32", help="pgl segment --precision (default: fp32, the "
                                                            "arithmetic of a CPU without native bf16)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="pgl_segment_speedup_"))
    image = work / "ct.nii.gz"
    make_input(image)
    for name, (spacing, patch, network) in MODELS.items():
        make_model(work / name, "instance", spacing, patch, network)
    runs = {name: [] for name in MODELS}
    for _ in range(args.repeats):
        for name in MODELS:
            result = run_segment(work / name, image, work / f"{name}.nii.gz", args.device,
                                 "--precision", args.precision)
            runs[name].append(result)
            print(f"{name}: {result['wall_s']:.1f} s", flush=True)
    best = {name: min(r["wall_s"] for r in results) for name, results in runs.items()}
    figures = {"cpu": cpu_model(), "native_bf16": cpu_has_native_bf16(), "precision": args.precision,
               "device": args.device, "wall_s": runs, "best_wall_s": best,
               "speedup": round(best["former"] / best["chosen"], 2)}
    out = ROOT / "benchmarks" / "results" / "segment_speedup.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2))
    print(json.dumps({k: v for k, v in figures.items() if k != "wall_s"}, indent=2))
    return figures


if __name__ == "__main__":
    main()
