"""PGL and the BYOL baseline as small modules whose forward returns the loss and its statistics.

Both methods see a batch the same way: the online backbone encodes both views in one pass, the EMA target
backbone encodes them without gradients, and the overlap of the two views is aligned on a fixed grid from
their priors. PGL's loss compares the aligned grids voxel by voxel; BYOL's compares one pooled embedding per
view. For both, the aligned online features feed the anti-collapse regulariser and the effective rank.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ..config import PretrainConfig
from ..models.networks import bottom_block, build_backbone, global_head, local_head
from .aligner import align_pair
from .losses import (effective_rank, global_consistency_loss, grid_to_samples, local_consistency_loss,
                     variance_covariance_penalty)


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


def encode_with_bottom(backbone: nn.Module, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The backbone's output and its bottom block's output, from one pass."""
    kept: list[torch.Tensor] = []
    handle = bottom_block(backbone).register_forward_hook(lambda module, inputs, output: kept.append(output))
    try:
        output = backbone(views)
    finally:
        handle.remove()
    return output, kept[0]


@dataclass
class Pair:
    """Feature maps of views a and b (B, C, X, Y, Z) each."""

    a: torch.Tensor
    b: torch.Tensor

    @classmethod
    def split(cls, both: torch.Tensor) -> "Pair":
        a, b = both.chunk(2)
        return cls(a, b)


