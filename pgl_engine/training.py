"""The generic training loop shared by pretraining and fine-tuning.

A run owns its model, optimiser, schedule, checkpoints and log; subclasses provide the data, the loss and
what to save. The loop: next batch -> loss -> finite check -> optimiser step -> hooks -> log and events ->
checkpoint. Ctrl-C / SIGTERM save a checkpoint between steps; a non-finite loss keeps the last good one.
"""
from __future__ import annotations

import copy
import errno
import json
import math
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from . import __version__
from .atomic import disk_full_message, write_text_atomically
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .contract import CHECKPOINT_DIR
from .distributed import World
from .errors import DiskFull, PGLError, TrainingInterrupted
from .interrupt import StopRequest
from .model_store import LOG_FILE, prepare_output_dir, refuse_foreign_output
from .precision import autocast, training_dtype
from .progress import EtaClock, ProgressCallback, emit
from .run_lock import RunLock
from .time_budget import LOADER_STEPS, PROVISIONAL_STEPS, StepPlanner

# bf16 autocast has no loss scaling: an update whose loss or gradients overflow is skipped (as fp16's GradScaler
# skips it); only this many in a row stop training
BF16_SKIP_LIMIT = 5

# options that may differ when resuming; all others are taken from the checkpoint
RUNTIME_OPTIONS = {"steps", "device", "workers", "checkpoint_every", "cache_dir", "resume", "overwrite", "images",
                   "out", "labels", "dataset", "init", "lr_scaling", "precision", "rank_every"}


def resolve_device(name: str) -> torch.device:
    """auto -> cuda, then mps, then cpu; a clear error if the requested one is absent."""
    mps = getattr(torch.backends, "mps", None)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps and mps.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PGLError("--device cuda: no CUDA GPU is visible to PyTorch; use --device cpu or auto.")
    if name == "mps" and not (mps and mps.is_available()):
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


def delayed(schedule, delay: int):
    """Learning-rate factor that is 0 for the first `delay` steps, then follows `schedule` from its step 0."""
    def factor(step: int) -> float:
        return 0.0 if step < delay else schedule(step - delay)
    return factor


def merge_resume_config(config: TrainConfig, saved: dict, progress: ProgressCallback | None) -> TrainConfig:
    """On --resume keep the checkpoint's training settings (`saved`); only runtime options may change."""
    current = config.to_dict()
    changed = sorted(k for k in saved if k not in RUNTIME_OPTIONS and k in current and current[k] != saved[k])
    if changed:
        emit(progress, "warning", message="resuming with the checkpoint's settings; ignored: "
             + ", ".join(f"{k}={current[k]} (checkpoint: {saved[k]})" for k in changed))
    # a setting the checkpoint predates takes the value that reproduces the run it was part of
    before = {k: v for k, v in config.DEFAULTS_BEFORE_OPTION_EXISTED.items() if k not in saved}
    runtime = {k: current[k] for k in RUNTIME_OPTIONS if k in current}
    if saved.get("minutes"):
        runtime.pop("steps", None)  # a time budget's step count was planned by the run: it is kept
    return type(config).from_dict({**before, **saved, **runtime})


