"""The generic training loop shared by pretraining and fine-tuning.

A run owns its model, optimiser and schedule; subclasses provide the data, the loss and what to save. The loop:
next batch -> loss -> finite check -> optimiser step -> hooks -> log and events -> checkpoint. Its parts live
apart: the step count in StepPlan (step_plan), the folder's lock, log and checkpoints in RunFolder (run_folder),
skipped bf16 updates in OverflowSkips (bf16_overflow). Ctrl-C / SIGTERM save a checkpoint between steps; a
non-finite loss keeps the last good one.
"""
from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Iterator, NoReturn

import torch
from torch import nn

from .. import __version__
from ..config import TrainConfig
from ..contract import CHECKPOINT_DIR
from ..errors import PGLError
from ..progress import EtaClock, ProgressCallback, emit
from .bf16_overflow import OverflowSkips
from .checkpoint import load_checkpoint
from .distributed import World
from .interrupt import StopRequest
from .lr_schedule import group_schedules
from .precision import autocast, training_dtype
from .run_folder import RunFolder
from .step_plan import StepPlan

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
        self.config, self.resume_state = config, resume_state
        self.out = Path(config.out)
        self.world = World.from_environment()
        self.device = self.world.device(resolve_device(config.device))
        self.progress = progress if self.world.is_main else None  # only rank 0 reports
        self.step = 0
        self.stop = StopRequest()
        self.folder = RunFolder(self.out, self.stage, self.world, self.progress)
        self.plan = StepPlan(self.set_steps, self.rank0_count, self.progress)
        self.prepare_s = self.train_s = self.loop_started = 0.0
        self.loop_start_step = 0

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

    # --- the loop ----------------------------------------------------------------------------------------
    def run(self) -> Path:
        self.world.start(self.device)
        try:
            with self.folder.locked():
                return self.train()
        finally:
            self.world.stop()

    def train(self) -> Path:
        """Set up, step to the end of the plan, save the result."""
        self.set_up()
        with self.folder.step_log(self.step if self.config.resume else 0) as log, self.stop:
            batches = iter(self.batches(self.step))
            while self.step < self.config.steps:
                record = self.timed_step(batches)
                self.after_step(record)
                log(record)
                emit(self.progress, "progress", stage=self.stage, eta_s=self.eta.eta(self.step, self.config.steps),
                     **record)
                if self.stop.requested:
                    self.stop_here()
                if self.step % self.config.checkpoint_every == 0 and self.step < self.config.steps:
                    self.save_checkpoint()
        return self.finish()

    def set_up(self) -> None:
        """Folder, seed, model and optimiser, a resumed state, then the step plan and the clocks."""
        run_started, config = time.perf_counter(), self.config
        self.folder.prepare(config.resume, config.overwrite)
        torch.manual_seed(config.seed)
        self.model = self.prepare().to(self.device)
        self.forward_model = self.world.wrap(self.model, self.device)
        self.build_optimizer()
        budget = self.time_budget_s()
        if config.resume:
            self.restore(self.resume_state or load_checkpoint(self.out))
            self.resume_state = None
            emit(self.progress, "info", message=f"resuming at step {self.step} of {config.steps}")
        self.plan.start(budget, self.step, self.config.steps)
        self.eta, self.wait_s = EtaClock(self.step), 0.0
        self.loop_started, self.loop_start_step = self.plan.started, self.step
        self.prepare_s = self.loop_started - run_started

    def timed_step(self, batches: Iterator[dict]) -> dict:
        """One step and its record (what the log, the events and the after_step hook get)."""
        started = time.perf_counter()
        batch = next(batches)
        wait = time.perf_counter() - started
        self.wait_s += wait
        loss, stats = self.train_step(batch)
        self.plan.follow(self.step, self.config.steps)
        return {"step": self.step, "total": self.config.steps, "loss": loss, "lr": self.scheduler.get_last_lr()[0],
                **stats, "data_wait_s": wait, "step_s": time.perf_counter() - started}

    def stop_here(self) -> NoReturn:
        """A stop was asked: checkpoint, keep what is usable, end the run."""
        path = self.save_checkpoint()
        kept = self.keep_on_stop() if self.world.is_main else None
        raise self.folder.interrupted(self.step, path, kept)

    def finish(self) -> Path:
        """The last checkpoint, the model and the done event."""
        with self.stop:  # a stop asked now (e.g. the caller has gone) would only cut short the saving of the result
            self.save_checkpoint()
            elapsed = self.train_s = time.perf_counter() - self.loop_started
            if self.world.is_main:
                self.save_model()
                self.after_training()
            self.world.barrier()
            emit(self.progress, "done", model_dir=str(self.out), steps=self.step, seconds=elapsed,
                 data_wait_fraction=self.wait_s / max(elapsed, 1e-9), **self.summary())
        return self.out

    # --- one step ----------------------------------------------------------------------------------------
    def train_step(self, batch: dict) -> tuple[float, dict]:
        batch = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        self.model.train()
        with autocast(self.device, self.dtype):
            loss, stats = self.compute_loss(batch)
        mean_loss = self.mean_loss_and_stop(loss)
        if not self.overflow.tolerates(mean_loss):
            raise PGLError(
                f"the loss became {mean_loss} at step {self.step + 1}; training stopped. The last good "
                f"checkpoint in {self.out / CHECKPOINT_DIR} is kept. Resume with a lower --lr, or check the scans "
                f"for extreme values (--hu-window)" + (", or train with --precision fp32." if self.overflow.active
                                                       else "."))
        self.update(loss, mean_loss)
        extra = self.after_update()
        self.world.average_buffers(self.model)
        self.step += 1
        return mean_loss, {**stats, **extra}

    def mean_loss_and_stop(self, loss: torch.Tensor) -> float:
        """The mean loss over all processes; a stop asked of any of them becomes every one's."""
        # one all-reduce for both, so all processes take the same decisions (a lone process raising or stopping
        # would leave the others waiting)
        loss_sum, stops = self.world.sum([float(loss.detach()), float(self.stop.requested)], self.device)
        self.stop.requested = stops > 0
        return loss_sum / self.world.size

    def update(self, loss: torch.Tensor, mean_loss: float) -> None:
        """Backward and optimiser step (or a skipped bf16 update), then the schedule's step."""
        self.optimizer.zero_grad(set_to_none=True)
        if math.isfinite(mean_loss):
            self.scaler.scale(loss).backward()
        if self.overflow.must_skip(mean_loss, self.optimizer):
            self.overflow.skip(mean_loss, self.step + 1)  # the weights stay; the schedule moves on, as in fp16
        else:
            self.overflow.stepped()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        with warnings.catch_warnings():
            # with mixed precision the scaler skips the first updates while it calibrates (inf gradients), which
            # PyTorch reports as the scheduler stepping first; the schedule follows the step count all the same
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before",
                                    category=UserWarning)
            self.scheduler.step()

    # --- optimiser, schedule, state ----------------------------------------------------------------------
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
        self.overflow = OverflowSkips(self.dtype == torch.bfloat16, self.progress)

    def schedules(self, spec: list[dict]) -> list:
        """Each parameter group's learning-rate factor for the current --steps."""
        return group_schedules(spec, self.config.effective_warmup, self.config.steps)

    def set_steps(self, total: int) -> None:
        """A new step count (from the step plan): the schedules stretch or shrink to it from the current step."""
        self.config = copy.copy(self.config)
        self.config.steps = int(total)
        self.scheduler.lr_lambdas = self.schedules(self.parameter_groups())

    def rank0_count(self, total: int) -> int:
        """Rank 0's `total`, on every process."""
        return int(self.world.sum([float(total) if self.world.is_main else 0.0], self.device)[0])

    @property
    def loader_steps(self) -> int:
        """How many steps the data loader is built for."""
        return self.plan.loader_steps(self.config.steps)

    def checkpoint_state(self) -> dict:
        return {"step": self.step, "kind": self.stage, "config": self.config.to_dict(),
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "engine_version": __version__, "planned_steps": self.plan.planned, **self.extra_state()}

    def save_checkpoint(self) -> Path:
        return self.folder.save_checkpoint(self.checkpoint_state, self.step)

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
        self.plan.planned = bool(state.get("planned_steps", False))
        self.load_extra_state(state)

    def timing(self) -> dict:
        """How long this process prepared and trained (so far), for the time estimates of later runs."""
        train_s = self.train_s or (time.perf_counter() - self.loop_started if self.loop_started else 0.0)
        steps = self.step - self.loop_start_step
        return {"prepare_s": round(self.prepare_s, 2), "train_s": round(train_s, 2), "steps": steps,
                "seconds_per_step": round(train_s / steps, 4) if steps else None, "device": self.device.type,
                "precision": str(self.dtype).replace("torch.", ""), **self.overflow.record()}


def start_run(run_class: type[TrainingRun], config: TrainConfig, progress: ProgressCallback | None,
              options: dict, **run_arguments) -> Path:
    """Apply keyword overrides, merge a resumed run's settings, and run (`run_arguments` go to the run class)."""
    config = replace(config, **options)
    state = None
    if config.resume:
        state = load_checkpoint(config.out)
        config = merge_resume_config(config, state["config"], progress)
    return run_class(config, progress, state, **run_arguments).run()
