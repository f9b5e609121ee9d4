"""Pretraining throughput: PGL views/s against a supervised step of the same backbone (patches/s), one run.

Also measures how long the data loader makes the training loop wait, with the cache warm.
Usage: python benchmarks/pretrain_throughput.py [--steps 20] [--device cpu] [--workers 2] [--rank-every 10]
Writes benchmarks/results/pretrain_throughput.json and prints a summary.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from monai.losses import DiceCELoss
from torch import nn

from pgl_engine.config import PretrainConfig
from pgl_engine.models.networks import build_backbone
from pgl_engine.phantoms.tuning import write_cohort
from pgl_engine.pretraining.trainer import Pretrainer, prepare_scans


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_pgl(trainer: Pretrainer, loader, steps: int, warmup: int) -> dict:
    """Mean compute time per step and mean loader wait per step (after warm-up steps)."""
    compute, wait = [], []
    batches = iter(loader)
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        batch = next(batches)
        t1 = time.perf_counter()
        trainer.train_step(batch)
        sync(trainer.device)
        t2 = time.perf_counter()
        if i >= warmup:
            wait.append(t1 - t0)
            compute.append(t2 - t1)
    return {"compute_s": sum(compute) / steps, "wait_s": sum(wait) / steps}


def time_supervised(config: PretrainConfig, device: torch.device, patches: int, steps: int, warmup: int) -> float:
    """Mean time of a plain supervised step (backbone + 1x1 head, DiceCE, AdamW) on random patches."""
    torch.manual_seed(0)
    net = nn.Sequential(build_backbone(config.network), nn.Conv3d(config.network.feature_channels, 6, 1)).to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    x = torch.rand(patches, 1, *config.patch_size, device=device)
    y = torch.randint(0, 6, (patches, 1, *config.patch_size), device=device)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            loss = loss_fn(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return sum(times) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=2, help="view pairs per PGL step")
    parser.add_argument("--patch-size", type=int, nargs=3, default=(48, 48, 32))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rank-every", type=int, default=PretrainConfig.rank_every,
                        help="pgl pretrain --rank-every: measure the effective rank every N steps (1 = every step)")
    parser.add_argument("--work-dir", default="", help="where the phantom cohort and cache go (default: temp)")
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "pretrain_throughput.json"),
                        help="where the figures go")
    args = parser.parse_args()

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="pgl_bench_"))
    if not (work / "images").is_dir():
        write_cohort(work, 6, seed=100, spacing_scale=2.0)
    config = PretrainConfig(images=str(work / "images"), out=str(work / "run"), cache_dir=str(work / "cache"),
                            steps=args.warmup + args.steps, batch_size=args.batch_size,
                            patch_size=tuple(args.patch_size), spacing=(3.2, 3.2, 6.0), device=args.device,
                            workers=args.workers, rank_every=args.rank_every, overwrite=True)
    prepare_scans(config, None)  # warm the cache: the loader then reads memory-mapped arrays only
    trainer = Pretrainer(config)
    trainer.model = trainer.prepare().to(trainer.device)
    trainer.forward_model = trainer.world.wrap(trainer.model, trainer.device)
    trainer.build_optimizer()
    loader = trainer.batches(0)
    pgl = time_pgl(trainer, loader, args.steps, args.warmup)
    views = 2 * config.batch_size
    supervised_s = time_supervised(config, trainer.device, views, args.steps, args.warmup)
    step_s = pgl["compute_s"] + pgl["wait_s"]
    result = {
        "device": str(trainer.device), "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "patch_size": list(config.patch_size), "network_channels": list(config.network.channels),
        "views_per_step": views, "workers": config.workers, "rank_every": config.rank_every,
        "pgl_views_per_s": views / pgl["compute_s"], "pgl_views_per_s_with_loader": views / step_s,
        "supervised_patches_per_s": views / supervised_s,
        "ratio": (views / pgl["compute_s"]) / (views / supervised_s),
        "loader_wait_fraction": pgl["wait_s"] / step_s,
        "pgl_step_s": pgl["compute_s"], "supervised_step_s": supervised_s,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"\nPGL {result['pgl_views_per_s']:.2f} views/s vs supervised {result['supervised_patches_per_s']:.2f} "
          f"patches/s: ratio {result['ratio']:.2f} (ideal ~0.75); loader wait {100 * result['loader_wait_fraction']:.1f}% "
          f"of step time (patch {config.patch_size}, {result['device']}, {result['threads']} threads)")


if __name__ == "__main__":
    main()
