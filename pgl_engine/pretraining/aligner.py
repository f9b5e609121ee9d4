"""Prior-guided 3D RoIAlign: resample the overlap of two views' feature maps onto one fixed grid.

Boxes are in continuous source-voxel coordinates (see views.py). A feature map of a view covers that
view's crop box; flipped views are un-flipped by mirroring the sampling positions, which un-flips the
content (point k of the grid always looks at the same physical place in both views).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def overlap_boxes(lo_a: torch.Tensor, hi_a: torch.Tensor, lo_b: torch.Tensor,
                  hi_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Intersection [lo, hi) of two batches of boxes (B, 3) and whether it is non-empty (B,)."""
    lo = torch.maximum(lo_a, lo_b).float()
    hi = torch.minimum(hi_a, hi_b).float()
    return lo, hi, (hi > lo).all(dim=1)


def roi_align_3d(features: torch.Tensor, view_lo: torch.Tensor, view_hi: torch.Tensor, flips: torch.Tensor,
                 box_lo: torch.Tensor, box_hi: torch.Tensor, grid_size: int) -> torch.Tensor:
    """Sample box [box_lo, box_hi) of each view's feature map on a grid_size^3 grid (trilinear).

    features (B, C, X, Y, Z) covers [view_lo, view_hi) (B, 3); flips (B, 3) bool are the view's flipped axes.
    Returns (B, C, grid, grid, grid) in source orientation.
    """
    dtype, device = features.dtype, features.device
    t = (torch.arange(grid_size, device=device, dtype=torch.float32) + 0.5) / grid_size  # cell centres
    src = box_lo.float()[:, :, None] + t[None, None, :] * (box_hi - box_lo).float()[:, :, None]  # (B, 3, R)
    u = (src - view_lo.float()[:, :, None]) / (view_hi - view_lo).float()[:, :, None]
    u = torch.where(flips.bool()[:, :, None], 1.0 - u, u)
    g = 2.0 * u - 1.0  # align_corners=False: -1 and 1 are the outer edges of the map
    gx, gy, gz = (g[:, i][:, :, None, None] for i in range(3))
    b, r = g.shape[0], grid_size
    # grid_sample wants (x, y, z) = (last, middle, first) spatial dim of the input
    grid = torch.stack([gz.view(b, 1, 1, r).expand(b, r, r, r),
                        gy.view(b, 1, r, 1).expand(b, r, r, r),
                        gx.view(b, r, 1, 1).expand(b, r, r, r)], dim=-1)
    return F.grid_sample(features, grid.to(dtype), mode="bilinear", padding_mode="border", align_corners=False)


def align_pair(features_a: torch.Tensor, features_b: torch.Tensor, prior: dict, grid_size: int,
               use_crop_prior: bool = True, use_flip_prior: bool = True
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Aligned grids of views a and b from their priors (keys lo_a, hi_a, flip_a, lo_b, hi_b, flip_b).

    Ablations: without the crop prior the whole views are matched; without the flip prior flips are
    ignored. Returns (aligned_a, aligned_b, valid) where valid marks pairs whose boxes overlap.
    """
    lo_a, hi_a, lo_b, hi_b = prior["lo_a"], prior["hi_a"], prior["lo_b"], prior["hi_b"]
    flip_a, flip_b = prior["flip_a"], prior["flip_b"]
    if not use_flip_prior:
        flip_a, flip_b = torch.zeros_like(flip_a), torch.zeros_like(flip_b)
    if use_crop_prior:
        lo, hi, valid = overlap_boxes(lo_a, hi_a, lo_b, hi_b)
        box_a = box_b = (lo, hi)
    else:
        valid = torch.ones(lo_a.shape[0], dtype=torch.bool, device=lo_a.device)
        box_a, box_b = (lo_a, hi_a), (lo_b, hi_b)
    aligned_a = roi_align_3d(features_a, lo_a, hi_a, flip_a, *box_a, grid_size)
    aligned_b = roi_align_3d(features_b, lo_b, hi_b, flip_b, *box_b, grid_size)
    return aligned_a, aligned_b, valid
