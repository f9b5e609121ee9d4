"""Labels on the input's grid from class logits on the model's grid: the arg-max of the trilinearly
interpolated logits, as SimpleITK's linear resampling of each class would give, computed without
interpolating where the answer is already known.

Where the 8 logit vectors around a point share one arg-max, every convex combination of them has that arg-max
too, so the point takes it directly (about 9 of 10 voxels of a CT); only the others are interpolated. Points
within half a model voxel of the grid's edge use the edge values (as ITK's linear interpolator does); points
further out take the class whose logits' minimum is largest (ITK's default values, one per class).
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch

from ..data.imaging import _LPS_TO_RAS, image_ras_corners, ras_image
from ..models.classes import class_map

# above this share of points to interpolate, ITK's per-class resampling of the slab is faster: measured 0.4 us
# per interpolated point here against 0.1 us per voxel for ITK (benchmarks/segment_end_to_end.py CT, 2 cores)
MIXED_LIMIT = 0.15


def index_map(affine: np.ndarray, reference: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """(M, b) with model index = M @ reference index + b, for the model's RAS grid `affine`."""
    direction = np.array(reference.GetDirection()).reshape(3, 3)
    to_ras = _LPS_TO_RAS @ direction @ np.diag(reference.GetSpacing())
    inverse = np.linalg.inv(affine[:3, :3])
    return inverse @ to_ras, inverse @ (_LPS_TO_RAS @ np.array(reference.GetOrigin()) - affine[:3, 3])


def labels_on_grid(logits: torch.Tensor, affine: np.ndarray, reference: sitk.Image, depth: int = 16) -> np.ndarray:
    """Class index (z, y, x) uint8 on the reference grid of the logits (K, X, Y, Z) on the RAS grid `affine`.

    Works `depth` reference slices at a time, so memory stays a few times one slab's voxels."""
    logits = logits.float().contiguous()
    shape = np.array(logits.shape[1:])
    winner = np.pad(class_map(logits, 0).numpy().astype(np.uint8), 1, mode="edge")
    uniform = _uniform_cells(winner)
    fills = [float(logits[k].min()) for k in range(logits.shape[0])]  # ITK's value outside the grid, per class
    outside_label = np.uint8(int(np.argmax(fills)))
    volume = logits[None]  # (1, K, X, Y, Z) for grid_sample
    matrix, offset = index_map(affine, reference)
    nx, ny, nz = reference.GetSize()
    out = np.empty((nz, ny, nx), dtype=np.uint8)
    source_axis = _separable_axes(matrix)
    if uniform.mean() < 1 - MIXED_LIMIT:  # boundaries everywhere: ITK throughout
        for z0 in range(0, nz, depth):
            out[z0:z0 + depth] = _itk_slab_labels(logits, fills, affine, reference, z0, min(depth, nz - z0))
        return out
    for z0 in range(0, nz, depth):
        k = np.arange(z0, min(z0 + depth, nz), dtype=np.float64)
        if source_axis is not None:  # each model axis follows one reference axis: 1D index arrays, broadcast
            along = (np.arange(nx, dtype=np.float64), np.arange(ny, dtype=np.float64), k)
            index = [(matrix[a, r] * along[r] + offset[a]).reshape([-1 if d == 2 - r else 1 for d in range(3)])
                     for a, r in enumerate(source_axis)]
        else:
            j, i = np.meshgrid(np.arange(ny, dtype=np.float64), np.arange(nx, dtype=np.float64), indexing="ij")
            k = k[:, None, None]
            index = [(matrix[a, 0] * i + matrix[a, 1] * j + offset[a]) + matrix[a, 2] * k for a in range(3)]
        labels = _slab_labels(index, shape, winner, uniform, volume, outside_label)
        if labels is None:  # mostly boundaries (e.g. an untrained model): interpolate every class with ITK
            labels = _itk_slab_labels(logits, fills, affine, reference, z0, len(k))
        out[z0:z0 + len(k)] = labels
    return out


def _separable_axes(matrix: np.ndarray) -> list[int] | None:
    """For each model axis the one reference axis it runs along, when the grids are axis-aligned; else None."""
    significant = np.abs(matrix) > 1e-9 * np.abs(matrix).max()
    if not (significant.sum(axis=0) == 1).all() or not (significant.sum(axis=1) == 1).all():
        return None
    return [int(np.flatnonzero(row)[0]) for row in significant]