@dataclass
class LocalHeads:
    """One feature level's heads: online projector and predictor, EMA target projector."""

    projector: nn.Module
    predictor: nn.Module
    target_projector: nn.Module


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
        self.rank_due = True  # whether the next forward measures the effective rank (Pretrainer sets it)

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(online, target) pairs the EMA updates after each optimiser step."""
        return [(self.online_backbone, self.target_backbone), (self.online_projector, self.target_projector)]

    def monitor_rank(self, stats: dict, aligned: tuple) -> None:
        """The effective rank of the aligned online features into `stats`, when rank_due (an SVD and host syncs,
        so not on every step)."""
        if self.rank_due:
            stats["effective_rank"] = effective_rank(overlap_samples(*aligned).detach())

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Every parameter but the EMA targets' (frozen by frozen_copy), in registration order."""
        return [p for p in self.parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> "SelfSupervisedMethod":
        super().train(mode)
        # the targets' heads run their BatchNorm in eval mode on EMA'd running statistics (this engine's choice;
        # BYOL's reference implementation keeps the target in train mode). A batch-normalised target backbone
        # stays in train mode as in BYOL: its EMA'd statistics would lag far behind early in training
        for name, module in self.named_children():
            if name.startswith("target_") and not (name == "target_backbone" and _has_batch_norm(module)):
                module.eval()
        return self

    def align(self, features: Pair, batch: dict, grid_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The views' overlap on a grid_size^3 grid, from their priors: (aligned a, aligned b, valid pairs)."""
        return align_pair(features.a, features.b, batch, grid_size, self.config.crop_prior, self.config.flip_prior)

    def regularised(self, loss: torch.Tensor, samples: torch.Tensor, stats: dict, key: str | None = None
                    ) -> torch.Tensor:
        """loss + the anti-collapse penalty on `samples` (N, C), when --anti-collapse-weight > 0."""
        if self.config.anti_collapse_weight <= 0:
            return loss
        penalty = variance_covariance_penalty(samples)
        if key:
            stats[key] = float(penalty.detach())
        return loss + self.config.anti_collapse_weight * penalty

    def collapse_samples(self, online: torch.Tensor, aligned: tuple) -> torch.Tensor:
        """The features the regulariser sees: the aligned overlap, or every second voxel of the full maps (the
        same statistics at an eighth of the cost)."""
        if self.config.anti_collapse_on == "aligned":
            return overlap_samples(*aligned)
        return grid_to_samples(online[:, :, ::2, ::2, ::2])


class PGL(SelfSupervisedMethod):
    """Prior-guided local consistency of the aligned overlap, voxel by voxel (Xie et al. 2020).

    With deep_weight > 0, the UNet's bottom block gets a second local loss of its own (heads, regulariser) on
    a grid a quarter the size, from the same backbone passes.
    """

    def __init__(self, config: PretrainConfig):
        super().__init__(config)
        if config.deep_weight > 0:
            c = config.network.channels[-1]
            self.deep_projector = local_head(c, config.projector_hidden, config.projector_dim)
            self.deep_predictor = local_head(config.projector_dim, config.predictor_hidden, config.projector_dim)
            self.target_deep_projector = frozen_copy(self.deep_projector)

    def ema_pairs(self):
        pairs = super().ema_pairs()
        return pairs + [(self.deep_projector, self.target_deep_projector)] if self.config.deep_weight > 0 else pairs

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        deep = self.config.deep_weight > 0
        views = torch.cat([batch["view_a"], batch["view_b"]])
        online, online_bottom = encode_with_bottom(self.online_backbone, views) if deep else \
            (self.online_backbone(views), None)
        with torch.no_grad():
            target, target_bottom = encode_with_bottom(self.target_backbone, views) if deep else \
                (self.target_backbone(views), None)
        grid = self.config.grid_size
        aligned = self.align(Pair.split(online), batch, grid)
        heads = LocalHeads(self.online_projector, self.predictor, self.target_projector)
        loss = self.local_loss(aligned, Pair.split(target), batch, heads, grid)
        if deep:
            loss = loss + self.config.deep_weight * self.deep_loss(online_bottom, target_bottom, batch)
        stats = {"consistency": float(loss.detach())}
        loss = self.regularised(loss, self.collapse_samples(online, aligned), stats, "anti_collapse")
        self.monitor_rank(stats, aligned)
        return loss, stats

    def local_loss(self, aligned: tuple, target: Pair, batch: dict, heads: LocalHeads, grid: int) -> torch.Tensor:
        """Symmetric local consistency of one feature level: the online aligned grids, through the projector and
        predictor, against the target's aligned grids through the target projector."""
        aligned_a, aligned_b, valid = aligned
        with torch.no_grad():
            target_a, target_b, _ = self.align(target, batch, grid)
            z_a, z_b = heads.target_projector(torch.cat([target_a, target_b])).chunk(2)
        # the pointwise heads run on the aligned grid, far cheaper than on the full maps. Not the same function as
        # heads before the alignment: interpolation commutes with the 1x1x1 convolutions but not with the ReLU
        # or the batch-norm statistics (taken over the grid's voxels instead of the maps'); the paper leaves the
        # order open
        p_a, p_b = heads.predictor(heads.projector(torch.cat([aligned_a, aligned_b]))).chunk(2)
        return local_consistency_loss(p_a, z_b, p_b, z_a, valid)

    def deep_loss(self, online_bottom: torch.Tensor, target_bottom: torch.Tensor, batch: dict) -> torch.Tensor:
        """The local loss plus the regulariser on the bottom block's features, on a grid a quarter the size."""
        grid = max(2, self.config.grid_size // 4)
        aligned = self.align(Pair.split(online_bottom), batch, grid)
        heads = LocalHeads(self.deep_projector, self.deep_predictor, self.target_deep_projector)
        loss = self.local_loss(aligned, Pair.split(target_bottom), batch, heads, grid)
        return self.regularised(loss, overlap_samples(*aligned), {})


class BYOL(SelfSupervisedMethod):
    """Global baseline: one pooled embedding per view (Grill et al. 2020)."""

    head = staticmethod(global_head)

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        views = torch.cat([batch["view_a"], batch["view_b"]])
        online = self.online_backbone(views)
        with torch.no_grad():
            target = self.target_backbone(views)
            z_a, z_b = self.target_projector(target.mean(dim=(2, 3, 4))).chunk(2)
        p_a, p_b = self.predictor(self.online_projector(online.mean(dim=(2, 3, 4)))).chunk(2)
        loss = global_consistency_loss(p_a, z_b, p_b, z_a)
        stats = {"consistency": float(loss.detach())}
        # the overlap is aligned only to watch (and regularise) the local features BYOL's loss never sees
        aligned = self.align(Pair.split(online), batch, self.config.grid_size)
        loss = self.regularised(loss, self.collapse_samples(online, aligned), stats, "anti_collapse")
        self.monitor_rank(stats, aligned)
        return loss, stats


METHODS = {"pgl": PGL, "byol": BYOL}


def build_method(config: PretrainConfig) -> SelfSupervisedMethod:
    return METHODS[config.method](config)


def _has_batch_norm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())