class TrainingRun:
    """One training run; subclasses fill in the hooks below."""

    stage = "train"
    cpu_bf16 = False  # whether --precision auto trains this stage in bf16 on CPUs with native bf16

    def __init__(self, config: TrainConfig, progress: ProgressCallback | None = None,
                 resume_state: dict | None = None):
        self.config = config
        self.progress = progress
        self.resume_state = resume_state
        self.out = Path(config.out)
        self.world = World.from_environment()
        self.device = self.world.device(resolve_device(config.device))
        self.progress = progress if self.world.is_main else None  # only rank 0 reports
        self.step = 0
        self.stop = StopRequest()
        self.planning = False  # the step count is being set from a time budget (time_budget_s)
        self.planned = False  # ... and was set (kept by checkpoints, so a resumed run keeps its plan)
        self.excluded_s = 0.0  # seconds inside the loop that the time budget does not count (a benchmark's own)
        self.prepare_s = self.train_s = self.loop_started = 0.0
        self.loop_start_step = 0
        self.planner: StepPlanner | None = None  # fits the step count to a time budget while it is planning
        self.skipped_in_row = self.skipped = 0  # bf16 updates skipped for overflow (BF16_SKIP_LIMIT)

    # --- hooks -------------------------------------------------------------------------------------------
    def prepare(self) -> nn.Module:
        """Read the data and build the model; return the module holding every trained weight."""
        raise NotImplementedError

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        return self.model.parameters()

    def parameter_groups(self) -> list[dict]:
        """Optimiser parameter groups; a group's "lr_scale" multiplies the effective learning rate, and a group's
        "delay" holds it fixed for that many steps before its own warm-up and cosine over the remaining steps."""
        return [{"params": list(self.trainable_parameters())}]

    def batches(self, start_step: int) -> Iterable[dict]:
        raise NotImplementedError

    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def after_update(self) -> dict:
        """Called after each optimiser step (e.g. the EMA target update); returns extra statistics."""
        return {}

    def after_step(self, record: dict) -> None:
        """Called with each step's record (e.g. validation, collapse warning)."""

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def save_model(self) -> None:
        raise NotImplementedError

    def after_training(self) -> None:
        """Work on the saved model once training is over (main process only)."""

    def keep_on_stop(self) -> str:
        """On a stop request, after the checkpoint: keep what is usable so far; returns a sentence saying what
        was kept ("" for nothing). Main process only."""
        return ""

    def summary(self) -> dict:
        return {}

    def time_budget_s(self) -> float | None:
        """Seconds of training to fit the step count to (None: train --steps steps)."""
        return None

    # --- machinery ---------------------------------------------------------------------------------------
    @property
    def effective_lr(self) -> float:
        """The base learning rate scaled for the total batch over all processes (--lr-scaling)."""
        factor = {"none": 1.0, "linear": float(self.world.size), "sqrt": float(self.world.size) ** 0.5}
        return self.config.lr * factor[self.config.lr_scaling]

    def build_optimizer(self) -> None:
        spec = self.parameter_groups()
        groups = [{"params": g["params"], "lr": self.effective_lr * g.get("lr_scale", 1.0)} for g in spec]
        self.optimizer = torch.optim.AdamW(groups, lr=self.effective_lr, weight_decay=self.config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.schedules(spec))
        self.dtype = training_dtype(self.device, self.config.precision, self.cpu_bf16)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)

    def schedules(self, spec: list[dict]) -> list:
        """Each parameter group's learning-rate factor for the current --steps."""
        warmup, steps = self.config.effective_warmup, self.config.steps
        return [delayed(warmup_cosine(warmup, steps - g.get("delay", 0)), g.get("delay", 0)) for g in spec]

    def set_steps(self, total: int) -> None:
        """A new step count (from the time budget): the schedules stretch or shrink to it from the current step."""
        self.config = copy.copy(self.config)
        self.config.steps = int(total)
        self.scheduler.lr_lambdas = self.schedules(self.parameter_groups())

    @property
    def loader_steps(self) -> int:
        """How many steps the data loader is built for."""
        return LOADER_STEPS if self.planning else self.config.steps

    def checkpoint_state(self) -> dict:
        return {"step": self.step, "kind": self.stage, "config": self.config.to_dict(),
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "engine_version": __version__, "planned_steps": self.planned, **self.extra_state()}

    def restore(self, state: dict) -> None:
        if state.get("kind", self.stage) != self.stage:
            raise PGLError(f"{self.out}: holds a {state.get('kind')} checkpoint, not a {self.stage} one; "
                           f"resume it with the matching command.")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.planned = bool(state.get("planned_steps", False))
        self.load_extra_state(state)

    def train_step(self, batch: dict) -> tuple[float, dict]:
        batch = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        self.model.train()
        with autocast(self.device, self.dtype):
            loss, stats = self.compute_loss(batch)
        # one all-reduce tells every process the mean loss and whether any was asked to stop, so all of them
        # take the same decisions (a lone process raising or stopping would leave the others waiting)
        loss_sum, stops = self.world.sum([float(loss.detach()), float(self.stop.requested)], self.device)
        self.stop.requested = stops > 0
        mean_loss = loss_sum / self.world.size
        bf16 = self.dtype == torch.bfloat16
        if not math.isfinite(mean_loss) and not (bf16 and self.skipped_in_row + 1 < BF16_SKIP_LIMIT):
            raise PGLError(
                f"the loss became {mean_loss} at step {self.step + 1}; training stopped. The last good "
                f"checkpoint in {self.out / CHECKPOINT_DIR} is kept. Resume with a lower --lr, or check the scans "
                f"for extreme values (--hu-window)" + (", or train with --precision fp32." if bf16 else "."))
        self.optimizer.zero_grad(set_to_none=True)
        if math.isfinite(mean_loss):
            self.scaler.scale(loss).backward()
        if bf16 and not (math.isfinite(mean_loss) and self.gradients_finite()):
            self.skip_update(mean_loss)
        else:
            self.skipped_in_row = 0
            self.scaler.step(self.optimizer)
            self.scaler.update()
        with warnings.catch_warnings():
            # with mixed precision the scaler skips the first updates while it calibrates (inf gradients), which
            # PyTorch reports as the scheduler stepping first; the schedule follows the step count all the same
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before",
                                    category=UserWarning)
            self.scheduler.step()
        extra = self.after_update()
        self.world.average_buffers(self.model)
        self.step += 1
        return mean_loss, {**stats, **extra}

    def gradients_finite(self) -> bool:
        grads = [p.grad for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
        return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()) if grads else True

    def skip_update(self, loss: float) -> None:
        """Leave the weights as they are this step (bf16 overflow); the schedule moves on, as after a skipped
        fp16 update."""
        self.skipped_in_row += 1
        self.skipped += 1
        if self.skipped == 1:
            what = f"the loss was {loss}" if not math.isfinite(loss) else "the gradients overflowed"
            emit(self.progress, "warning", message=f"step {self.step + 1}: {what} in bf16, so this update was "
                                                   "skipped (more are counted in the model's training record)")

    def save_checkpoint(self) -> Path:
        if not self.world.is_main:
            return self.out
        path = save_checkpoint(self.out, self.checkpoint_state())
        emit(self.progress, "checkpoint", step=self.step, path=str(path))
        return path

    def run(self) -> Path:
        self.world.start(self.device)
        try:
            return self._run()
        finally:
            self.world.stop()

    def _run(self) -> Path:
        lock = RunLock(self.out, f"pgl {self.stage}", self.progress) if self.world.is_main else None
        if lock:  # only rank 0 writes, so only rank 0 holds the folder's lock
            refuse_foreign_output(self.out)
            lock.acquire()
        try:
            return self._run_locked()
        finally:
            if lock:
                lock.release()

    def follow_plan(self, planner: StepPlanner, elapsed_s: float) -> None:
        """Fit the step count to the time budget; every process takes rank 0's plan."""
        total = planner.observe(self.step, elapsed_s)
        if total is None:
            return
        total = int(self.world.sum([float(total) if self.world.is_main else 0.0], self.device)[0])
        planner.total = total
        if total != self.config.steps:
            self.set_steps(total)
            emit(self.progress, "info", message=f"time budget: {total} steps in about "
                                                f"{self.time_budget_s() / 60:g} min ({planner.per_step:.2f} s per "
                                                f"step so far)")
        self.planned = True

    def finish_early(self, total: int, message: str) -> None:
        """End the run at step `total`, before its plan: the learning-rate schedule shrinks to it, and a time
        budget no longer re-plans (every process must call this at the same step)."""
        self.planner, self.planned = None, True
        if total < self.config.steps:
            self.set_steps(total)
            emit(self.progress, "info", message=message)

    def timing(self) -> dict:
        """How long this process prepared and trained (so far), for the time estimates of later runs."""
        train_s = self.train_s or (time.perf_counter() - self.loop_started if self.loop_started else 0.0)
        steps = self.step - self.loop_start_step
        return {"prepare_s": round(self.prepare_s, 2), "train_s": round(train_s, 2), "steps": steps,
                "seconds_per_step": round(train_s / steps, 4) if steps else None, "device": self.device.type,
                "precision": str(self.dtype).replace("torch.", ""), **self.skipped_record()}

    def skipped_record(self) -> dict:
        """The updates skipped for bf16 overflow, for the model's record (nothing when none was)."""
        return {"skipped_bf16_overflow": self.skipped} if self.skipped else {}

    def _run_locked(self) -> Path:
        self.run_started = time.perf_counter()
        config = self.config
        if self.world.is_main:
            prepare_output_dir(self.out, config.resume, config.overwrite)
        self.world.barrier()
        torch.manual_seed(config.seed)
        self.model = self.prepare().to(self.device)
        self.forward_model = self.world.wrap(self.model, self.device)
        self.build_optimizer()
        if config.resume:
            self.restore(self.resume_state or load_checkpoint(self.out))
            self.resume_state = None
            emit(self.progress, "info", message=f"resuming at step {self.step} of {config.steps}")
        budget = self.time_budget_s()
        self.planner = StepPlanner(budget, self.step) if budget and not self.planned else None
        self.planning = self.planner is not None
        if self.planner and self.config.steps < PROVISIONAL_STEPS:
            self.set_steps(PROVISIONAL_STEPS)  # the schedule until the first plan
        clock, wait_total, started = EtaClock(self.step), 0.0, time.perf_counter()
        self.prepare_s, self.loop_started, self.loop_start_step = started - self.run_started, started, self.step
        log = StepLog(self.out / LOG_FILE, self.step if config.resume else 0) if self.world.is_main else None
        try:
            with self.stop:
                batches = iter(self.batches(self.step))
                while self.step < self.config.steps:
                    t0 = time.perf_counter()
                    batch = next(batches)
                    wait = time.perf_counter() - t0
                    wait_total += wait
                    loss, stats = self.train_step(batch)
                    if self.planner:
                        self.follow_plan(self.planner, time.perf_counter() - started - self.excluded_s)
                    record = {"step": self.step, "total": self.config.steps, "loss": loss,
                              "lr": self.scheduler.get_last_lr()[0], **stats,
                              "data_wait_s": wait, "step_s": time.perf_counter() - t0}
                    self.after_step(record)
                    if log:
                        log.write(record)
                    emit(self.progress, "progress", stage=self.stage,
                         eta_s=clock.eta(self.step, self.config.steps), **record)
                    if self.stop.requested:
                        path = self.save_checkpoint()
                        kept = self.keep_on_stop() if self.world.is_main else None
                        emit(self.progress, "cancelled", step=self.step, checkpoint=str(path),
                             **({"model_dir": str(self.out)} if kept else {}))
                        usable = f" {kept}" if kept else ""
                        raise TrainingInterrupted(f"stopped at step {self.step}; checkpoint saved to {path}.{usable} "
                                                  f"Continue with --resume.", str(path), self.step)
                    if self.step % config.checkpoint_every == 0 and self.step < self.config.steps:
                        self.save_checkpoint()
        finally:
            if log:
                log.close()
        with self.stop:  # a stop asked now (e.g. the caller has gone) would only cut short the saving of the result
            self.save_checkpoint()
            elapsed = self.train_s = time.perf_counter() - started
            if self.world.is_main:
                self.save_model()
                self.after_training()
            self.world.barrier()
            emit(self.progress, "done", model_dir=str(self.out), steps=self.step, seconds=elapsed,
                 data_wait_fraction=wait_total / max(elapsed, 1e-9), **self.summary())
        return self.out


