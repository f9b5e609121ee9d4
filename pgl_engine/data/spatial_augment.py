"""Fine-tuning patches cut with a random rotation and scaling: a few labelled scans then show the network organs
of other sizes and orientations, as the field's supervised trainers do (nnU-Net draws rotation and scaling for
each patch, each with p = 0.2, scaling from 0.7 to 1.4).

The patch's voxel grid is mapped into the scan's around a centre voxel, in millimetres (so the scans' anisotropic
spacing is respected), through an axial rotation (about the scan's third axis) and an isotropic scale; only the
box of scan voxels that the mapped grid touches is read from the memory-mapped scan.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class SpatialAugment:
    rotation_p: float = 0.2
    max_rotation_deg: float = 30.0  # axial, either way
    scale_p: float = 0.2
    scale_range: tuple[float, float] = (0.7, 1.4)  # > 1 shows a larger field of view: organs look smaller

    def draw(self, rng: np.random.Generator) -> tuple[float, float] | None:
        """(angle in radians, scale), or None for a plain crop. Draws the same numbers whatever the outcome, so
        the rest of a patch's random stream does not depend on it."""
        rotate, angle = rng.random() < self.rotation_p, rng.uniform(-1, 1) * np.deg2rad(self.max_rotation_deg)
        scale_it, scale = rng.random() < self.scale_p, rng.uniform(*self.scale_range)
        if not rotate and not scale_it:
            return None
        return (angle if rotate else 0.0, scale if scale_it else 1.0)


def mapped_grid(patch_size, spacing, centre, angle: float, scale: float) -> np.ndarray:
    """(3, *patch_size) scan voxel coordinates of the patch's voxels: the patch centred on `centre`, rotated by
    `angle` about the third axis and scaled by `scale`, in millimetres."""
    spacing = np.asarray(spacing, float)
    axes = [(np.arange(p) - (p - 1) / 2) for p in patch_size]
    offsets = np.stack(np.meshgrid(*axes, indexing="ij")).reshape(3, -1) * spacing[:, None] * scale
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    mapped = (rotation @ offsets) / spacing[:, None] + np.asarray(centre, float)[:, None]
    return mapped.reshape(3, *patch_size)


def sample(volume: np.ndarray, labels: np.ndarray, coordinates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The volume (linear) and labels (nearest) at scan voxel `coordinates`; outside the scan the volume is 0
    (air after the HU window) and the labels background."""
    lo = np.maximum(np.floor(coordinates.reshape(3, -1).min(1)).astype(int), 0)
    hi = np.minimum(np.ceil(coordinates.reshape(3, -1).max(1)).astype(int) + 1, volume.shape)
    if np.any(hi - lo < 1):  # the grid lies wholly outside the scan
        return np.zeros(coordinates.shape[1:], np.float32), np.zeros(coordinates.shape[1:], np.int64)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    crop = torch.from_numpy(np.asarray(volume[box], dtype=np.float32))[None, None]
    crop_labels = torch.from_numpy(np.asarray(labels[box], dtype=np.float32))[None, None]
    size = np.asarray(crop.shape[2:], float)
    # grid_sample's grid: the last axis is (W, H, D) = the crop's (third, second, first) axis, in [-1, 1]
    normalised = 2 * (coordinates - lo.reshape(3, 1, 1, 1)) / np.maximum(size - 1, 1).reshape(3, 1, 1, 1) - 1
    grid = torch.from_numpy(normalised[::-1].transpose(1, 2, 3, 0).copy()).float()[None]
    image = F.grid_sample(crop, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    target = F.grid_sample(crop_labels, grid, mode="nearest", padding_mode="zeros", align_corners=True)
    return image[0, 0].numpy(), target[0, 0].numpy().round().astype(np.int64)
