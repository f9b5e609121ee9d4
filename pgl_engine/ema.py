"""Exponential-moving-average target updates with BYOL's cosine momentum schedule."""
from __future__ import annotations

import math

import torch
from torch import nn


def ema_momentum(step: int, total_steps: int, start: float) -> float:
    """tau rises from `start` at step 0 to 1 at the last step on a cosine."""
    progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return 1.0 - (1.0 - start) * (math.cos(math.pi * progress) + 1.0) / 2.0


@torch.no_grad()
def ema_update(pairs: list[tuple[nn.Module, nn.Module]], tau: float) -> None:
    """target <- tau * target + (1 - tau) * online, parameters and floating buffers alike."""
    for online, target in pairs:
        for o, t in zip(online.parameters(), target.parameters()):
            t.mul_(tau).add_(o.detach(), alpha=1.0 - tau)
        for o, t in zip(online.buffers(), target.buffers()):
            if t.dtype.is_floating_point:
                t.mul_(tau).add_(o.detach(), alpha=1.0 - tau)
            else:
                t.copy_(o)
