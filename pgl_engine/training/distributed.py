"""Data-parallel training with PyTorch's own machinery: torchrun + DistributedDataParallel.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; with them the training loop initialises a process group
(NCCL on CUDA, gloo on CPU), wraps the model in DistributedDataParallel and lets only rank 0 write.
Without them everything runs as one process and nothing here does anything.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..errors import PGLError


@dataclass
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @classmethod
    def from_environment(cls) -> "World":
        """Read what torchrun (or srun + torchrun) set; one process when absent."""
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            return cls()
        try:
            return cls(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
        except ValueError as e:
            raise PGLError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers (set by torchrun): {e}") from e

    def device(self, requested: torch.device) -> torch.device:
        """Each process on a node takes its own GPU."""
        if requested.type == "cuda" and self.distributed:
            if self.local_rank >= torch.cuda.device_count():
                raise PGLError(f"LOCAL_RANK {self.local_rank} has no GPU ({torch.cuda.device_count()} visible); "
                               f"start at most that many processes per node (--nproc_per_node).")
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return requested

    def start(self, device: torch.device) -> None:
        if self.distributed and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")

    def stop(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """DDP for several processes (SyncBatchNorm on CUDA; gloo keeps per-process BatchNorm statistics)."""
        if not self.distributed:
            return model
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=False)

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Sum scalars over all processes (one small all-reduce)."""
        if not self.distributed:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    @torch.no_grad()
    def average_buffers(self, model: nn.Module) -> None:
        """Average floating buffers (BatchNorm running statistics) so every process holds the same model."""
        if not self.distributed:
            return
        for buffer in model.buffers():
            if buffer.dtype.is_floating_point:
                dist.all_reduce(buffer)
                buffer.div_(self.size)


def end_process(code: int) -> None:
    """Exit with `code`; under torchrun with several processes, without the interpreter's teardown.

    After a finished run (process group destroyed, files closed), the teardown of a gloo process now and then
    aborts with "terminate called without an active exception" (a background thread still joinable at exit;
    about 1 run in 10 on a 2-core CPU), which torchrun reports as a failed run. Output is flushed first.
    """
    if World.from_environment().distributed:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)
