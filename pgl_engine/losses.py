"""Loss functions and feature diagnostics (pure functions)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_consistency(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """2 - 2 cos(p, z) along dim 1, per element of the other dims; z is treated as a constant."""
    return 2.0 - 2.0 * (F.normalize(p.float(), dim=1) * F.normalize(z.detach().float(), dim=1)).sum(dim=1)


def local_consistency_loss(p_a: torch.Tensor, z_b: torch.Tensor, p_b: torch.Tensor, z_a: torch.Tensor,
                           valid: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric voxel-wise BYOL loss on aligned (B, C, R, R, R) grids, averaged over voxels of valid pairs."""
    per_pair = (cosine_consistency(p_a, z_b) + cosine_consistency(p_b, z_a)).flatten(1).mean(dim=1)
    if valid is not None:
        if not bool(valid.any()):
            return per_pair.sum() * 0.0
        per_pair = per_pair[valid]
    return per_pair.mean()


def global_consistency_loss(p_a: torch.Tensor, z_b: torch.Tensor, p_b: torch.Tensor,
                            z_a: torch.Tensor) -> torch.Tensor:
    """Symmetric BYOL loss on (B, D) embeddings."""
    return (cosine_consistency(p_a, z_b) + cosine_consistency(p_b, z_a)).mean()


def grid_to_samples(x: torch.Tensor) -> torch.Tensor:
    """(B, C, *spatial) -> (B * voxels, C): each voxel's feature vector is one sample."""
    return x.float().flatten(2).transpose(1, 2).reshape(-1, x.shape[1])


def variance_covariance_penalty(x: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """VICReg-style anti-collapse term on (N, C) samples: hinge on each channel's std + off-diagonal covariance."""
    x = x - x.mean(dim=0)
    std = torch.sqrt(x.var(dim=0) + eps)
    variance = F.relu(1.0 - std).mean()
    n, c = x.shape
    cov = (x.T @ x) / max(n - 1, 1)
    off_diagonal = cov - torch.diag(torch.diag(cov))
    return variance + off_diagonal.pow(2).sum() / c


@torch.no_grad()
def effective_rank(x: torch.Tensor) -> float:
    """exp(entropy) of the normalised singular values of centred (N, C) samples (Roy & Vetterli 2007).

    A monitor, never a reason to stop: non-finite samples or an SVD that does not converge give NaN (the loss
    check reports a non-finite loss with its own message)."""
    x = x.float()
    if x.numel() == 0 or not bool(torch.isfinite(x).all()):
        return float("nan")
    x = x - x.mean(dim=0)
    try:
        s = torch.linalg.svdvals(x)
    except RuntimeError:  # torch.linalg.LinAlgError is a RuntimeError
        return float("nan")
    if float(s.sum()) <= 0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))
