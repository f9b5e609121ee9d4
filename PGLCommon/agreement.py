"""Dice between two label arrays of the same grid, per label name (numpy only: runs in Slicer's Python)."""
from __future__ import annotations

import numpy as np


def dice_by_name(result: np.ndarray, reference: np.ndarray, names: list[str]) -> dict[str, float]:
    """Dice of value i+1 (names[i]) in `result` against `reference`; NaN where both are empty."""
    if result.shape != reference.shape:
        raise ValueError(f"label arrays of different shapes {result.shape} and {reference.shape}")
    scores = {}
    for value, name in enumerate(names, start=1):
        a, b = result == value, reference == value
        total = int(a.sum()) + int(b.sum())
        scores[name] = 2.0 * int(np.logical_and(a, b).sum()) / total if total else float("nan")
    return scores


def mean_dice(scores: dict[str, float]) -> float:
    values = [v for v in scores.values() if v == v]
    return float(np.mean(values)) if values else float("nan")


def describe_change(before: dict[str, float], after: dict[str, float]) -> str:
    """'Dice against your correction: 0.71 -> 0.86 (liver 0.90 -> 0.95, ...)'."""
    per_label = ", ".join(f"{name} {before[name]:.2f} -> {after[name]:.2f}" for name in before
                          if before[name] == before[name] or after[name] == after[name])
    return f"Dice against your correction: {mean_dice(before):.2f} -> {mean_dice(after):.2f} ({per_label})"
