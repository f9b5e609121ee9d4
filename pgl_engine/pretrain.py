"""`pgl pretrain`: self-supervised pretraining loop (PGL or BYOL) with resumable checkpoints."""
from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .cache import CachedScan, ScanCache, cache_scans, data_fingerprint
from .checkpoint import load_checkpoint, save_checkpoint
from .config import PretrainConfig
from .dataset import ViewPairDataset, make_loader
from .ema import ema_momentum, ema_update
from .errors import PGLError, TrainingInterrupted
from .imaging import list_scans
from .interrupt import StopRequest
from .methods import SelfSupervisedMethod, build_method
from .model_store import prepare_output_dir, save_model
from .progress import EtaClock, ProgressCallback, emit

# options that may differ when resuming; all others are taken from the checkpoint
RUNTIME_OPTIONS = {"steps", "device", "workers", "checkpoint_every", "cache_dir", "resume", "overwrite", "images",
                   "out"}
LOG_FILE = "train_log.jsonl"


def resolve_device(name: str) -> torch.device:
    """auto -> cuda, then mps, then cpu; a clear error if the requested one is absent."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PGLError("--device cuda: no CUDA GPU is visible to PyTorch; use --device cpu or auto.")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise PGLError("--device mps: Apple MPS is not available here; use --device cpu or auto.")
    return torch.device(name)


def warmup_cosine(warmup: int, total: int):
    """Learning-rate factor: linear warm-up, then cosine decay to 0 at `total`."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return factor


def prepare_scans(config: PretrainConfig, progress: ProgressCallback | None) -> list[CachedScan]:
    """Decode every scan once into the cache; skip and list unreadable ones."""
    paths = list_scans(config.images)
    cache = ScanCache(config.cache_dir or None, config.spacing, config.hu_window)
    scans, skipped = cache_scans(
        paths, cache, lambda i, n, p: emit(progress, "progress", stage="preprocess", step=i, total=n, file=p.name))
    if skipped:
        emit(progress, "warning", message=f"skipped {len(skipped)} unreadable file(s):\n  " + "\n  ".join(skipped),
             skipped=skipped)
    if not scans:
        raise PGLError(f"{config.images}: none of the {len(paths)} file(s) could be read as a 3D scan:\n  "
                       + "\n  ".join(skipped))
    emit(progress, "info", message=f"{len(scans)} scans ready ({cache.hits} from cache, {cache.misses} decoded)",
         cache_hits=cache.hits, cache_misses=cache.misses)
    return scans


