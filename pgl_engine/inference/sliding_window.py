"""Class logits of a preprocessed volume: MONAI's Gaussian-blended sliding window at the training patch size, or,
when asked, for networks whose inference does not depend on the window, the whole volume in one pass (or in exact
tiles). One pass is not the default: a network trained on patches smaller than its receptive field computes
another function on a whole volume (measured: organ-mean Dice 33-57 against 83 in windows, docs/experiments.md)."""
from __future__ import annotations

import copy
import math
import os

import numpy as np
import torch
from torch import nn

from ..training.precision import autocast, inference_dtype

# activation memory of one pass, per voxel and per channel of the widest full-resolution feature map (fp32; bf16
# and fp16 take about half): the default UNet (32 channels) peaked at 510-650 bytes per voxel, 16-20 per channel
BYTES_PER_VOXEL_CHANNEL = 20


@torch.inference_mode()
def predict_logits(network: nn.Module, volume: np.ndarray, patch_size: tuple[int, int, int],
                   device: torch.device, overlap: float = 0.5, sw_batch_size: int = 4,
                   flip_axes: tuple[int, ...] = (), precision: str = "auto",
                   memory_mb: float | None = None, one_pass: bool = False) -> torch.Tensor:
    """Class logits (K, X, Y, Z) float32 on the CPU for a (X, Y, Z) volume in [0, 1].

    MONAI's sliding window with `patch_size`, `overlap` and Gaussian blending, windows on `device` and the
    stitched output on the CPU; with one_pass, a window-independent network (`network.window_independent`)
    sees the whole volume at once, or tiles of at most `memory_mb` of activations whose margins cover its
    receptive field, so both give the same result. With flip_axes, predictions of the volume flipped on each axis are
    averaged in (test-time augmentation).
    """
    network.eval()
    dtype = inference_dtype(device, precision)
    x = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None, None]
    if one_pass:
        if not getattr(network, "window_independent", False):
            raise ValueError("one pass needs a network whose output does not depend on the window")
        budget = (memory_mb or default_memory_mb(device)) * 2 ** 20

        def run(inputs: torch.Tensor) -> torch.Tensor:
            return whole_volume_logits(network, inputs, device, dtype, budget)
    else:
        def run(inputs: torch.Tensor) -> torch.Tensor:
            return sliding_window_logits(network, inputs, patch_size, device, dtype, overlap, sw_batch_size)

    logits = run(x)
    for axis in flip_axes:
        logits += run(torch.flip(x, (2 + axis,))).flip(2 + axis)
    if flip_axes:
        logits /= 1 + len(flip_axes)
    return logits[0]


def sliding_window_logits(network: nn.Module, x: torch.Tensor, patch_size, device: torch.device,
                          dtype: torch.dtype, overlap: float, sw_batch_size: int) -> torch.Tensor:
    from monai.inferers import sliding_window_inference  # MONAI is imported by the commands that use it

    with autocast(device, dtype):
        out = sliding_window_inference(x, roi_size=patch_size, sw_batch_size=sw_batch_size, predictor=network,
                                       overlap=overlap, mode="gaussian", sw_device=device,
                                       device=torch.device("cpu"))
    return out.float()


