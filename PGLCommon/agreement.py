"""Dice between two label arrays of the same grid, per label name (numpy only: runs in Slicer's Python).

One joint histogram of the two arrays (a slab at a time) gives every label's Dice at once, instead of a
full-volume comparison per label.
"""
from __future__ import annotations

import numpy as np

from .steps import StepGenerator, run_all, slabs


def joint_counts(a: np.ndarray, b: np.ndarray) -> StepGenerator:
    """counts[u, v] = number of voxels with a == u and b == v (non-negative integer arrays), a slab per step."""
    if a.shape != b.shape:
        raise ValueError(f"label arrays of different shapes {a.shape} and {b.shape}")
    counts = np.zeros((1, 1), np.int64)
    for start, stop in slabs(a.shape[0], int(np.prod(a.shape[1:]))):
        sa, sb = a[start:stop].ravel(), b[start:stop].ravel()
        na, nb = int(sa.max()) + 1, int(sb.max()) + 1
        slab = np.bincount(sa.astype(np.intp) * nb + sb, minlength=na * nb).reshape(na, nb)
        if slab.shape[0] > counts.shape[0] or slab.shape[1] > counts.shape[1]:
            grown = np.zeros((max(na, counts.shape[0]), max(nb, counts.shape[1])), np.int64)
            grown[:counts.shape[0], :counts.shape[1]] = counts
            counts = grown
        counts[:na, :nb] += slab
        yield
    return counts


def dice_from_counts(counts: np.ndarray, pairs: dict[str, tuple[int | None, int | None]]) -> dict[str, float]:
    """Dice per name from joint_counts, pairs = {name: (its value in a, its value in b)} (None: not there);
    NaN where both are empty."""
    scores = {}
    for name, (u, v) in pairs.items():
        in_a = int(counts[u].sum()) if u is not None and u < counts.shape[0] else 0
        in_b = int(counts[:, v].sum()) if v is not None and v < counts.shape[1] else 0
        both = int(counts[u, v]) if in_a and in_b else 0
        scores[name] = 2.0 * both / (in_a + in_b) if in_a + in_b else float("nan")
    return scores


def dice_by_name(result: np.ndarray, reference: np.ndarray, names: list[str]) -> dict[str, float]:
    """Dice of value i+1 (names[i]) in `result` against `reference`; NaN where both are empty."""
    counts = run_all(joint_counts(result, reference))
    return dice_from_counts(counts, {name: (i + 1, i + 1) for i, name in enumerate(names)})


def mean_dice(scores: dict[str, float]) -> float:
    values = [v for v in scores.values() if v == v]
    return float(np.mean(values)) if values else float("nan")


def describe_change(before: dict[str, float], after: dict[str, float]) -> str:
    """'Dice against your correction: 0.71 -> 0.86 (liver 0.90 -> 0.95, ...)'."""
    per_label = ", ".join(f"{name} {before[name]:.2f} -> {after[name]:.2f}" for name in before
                          if before[name] == before[name] or after[name] == after[name])
    return f"Dice against your correction: {mean_dice(before):.2f} -> {mean_dice(after):.2f} ({per_label})"
