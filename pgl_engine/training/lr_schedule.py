"""Learning-rate factors for LambdaLR: warm-up then cosine, optionally held at 0 for a group's first steps."""
from __future__ import annotations

import math
from typing import Callable

Schedule = Callable[[int], float]


def warmup_cosine(warmup: int, total: int) -> Schedule:
    """Learning-rate factor: linear warm-up, then cosine decay to 0 at `total`."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return factor


def delayed(schedule: Schedule, delay: int) -> Schedule:
    """Learning-rate factor that is 0 for the first `delay` steps, then follows `schedule` from its step 0."""
    def factor(step: int) -> float:
        return 0.0 if step < delay else schedule(step - delay)
    return factor


def group_schedules(groups: list[dict], warmup: int, steps: int) -> list[Schedule]:
    """Each parameter group's factor for a run of `steps` steps: a group's "delay" holds it at 0 for that many
    steps, then its own warm-up and cosine run over the steps that remain."""
    return [delayed(warmup_cosine(warmup, steps - g.get("delay", 0)), g.get("delay", 0)) for g in groups]