class StepLog:
    """train_log.jsonl: one line per step, flushed as written, so a killed run loses no line. A new run starts
    it afresh; a resumed one first drops the lines after its checkpoint's step, so log and checkpoint agree."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        if resume_step and path.is_file():
            kept = [line for line in path.read_text().splitlines() if _logged_step(line) <= resume_step]
            write_text_atomically(path, "".join(f"{line}\n" for line in kept))
        self.file = open(path, "a" if resume_step else "w")

    def write(self, record: dict) -> None:
        try:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        except OSError as e:
            if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
                raise DiskFull(disk_full_message(self.path, 1 << 20)) from None
            raise

    def close(self) -> None:
        try:
            self.file.close()
        except OSError:
            pass  # a full disk was reported when the line was written


def _logged_step(line: str) -> float:
    """The step of a log line; a damaged line (cut by a kill) counts as after every step."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf


def start_run(run_class: type[TrainingRun], config: TrainConfig, progress: ProgressCallback | None,
              options: dict, **run_arguments) -> Path:
    """Apply keyword overrides, merge a resumed run's settings, and run (`run_arguments` go to the run class)."""
    config = replace(config, **options)
    state = None
    if config.resume:
        state = load_checkpoint(config.out)
        config = merge_resume_config(config, state["config"], progress)
    return run_class(config, progress, state, **run_arguments).run()
