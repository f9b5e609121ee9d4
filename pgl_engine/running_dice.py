"""Dice of the training patches' predictions over the latest steps: what a fine-tuning without a held-out case
can show of how well it fits its labelled scans (optimistic: the patches are the ones it learns from)."""
from __future__ import annotations

from collections import deque

import torch


class RunningDice:
    def __init__(self, classes: int, window: int = 20):
        self.classes = classes  # background included
        self.confusions: deque = deque(maxlen=window)

    def add(self, logits: torch.Tensor, target: torch.Tensor) -> float:
        """Add one step's (B, C, ...) logits and (B, 1, ...) class indices; returns the running Dice."""
        k = self.classes
        pairs = target.detach().reshape(-1).long() * k + logits.detach().argmax(1).reshape(-1)
        self.confusions.append(torch.bincount(pairs, minlength=k * k).reshape(k, k).cpu())
        return self.dice()

    def dice(self) -> float:
        """Mean over the labels (background left out) seen or predicted in the window; nan before any."""
        confusion = sum(self.confusions).double()
        overlap, predicted, true = confusion.diagonal()[1:], confusion.sum(0)[1:], confusion.sum(1)[1:]
        present = (predicted + true) > 0
        if not present.any():
            return float("nan")
        return float((2 * overlap[present] / (predicted + true)[present]).mean())
