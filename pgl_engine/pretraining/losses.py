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


def marginal_dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, labelled: torch.Tensor,
                          smooth: float = 1e-5) -> torch.Tensor:
    """Dice + cross-entropy where each sample labels only some classes (partial labels).

    logits (B, C, ...), target (B, 1, ...) class indices, labelled (B, C) bool: which classes the sample's case
    labels (class 0, background, always). In a sample, the classes it does not label and the background are one
    class (their probabilities summed) for both terms, so a structure nobody drew there is not taught as
    background. With every class labelled this is MONAI's DiceCELoss(to_onehot_y=True, softmax=True).
    """
    labelled = labelled.to(device=logits.device, dtype=torch.bool).clone()
    labelled[:, 0] = True
    as_channels = (*labelled.shape, *([1] * (logits.dim() - 2)))
    background = ~labelled
    background[:, 0] = True  # the background and the classes this sample leaves unlabelled
    log_p = torch.log_softmax(logits.float(), dim=1)
    log_background = torch.logsumexp(log_p.masked_fill(~background.reshape(as_channels), float("-inf")), dim=1)
    log_merged = torch.cat([log_background[:, None],
                            log_p[:, 1:].masked_fill(~labelled.reshape(as_channels)[:, 1:], float("-inf"))], dim=1)
    classes = target[:, 0].long()
    cross_entropy = -log_merged.gather(1, classes[:, None]).mean()
    probability = log_merged.exp()
    one_hot = F.one_hot(classes, logits.shape[1]).movedim(-1, 1).to(probability.dtype)
    spatial = tuple(range(2, logits.dim()))
    overlap = (probability * one_hot).sum(spatial)
    dice = 1 - (2 * overlap + smooth) / (probability.sum(spatial) + one_hot.sum(spatial) + smooth)
    return dice[labelled].mean() + cross_entropy
