"""Overflowing bf16 updates are skipped, not fatal: bf16 autocast has no loss scaling, so an update whose loss or
gradients overflow is left out (as fp16's GradScaler leaves one out); only BF16_SKIP_LIMIT in a row stop training."""
from __future__ import annotations

import math

import torch

from ..progress import ProgressCallback, emit

BF16_SKIP_LIMIT = 5


def gradients_finite(optimizer: torch.optim.Optimizer) -> bool:
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()) if grads else True


class OverflowSkips:
    """The bf16 updates skipped for overflow; inactive (nothing is skipped) in other precisions."""

    def __init__(self, active: bool, progress: ProgressCallback | None = None):
        self.active, self.progress = active, progress
        self.in_row = self.total = 0

    def tolerates(self, loss: float) -> bool:
        """Whether training may go on after this mean loss (a non-finite one skips the update, up to the limit)."""
        return math.isfinite(loss) or (self.active and self.in_row + 1 < BF16_SKIP_LIMIT)

    def must_skip(self, loss: float, optimizer: torch.optim.Optimizer) -> bool:
        return self.active and not (math.isfinite(loss) and gradients_finite(optimizer))

    def skip(self, loss: float, step: int) -> None:
        """Count a skipped update at `step` (1-based); the first one is reported."""
        self.in_row += 1
        self.total += 1
        if self.total == 1:
            what = f"the loss was {loss}" if not math.isfinite(loss) else "the gradients overflowed"
            emit(self.progress, "warning", message=f"step {step}: {what} in bf16, so this update was skipped (more "
                                                   "are counted in the model's training record)")

    def stepped(self) -> None:
        self.in_row = 0

    def record(self) -> dict:
        """The skipped updates for the model's record (nothing when none was)."""
        return {"skipped_bf16_overflow": self.total} if self.total else {}
