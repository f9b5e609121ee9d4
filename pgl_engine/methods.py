"""PGL and the BYOL baseline as small modules whose forward returns the loss.

Both share one pipeline: the online backbone sees both views in one batch, the EMA target backbone
sees them without gradients, and the online backbone features of the views' overlap are aligned on a
fixed grid (for PGL's loss, for the anti-collapse regulariser and for the effective-rank diagnostic).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .aligner import align_pair
from .config import PretrainConfig
from .losses import (
    effective_rank,
    global_consistency_loss,
    grid_to_samples,
    local_consistency_loss,
    variance_covariance_penalty,
)
from .networks import bottom_block, build_backbone, global_head, local_head


def overlap_samples(aligned_a: torch.Tensor, aligned_b: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Voxel feature samples (N, C) of the aligned grids of the pairs that overlap (all pairs if none do)."""
    if bool(valid.any()):
        aligned_a, aligned_b = aligned_a[valid], aligned_b[valid]
    return grid_to_samples(torch.cat([aligned_a, aligned_b]))


def frozen_copy(module: nn.Module) -> nn.Module:
    """The EMA target: an eager deep copy with gradients off."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


class SelfSupervisedMethod(nn.Module):
    """Online backbone + projector + predictor, EMA target backbone + projector."""

    head = staticmethod(local_head)

    def __init__(self, config: PretrainConfig):
        super().__init__()
        self.config = config
        c = config.network.feature_channels
        self.online_backbone = build_backbone(config.network)
        self.online_projector = self.head(c, config.projector_hidden, config.projector_dim)
        self.predictor = self.head(config.projector_dim, config.predictor_hidden, config.projector_dim)
        self.target_backbone = frozen_copy(self.online_backbone)
        self.target_projector = frozen_copy(self.online_projector)

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(online, target) pairs the EMA updates after each optimiser step."""
        return [(self.online_backbone, self.target_backbone), (self.online_projector, self.target_projector)]

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Every parameter but the EMA targets' (frozen by frozen_copy), in registration order."""
        return [p for p in self.parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> "SelfSupervisedMethod":
        super().train(mode)
        # the targets' BatchNorm layers use their EMA running statistics, as in BYOL implementations
        for name, module in self.named_children():
            if name.startswith("target_"):
                module.eval()
        return self

    def align(self, fa: torch.Tensor, fb: torch.Tensor, batch: dict, grid_size: int | None = None
              ) -> tuple[torch.Tensor, ...]:
        return align_pair(fa, fb, batch, grid_size or self.config.grid_size, self.config.crop_prior,
                          self.config.flip_prior)

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        views = torch.cat([batch["view_a"], batch["view_b"]])
        online = self.online_backbone(views)
        with torch.no_grad():
            target = self.target_backbone(views)
        online_a, online_b = online.chunk(2)
        target_a, target_b = target.chunk(2)
        aligned_a, aligned_b, valid = self.align(online_a, online_b, batch)
        loss = self.consistency(online_a, online_b, target_a, target_b, aligned_a, aligned_b, valid, batch)
        stats = {"consistency": float(loss.detach())}
        samples = overlap_samples(aligned_a, aligned_b, valid)
        if self.config.anti_collapse_weight > 0:
            # every second voxel of the full maps: the same statistics at an eighth of the cost
            regularised = samples if self.config.anti_collapse_on == "aligned" else \
                grid_to_samples(online[:, :, ::2, ::2, ::2])
            penalty = variance_covariance_penalty(regularised)
            loss = loss + self.config.anti_collapse_weight * penalty
            stats["anti_collapse"] = float(penalty.detach())
        stats["effective_rank"] = effective_rank(samples.detach())
        return loss, stats

    def consistency(self, online_a, online_b, target_a, target_b, aligned_a, aligned_b, valid, batch):
        raise NotImplementedError


class PGL(SelfSupervisedMethod):
    """Prior-guided local consistency of the aligned overlap, voxel by voxel (Xie et al. 2020).

    With deep_weight > 0, the UNet's bottom block gets a second local loss of its own (heads, regulariser),
    its features taken by forward hooks during the same backbone passes.
    """

    def __init__(self, config: PretrainConfig):
        super().__init__(config)
        self.deep_features: dict[str, torch.Tensor] = {}
        if config.deep_weight > 0:
            c = config.network.channels[-1]
            self.deep_projector = local_head(c, config.projector_hidden, config.projector_dim)
            self.deep_predictor = local_head(config.projector_dim, config.predictor_hidden, config.projector_dim)
            self.target_deep_projector = frozen_copy(self.deep_projector)
            for role, backbone in (("online", self.online_backbone), ("target", self.target_backbone)):
                bottom_block(backbone).register_forward_hook(self._keep_deep_features(role))

    def _keep_deep_features(self, role: str):
        def hook(module, inputs, output):
            self.deep_features[role] = output
        return hook

    def ema_pairs(self):
        pairs = super().ema_pairs()
        return pairs + [(self.deep_projector, self.target_deep_projector)] if self.config.deep_weight > 0 else pairs

    def local_loss(self, aligned: tuple, target_a, target_b, batch, projector, predictor, target_projector,
                   grid_size: int | None = None) -> torch.Tensor:
        """Symmetric local consistency of one feature level: online aligned grids against the target's."""
        aligned_a, aligned_b, valid = aligned
        with torch.no_grad():
            target_aligned_a, target_aligned_b, _ = self.align(target_a, target_b, batch, grid_size)
            z_a, z_b = target_projector(torch.cat([target_aligned_a, target_aligned_b])).chunk(2)
        # the pointwise heads run on the aligned grid: same maths, far cheaper than on full-size maps
        p_a, p_b = predictor(projector(torch.cat([aligned_a, aligned_b]))).chunk(2)
        return local_consistency_loss(p_a, z_b, p_b, z_a, valid)

    def consistency(self, online_a, online_b, target_a, target_b, aligned_a, aligned_b, valid, batch):
        loss = self.local_loss((aligned_a, aligned_b, valid), target_a, target_b, batch, self.online_projector,
                               self.predictor, self.target_projector)
        if self.config.deep_weight > 0:
            loss = loss + self.config.deep_weight * self.deep_loss(batch)
        return loss

    def deep_loss(self, batch: dict) -> torch.Tensor:
        """Local loss (plus the regulariser) on the bottom block's features, on a grid a quarter the size."""
        online_a, online_b = self.deep_features["online"].chunk(2)
        target_a, target_b = self.deep_features["target"].chunk(2)
        grid = max(2, self.config.grid_size // 4)
        aligned_a, aligned_b, valid = self.align(online_a, online_b, batch, grid)
        loss = self.local_loss((aligned_a, aligned_b, valid), target_a, target_b, batch, self.deep_projector,
                               self.deep_predictor, self.target_deep_projector, grid)
        if self.config.anti_collapse_weight > 0:
            penalty = variance_covariance_penalty(overlap_samples(aligned_a, aligned_b, valid))
            loss = loss + self.config.anti_collapse_weight * penalty
        return loss


class BYOL(SelfSupervisedMethod):
    """Global baseline: one pooled embedding per view (Grill et al. 2020)."""

    head = staticmethod(global_head)

    def consistency(self, online_a, online_b, target_a, target_b, aligned_a, aligned_b, valid, batch):
        pooled = torch.cat([online_a, online_b]).mean(dim=(2, 3, 4))
        p_a, p_b = self.predictor(self.online_projector(pooled)).chunk(2)
        with torch.no_grad():
            z_a, z_b = self.target_projector(torch.cat([target_a, target_b]).mean(dim=(2, 3, 4))).chunk(2)
        return global_consistency_loss(p_a, z_b, p_b, z_a)


METHODS = {"pgl": PGL, "byol": BYOL}


def build_method(config: PretrainConfig) -> SelfSupervisedMethod:
    return METHODS[config.method](config)