def _uniform_cells(padded: np.ndarray) -> np.ndarray:
    """For each cell between voxels f-1 and f (f = 0 .. N per axis) of the arg-max with its edge repeated
    (`padded`, index f+1 there is voxel f), whether its 8 corners share one arg-max."""
    first = padded[:-1, :-1, :-1]
    same = np.ones(first.shape, dtype=bool)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                if dx or dy or dz:
                    same &= padded[dx:dx + first.shape[0], dy:dy + first.shape[1], dz:dz + first.shape[2]] == first
    return same


def _slab_labels(index: list[np.ndarray], shape: np.ndarray, winner: np.ndarray, uniform: np.ndarray,
                 volume: torch.Tensor, outside_label: np.uint8) -> np.ndarray | None:
    """Labels of one slab from the model-index coordinates of its voxels (arrays broadcasting to the slab);
    None when more than MIXED_LIMIT of them would need interpolating."""
    inside = np.ones((1, 1, 1), dtype=bool)
    cells = []
    for a in range(3):
        inside = inside & (index[a] >= -0.5) & (index[a] <= shape[a] - 0.5)
        cells.append(np.clip(np.floor(index[a]).astype(np.int64) + 1, 0, shape[a]))  # cell between f-1 and f
    labels = winner[cells[0] + 1, cells[1] + 1, cells[2] + 1]  # a corner of the cell: any will do where uniform
    known = uniform[cells[0], cells[1], cells[2]]
    inside = np.broadcast_to(inside, labels.shape)
    labels[~inside] = outside_label
    mixed = inside & ~known
    if mixed.mean() > MIXED_LIMIT:
        return None
    if mixed.any():
        where = np.nonzero(mixed)
        points = [np.broadcast_to(c, labels.shape)[where] for c in index]
        labels[where] = _interpolated_argmax(volume, points, shape)
    return labels


def _interpolated_argmax(volume: torch.Tensor, points: list[np.ndarray], shape: np.ndarray) -> np.ndarray:
    """Arg-max over classes of the trilinear interpolation at model-index points (edge values repeated)."""
    # grid_sample's last grid axis indexes the input's last dimension: (z, y, x) order, normalised to [-1, 1]
    normalised = [np.clip(p, 0, n - 1) * (2.0 / max(n - 1, 1)) - 1.0 for p, n in zip(points, shape)]
    grid = torch.from_numpy(np.stack(normalised[::-1], axis=-1).astype(np.float32)).view(1, 1, 1, -1, 3)
    sampled = torch.nn.functional.grid_sample(volume, grid, mode="bilinear", padding_mode="border",
                                              align_corners=True)
    return _first_maximum(sampled[0, :, 0, 0].numpy())


def _itk_slab_labels(logits: torch.Tensor, fills: list[float], affine: np.ndarray, reference: sitk.Image, z0: int,
                     depth: int) -> np.ndarray:
    """The definition, for one slab: each class resampled linearly by ITK (its minimum outside the grid) on the
    block of logits the slab needs, then the first maximum."""
    size = reference.GetSize()
    part = sitk.Image((size[0], size[1], depth), sitk.sitkUInt8)
    part.SetSpacing(reference.GetSpacing())
    part.SetDirection(reference.GetDirection())
    part.SetOrigin(reference.TransformIndexToPhysicalPoint((0, 0, z0)))
    corners = image_ras_corners(part)
    index = (corners - affine[:3, 3]) / np.diag(affine)[:3]
    shape = np.array(logits.shape[1:])
    lo = np.clip(np.floor(index.min(0)).astype(int) - 1, 0, shape - 1)
    hi = np.clip(np.ceil(index.max(0)).astype(int) + 2, 1, shape)
    block = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    block_affine = affine.copy()
    block_affine[:3, 3] += np.diag(affine)[:3] * lo
    return _first_maximum(sitk.GetArrayFromImage(sitk.Resample(
        ras_image(logits[k][block].numpy(), block_affine), part, sitk.Transform(), sitk.sitkLinear, fills[k],
        sitk.sitkFloat32)) for k in range(logits.shape[0]))


def _first_maximum(channels) -> np.ndarray:
    """Index of the largest of the class arrays (an iterable, consumed one at a time); the first wins ties, as
    in np.argmax."""
    best = labels = None
    for k, values in enumerate(channels):
        if best is None:
            best, labels = values.copy(), np.zeros(values.shape, dtype=np.uint8)
            continue
        labels[values > best] = k
        np.maximum(best, values, out=best)
    return labels
