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
    """target <- tau * target + (1 - tau) * online, parameters and floating buffers alike (integer buffers are
    copied). One fused update over all tensors: on a GPU, two kernels per tensor would cost more than the step's
    arithmetic for a small network."""
    targets, onlines = [], []
    for online, target in pairs:
        targets += list(target.parameters())
        onlines += [o.detach() for o in online.parameters()]
        for o, t in zip(online.buffers(), target.buffers()):
            if t.dtype.is_floating_point:
                targets.append(t)
                onlines.append(o.detach())
            else:
                t.copy_(o)
    if targets:
        torch._foreach_lerp_(targets, onlines, 1.0 - tau)
