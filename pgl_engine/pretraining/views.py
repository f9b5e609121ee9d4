"""Two-view sampling for PGL: draw the crops and flips first (the priors), then cut them.

Coordinates are continuous source-voxel coordinates in which voxel i covers [i, i + 1); a crop box
[lo, hi) therefore covers exactly the voxels lo .. hi-1 and resizing uses align_corners=False.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ViewPrior:
    """Where a view came from: crop box [lo, hi) in source voxels and the axes it was flipped on."""

    lo: tuple[int, int, int]
    hi: tuple[int, int, int]
    flips: tuple[bool, bool, bool]

    @property
    def size(self) -> np.ndarray:
        return np.array(self.hi) - np.array(self.lo)


def overlap_fraction(a: ViewPrior, b: ViewPrior) -> float:
    """Overlap volume over the larger crop's volume."""
    inter = np.clip(np.minimum(a.hi, b.hi) - np.maximum(a.lo, b.lo), 0, None)
    return float(np.prod(inter) / max(np.prod(a.size), np.prod(b.size)))


def padded_shape_needed(patch_size: tuple[int, int, int], scale_max: float) -> tuple[int, int, int]:
    """The smallest volume that fits the largest crop."""
    return tuple(int(np.ceil(p * scale_max)) for p in patch_size)


def sample_view_pair(volume_shape: tuple[int, int, int], patch_size: tuple[int, int, int],
                     scale_range: tuple[float, float], min_overlap: float,
                     rng: np.random.Generator, max_tries: int = 100,
                     flip_axes: tuple[int, ...] = (0, 1, 2)) -> tuple[ViewPrior, ViewPrior]:
    """Draw two crops of patch*s (s per view in scale_range) overlapping by >= min_overlap, and flips
    (each axis in flip_axes with p = 0.5)."""
    shape = np.array(volume_shape)
    patch = np.array(patch_size)

    def crop_size() -> np.ndarray:
        return np.minimum(np.round(patch * rng.uniform(*scale_range)).astype(int), shape)

    def flips() -> tuple[bool, bool, bool]:
        draws = rng.random(3) < 0.5  # always three draws, so the crops do not depend on flip_axes
        return tuple(bool(f) and axis in flip_axes for axis, f in enumerate(draws))

    size_a, size_b = crop_size(), crop_size()
    lo_a = np.array([rng.integers(0, s - c + 1) for s, c in zip(shape, size_a)])
    a = ViewPrior(tuple(int(v) for v in lo_a), tuple(int(v) for v in lo_a + size_a), flips())
    flips_b = flips()
    # place b within reach of a (they must intersect), within the volume, until the overlap is large enough
    low = np.maximum(0, lo_a - size_b + 1)
    high = np.minimum(shape - size_b, lo_a + size_a - 1)
    for _ in range(max_tries):
        lo_b = np.array([rng.integers(lo, hi + 1) for lo, hi in zip(low, high)])
        b = ViewPrior(tuple(int(v) for v in lo_b), tuple(int(v) for v in lo_b + size_b), flips_b)
        if overlap_fraction(a, b) >= min_overlap:
            return a, b
    # fall back to b centred on a, which overlaps as much as the volume allows
    lo_b = np.clip(lo_a + (size_a - size_b) // 2, 0, shape - size_b)
    return a, ViewPrior(tuple(int(v) for v in lo_b), tuple(int(v) for v in lo_b + size_b), flips_b)


def pad_to(volume: np.ndarray, min_shape: tuple[int, int, int], value: float = 0.0) -> np.ndarray:
    """Pad symmetrically so every axis is at least min_shape (scans smaller than the crop)."""
    extra = [max(0, m - s) for m, s in zip(min_shape, volume.shape)]
    if not any(extra):
        return volume
    return np.pad(volume, [(e // 2, e - e // 2) for e in extra], constant_values=value)


def cut_view(volume: np.ndarray, prior: ViewPrior, patch_size: tuple[int, int, int]) -> torch.Tensor:
    """Crop the prior's box, resize it to patch_size (trilinear) and flip: a (1, *patch_size) float tensor."""
    lo, hi = prior.lo, prior.hi
    crop = np.asarray(volume[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], dtype=np.float32)
    view = torch.from_numpy(crop)[None, None]
    if tuple(view.shape[2:]) != tuple(patch_size):
        view = F.interpolate(view, size=tuple(patch_size), mode="trilinear", align_corners=False)
    axes = [2 + i for i, f in enumerate(prior.flips) if f]
    if axes:
        view = torch.flip(view, axes)
    return view[0]