def default_memory_mb(device: torch.device) -> float:
    """Activation budget of one pass: half the free GPU memory; on the CPU a quarter of RAM, at most 4 GB."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free / 2 ** 21
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 8 * 2 ** 30
    return min(4096.0, ram / 4 / 2 ** 20)


def activation_bytes(network: nn.Module, voxels: int, dtype: torch.dtype) -> float:
    """Estimated peak activation memory of one pass over `voxels` voxels."""
    scale = 0.5 if dtype in (torch.bfloat16, torch.float16) else 1.0
    return voxels * BYTES_PER_VOXEL_CHANNEL * getattr(network, "full_resolution_channels", 32) * scale


def whole_volume_logits(network: nn.Module, x: torch.Tensor, device: torch.device, dtype: torch.dtype,
                        budget_bytes: float) -> torch.Tensor:
    """Logits of a window-independent network on the whole (1, 1, X, Y, Z) volume: one pass when its activations
    fit the budget, else tiles along the longest axis whose margins cover the receptive field (same result)."""
    divisor = int(getattr(network, "divisor", 1))
    shape = x.shape[2:]
    padded = [math.ceil(s / divisor) * divisor for s in shape]
    x = torch.nn.functional.pad(x, [p for s, t in zip(reversed(shape), reversed(padded)) for p in (0, t - s)])
    axis = int(np.argmax(padded))
    slab_voxels = math.prod(padded) // padded[axis]
    most = int(budget_bytes // max(activation_bytes(network, slab_voxels, dtype), 1))
    if most >= padded[axis]:
        out = _forward(network, x, device, dtype)
    else:
        out = _tiled_forward(network, x, device, dtype, axis, most, divisor)
    return out[(slice(None), slice(None), *(slice(0, s) for s in shape))]


def _forward(network: nn.Module, x: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    with autocast(device, dtype):
        return network(x.to(device)).float().cpu()


def _tiled_forward(network: nn.Module, x: torch.Tensor, device: torch.device, dtype: torch.dtype, axis: int,
                   most: int, divisor: int) -> torch.Tensor:
    """Cores of `divisor`-aligned tiles along `axis`, each computed with `margin` voxels of context per side."""
    margin = receptive_margin(network, divisor)
    length = x.shape[2 + axis]
    core = max(divisor, (most - 2 * margin) // divisor * divisor)
    out = None
    for start in range(0, length, core):
        stop = min(start + core, length)
        lo, hi = max(0, start - margin), min(length, stop + margin)
        tile = _forward(network, x.narrow(2 + axis, lo, hi - lo), device, dtype)
        if out is None:
            out = torch.empty((1, tile.shape[1], *x.shape[2:]), dtype=torch.float32)
        out.narrow(2 + axis, start, stop - start).copy_(tile.narrow(2 + axis, start - lo, stop - start))
    return out


def receptive_margin(network: nn.Module, divisor: int) -> int:
    """Context (voxels, a multiple of `divisor`) that an output voxel depends on along an axis; measured once
    per architecture."""
    convs = [m for m in network.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))]
    key = (divisor, *((type(m).__name__, m.in_channels, m.kernel_size, m.stride) for m in convs))
    if key not in _MARGINS:
        # no layer reaches further than its half kernel times the coarsest level's spacing (`divisor`)
        bound = divisor * sum((m.kernel_size[0] - 1) // 2 + 1 for m in convs)
        _MARGINS[key] = _measure_support(network, bound, divisor)
    return _MARGINS[key]


_MARGINS: dict[tuple, int] = {}


def _measure_support(network: nn.Module, bound: int, divisor: int) -> int:
    """How far along the first axis the outputs at one divisor-period of positions reach into the input: the
    support of their gradient in a copy of the network with generic weights (no accidental zeros)."""
    with torch.inference_mode(False), torch.enable_grad():
        probe = copy.deepcopy(network).float().cpu().eval()
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in probe.parameters():
                p.copy_(torch.rand(p.shape, generator=generator) + 0.1)
            for m in probe.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.running_mean.zero_()
                    m.running_var.fill_(1.0)
        length = 2 * bound + divisor
        x = torch.rand((1, 1, length, divisor, divisor), generator=generator).requires_grad_(True)
        probe(x)[:, :, bound:bound + divisor].sum().backward()
        reach = (x.grad[0, 0].abs().sum((1, 2)) > 0).nonzero().flatten()
    lo, hi = int(reach.min()), int(reach.max())
    assert 0 < lo and hi < length - 1, "the bound over-estimates the reach, so the probe is long enough"
    radius = max(bound - lo, hi - (bound + divisor - 1))
    return math.ceil(radius / divisor) * divisor
