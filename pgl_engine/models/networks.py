"""Networks: the MONAI backbone shared with fine-tuning, and the projection heads of pretraining."""
from __future__ import annotations

import re

import torch
from torch import nn

from ..config import NetworkConfig


def build_backbone(config: NetworkConfig) -> nn.Module:
    """Residual MONAI UNet mapping a 1-channel patch to a feature map of the same size."""
    from monai.networks.nets import UNet  # MONAI is imported by the commands that build a network

    monai_norm = config.norm if config.norm in ("instance", "batch") else "instance"
    unet = UNet(spatial_dims=3, in_channels=1, out_channels=config.feature_channels,
                channels=config.channels, strides=config.strides, num_res_units=config.num_res_units,
                norm=monai_norm.upper())
    if monai_norm != config.norm:  # MONAI has no per-voxel norm: its (parameter-free) instance norms are swapped
        for parent in list(unet.modules()):
            for name, child in parent.named_children():
                if isinstance(child, nn.InstanceNorm3d):
                    setattr(parent, name, norm_layer(config.norm, child.num_features))
    return unet


class ChannelNorm(nn.Module):
    """Layer normalisation of each voxel's feature vector over the channels alone, with a per-channel scale and
    shift: its statistics come from the voxel itself, so no other voxel of the window changes them."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        mean = x.mean(1, keepdim=True)
        variance = (x - mean).pow(2).mean(1, keepdim=True)
        return (x - mean) * torch.rsqrt(variance + self.eps) * self.weight.view(shape) + self.bias.view(shape)


def norm_layer(norm: str, channels: int) -> nn.Module:
    """One normalisation layer of the kind `NetworkConfig.norm` names (the head's; the backbone's for
    channel and none)."""
    if norm == "batch":
        return nn.BatchNorm3d(channels)
    if norm == "channel":
        return ChannelNorm(channels)
    if norm == "none":
        return nn.Identity()
    return nn.InstanceNorm3d(channels, affine=True)


# MONAI's UNet nests Sequential(down, SkipConnection(...), up): index 2 of the top Sequential or of any
# SkipConnection's submodule is an up (decoder) path; everything else is the encoder and the bottom block
_DECODER_KEY = re.compile(r"(^|\.)(model|submodule)\.2\.")


def bottom_block(backbone: nn.Module) -> nn.Module:
    """The UNet's deepest block (encoder side, lowest resolution, channels[-1] features)."""
    from monai.networks.layers.simplelayers import SkipConnection

    level = backbone.model
    while isinstance(level[1], SkipConnection) and isinstance(level[1].submodule, nn.Sequential):
        level = level[1].submodule
    return level[1].submodule


def is_decoder_key(name: str) -> bool:
    """Whether a backbone state_dict entry belongs to the decoder (up-sampling path and output layer)."""
    return bool(_DECODER_KEY.search(name))


def local_head(in_channels: int, hidden: int, out_channels: int) -> nn.Module:
    """PGL's local projector / predictor: pointwise MLP that keeps the spatial grid."""
    return nn.Sequential(nn.Conv3d(in_channels, hidden, 1), nn.BatchNorm3d(hidden), nn.ReLU(inplace=True),
                         nn.Conv3d(hidden, out_channels, 1))


def global_head(in_channels: int, hidden: int, out_channels: int) -> nn.Module:
    """BYOL's projector / predictor on pooled embeddings."""
    return nn.Sequential(nn.Linear(in_channels, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out_channels))


class SegmentationNet(nn.Module):
    """The pretrained backbone plus a pointwise head giving one logit per class (background included).

    `window_independent` and `divisor` tell inference whether the whole volume can go in one pass and what its
    size must be a multiple of."""

    def __init__(self, backbone: nn.Module, config: NetworkConfig, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.window_independent = config.window_independent
        self.divisor = config.divisor
        self.full_resolution_channels = max(config.channels[0], config.feature_channels)
        channels = config.feature_channels
        self.head = nn.Sequential(norm_layer(config.norm, channels), nn.PReLU(), nn.Conv3d(channels, num_classes, 1))

    def forward(self, x):
        return self.head(self.backbone(x))


def build_segmentation_net(config: NetworkConfig, num_classes: int) -> SegmentationNet:
    return SegmentationNet(build_backbone(config), config, num_classes)