class Pretrainer:
    """Owns one pretraining run: model, optimiser, schedule, checkpoints and the step loop."""

    def __init__(self, config: PretrainConfig, progress: ProgressCallback | None = None,
                 resume_state: dict | None = None):
        self.config = config
        self.resume_state = resume_state
        self.progress = progress
        self.out = Path(config.out)
        self.device = resolve_device(config.device)
        self.step = 0
        self.ranks: list[float] = []
        self.rank_warned = False

    # --- setup -------------------------------------------------------------------------------------
    def build(self) -> None:
        torch.manual_seed(self.config.seed)
        self.method: SelfSupervisedMethod = build_method(self.config).to(self.device)
        self.optimizer = torch.optim.AdamW(self.method.trainable_parameters(), lr=self.config.lr,
                                           weight_decay=self.config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(self.config.effective_warmup, self.config.steps))
        self.amp = self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

    def checkpoint_state(self) -> dict:
        return {"step": self.step, "method": self.config.method, "config": self.config.to_dict(),
                "model": self.method.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "ranks": list(self.ranks), "engine_version": __version__}

    def restore(self, state: dict) -> None:
        self.method.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.ranks = list(state.get("ranks", []))

    # --- one step ------------------------------------------------------------------------------------
    def train_step(self, batch: dict) -> tuple[float, dict]:
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        self.method.train()
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.amp else nullcontext()
        with autocast:
            loss, stats = self.method(batch)
        if not torch.isfinite(loss):
            raise PGLError(
                f"the loss became {float(loss.detach())} at step {self.step + 1}; training stopped. The last good "
                f"checkpoint in {self.out / 'checkpoints'} is kept. Resume with a lower --lr, or check the scans "
                f"for extreme values (--hu-window).")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        # the target follows only after a real optimiser step
        tau = ema_momentum(self.step, self.config.steps, self.config.ema_start)
        ema_update(self.method.ema_pairs(), tau)
        self.step += 1
        return float(loss.detach()), {**stats, "tau": tau}

    def check_rank(self, rank: float) -> None:
        """Warn once when the aligned features collapse onto a few dimensions."""
        channels = self.config.network.feature_channels
        if (not self.rank_warned and self.step > self.config.effective_warmup
                and rank < self.config.rank_warning * channels):
            self.rank_warned = True
            emit(self.progress, "warning", step=self.step, effective_rank=rank,
                 message=f"feature collapse: effective rank {rank:.1f} of {channels} at step {self.step}. "
                         f"Fine-tuning from collapsed features can be worse than random init; raise "
                         f"--anti-collapse-weight, --ema-start or --predictor-hidden.")

    # --- the loop --------------------------------------------------------------------------------------
    def run(self) -> Path:
        config = self.config
        prepare_output_dir(self.out, config.resume, config.overwrite)
        scans = prepare_scans(config, self.progress)
        self.build()
        if config.resume:
            self.restore(self.resume_state or load_checkpoint(self.out))
            self.resume_state = None
            emit(self.progress, "info", message=f"resuming at step {self.step} of {config.steps}")
        dataset = ViewPairDataset(scans, config.patch_size, config.scale_range, config.min_overlap, config.seed,
                                  length=config.steps * config.batch_size, nonmonotone_p=config.nonmonotone_p)
        loader = make_loader(dataset, config.batch_size, self.step, config.steps, config.workers)
        clock, wait_total, started = EtaClock(self.step), 0.0, time.perf_counter()
        log = open(self.out / LOG_FILE, "a")
        try:
            with StopRequest() as stop:
                batches = iter(loader)
                while self.step < config.steps:
                    t0 = time.perf_counter()
                    batch = next(batches)
                    wait = time.perf_counter() - t0
                    wait_total += wait
                    loss, stats = self.train_step(batch)
                    self.ranks.append(stats["effective_rank"])
                    record = {"step": self.step, "total": config.steps, "loss": loss,
                              "lr": self.scheduler.get_last_lr()[0], **stats,
                              "data_wait_s": wait, "step_s": time.perf_counter() - t0}
                    log.write(json.dumps(record) + "\n")
                    emit(self.progress, "progress", stage="pretrain", eta_s=clock.eta(self.step, config.steps),
                         **record)
                    self.check_rank(stats["effective_rank"])
                    if stop.requested:
                        path = save_checkpoint(self.out, self.checkpoint_state())
                        emit(self.progress, "cancelled", step=self.step, checkpoint=str(path))
                        raise TrainingInterrupted(f"stopped at step {self.step}; checkpoint saved to {path}. "
                                                  f"Continue with --resume.", str(path), self.step)
                    if self.step % config.checkpoint_every == 0 and self.step < config.steps:
                        save_checkpoint(self.out, self.checkpoint_state())
        finally:
            log.close()
        save_checkpoint(self.out, self.checkpoint_state())
        elapsed = time.perf_counter() - started
        self.save(scans)
        emit(self.progress, "done", model_dir=str(self.out), steps=self.step, seconds=elapsed,
             effective_rank=self.final_rank(), data_wait_fraction=wait_total / max(elapsed, 1e-9))
        return self.out

    def final_rank(self) -> float:
        recent = self.ranks[-10:]
        return float(np.mean(recent)) if recent else float("nan")

    def save(self, scans: list[CachedScan]) -> None:
        config = self.config
        tensors = {f"backbone.{k}": v for k, v in self.method.online_backbone.state_dict().items()}
        training = {k: v for k, v in config.to_dict().items() if k not in RUNTIME_OPTIONS | {"network"}}
        metadata = {
            "kind": "pretrained", "method": config.method, "network": config.network.to_dict(),
            "spacing": list(config.spacing), "hu_window": list(config.hu_window),
            "patch_size": list(config.patch_size), "labels": {},
            "training": {**training, "steps": self.step, "effective_batch_size": config.batch_size},
            "effective_rank": self.final_rank(), "feature_channels": config.network.feature_channels,
            "data_fingerprint": data_fingerprint(scans), "num_scans": len(scans),
            "engine_version": __version__, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        save_model(self.out, tensors, metadata)


def merge_resume_config(config: PretrainConfig, saved: dict, progress: ProgressCallback | None) -> PretrainConfig:
    """On --resume, keep the checkpoint's training settings (`saved`); only runtime options may change."""
    current = config.to_dict()
    changed = sorted(k for k in saved if k not in RUNTIME_OPTIONS and current.get(k) != saved[k])
    if changed:
        emit(progress, "warning", message="resuming with the checkpoint's settings; ignored: "
             + ", ".join(f"{k}={current[k]} (checkpoint: {saved[k]})" for k in changed))
    merged = {**saved, **{k: current[k] for k in RUNTIME_OPTIONS}}
    return PretrainConfig.from_dict(merged)


def pretrain(config: PretrainConfig | None = None, progress: ProgressCallback | None = None, **options) -> Path:
    """Pretrain a backbone on a folder of unlabeled scans; returns the model folder.

    Give a PretrainConfig or its fields as keyword arguments (`pretrain(images=..., out=..., steps=...)`);
    `progress` receives one dict per event (see progress.py).
    """
    config = replace(config, **options) if config is not None else PretrainConfig(**options)
    state = None
    if config.resume:
        state = load_checkpoint(config.out)
        config = merge_resume_config(config, state["config"], progress)
    return Pretrainer(config, progress, state).run()
