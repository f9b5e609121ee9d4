"""Dice of the training patches' predictions over the latest steps: what a fine-tuning without a held-out case
can show of how well it fits its labelled scans (optimistic: the patches are the ones it learns from)."""
from __future__ import annotations

import math
from collections import deque

import torch

from ..models.classes import class_map


class RunningDice:
    def __init__(self, classes: int, window: int = 20):
        self.classes = classes  # background included
        self.confusions: deque = deque(maxlen=window)

    def add(self, logits: torch.Tensor, target: torch.Tensor, labelled: torch.Tensor | None = None) -> float:
        """Add one step's (B, C, ...) logits and (B, 1, ...) class indices; returns the running Dice. `labelled`
        (B, C) bool: the classes each sample's case labels; a class is scored only on the samples that label it
        (where a case leaves it out, its background may hold it)."""
        k, batch = self.classes, target.shape[0]
        sample = torch.arange(batch, device=target.device).repeat_interleave(target[0].numel())
        pairs = (sample * k + target.detach().reshape(-1).long()) * k + class_map(logits.detach(), 1).reshape(-1)
        confusion = torch.bincount(pairs, minlength=batch * k * k).reshape(batch, k, k).cpu()
        if labelled is not None:
            confusion[:, 0, :] *= labelled.cpu().to(confusion.dtype)  # predicted c on unknown background
        self.confusions.append(confusion.sum(0))
        return self.dice()

    def per_class(self) -> list[float]:
        """Dice of each label (class 1 on) over the window; nan for a label neither true nor predicted in it (no
        evidence either way)."""
        if not self.confusions:
            return [float("nan")] * (self.classes - 1)
        confusion = sum(self.confusions).double()
        overlap, predicted, true = confusion.diagonal()[1:], confusion.sum(0)[1:], confusion.sum(1)[1:]
        return (2 * overlap / (predicted + true)).tolist()  # 0 / 0 is nan

    def dice(self) -> float:
        """Mean over the labels (background left out) seen or predicted in the window; nan before any."""
        present = [d for d in self.per_class() if not math.isnan(d)]
        return sum(present) / len(present) if present else float("nan")
