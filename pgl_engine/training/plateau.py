"""Finishing a fine-tuning early once its Dice stops rising (`pgl finetune --patience N`).

Every --val-every steps a check takes the run's Dice: the validation Dice with --val-count, else the mean of the
training Dice over the steps since the last check. After `patience` checks in a row that rose less than
MIN_GAIN above the best one, the run is on a plateau: the rest of its learning-rate schedule is compressed into a
tail of TAIL_FRACTION as many steps again as it has run, so the model still ends on an annealed learning rate
(stopping at the plateau's rate leaves the weights noisier).
"""
from __future__ import annotations

import math

MIN_GAIN = 0.005  # half a Dice point
TAIL_FRACTION = 0.2


class PlateauDetector:
    def __init__(self, patience: int, min_gain: float = MIN_GAIN):
        self.patience, self.min_gain = int(patience), float(min_gain)
        self.best = -math.inf
        self.flat = 0  # checks in a row without a gain
        self.pending: list[float] = []  # training Dice of the steps since the last check

    def add(self, dice: float) -> None:
        """One training step's Dice (nan ones are left out)."""
        if math.isfinite(dice):
            self.pending.append(float(dice))

    def check(self, dice: float | None = None) -> bool:
        """A check with this Dice (None: the mean of the steps added since the last check); True on a plateau."""
        if dice is None:
            dice = sum(self.pending) / len(self.pending) if self.pending else math.nan
        self.pending = []
        if not math.isfinite(dice):
            return False
        if dice >= self.best + self.min_gain:
            self.best, self.flat = dice, 0
            return False
        self.flat += 1
        return self.flat >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "flat": self.flat}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.flat = float(state.get("best", -math.inf)), int(state.get("flat", 0))


def tail_end(step: int, planned: int) -> int:
    """The step at which a run on a plateau at `step` ends (never later than its plan)."""
    return min(planned, step + max(1, math.ceil(TAIL_FRACTION * step)))
