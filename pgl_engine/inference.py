"""Sliding-window prediction on a preprocessed volume (MONAI's inferer with Gaussian blending)."""
from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch
from torch import nn


@torch.inference_mode()
def predict_logits(network: nn.Module, volume: np.ndarray, patch_size: tuple[int, int, int],
                   device: torch.device, overlap: float = 0.5, sw_batch_size: int = 4,
                   flip_axes: tuple[int, ...] = ()) -> torch.Tensor:
    """Class logits (K, X, Y, Z) float32 on the CPU for a (X, Y, Z) volume in [0, 1].

    Windows run on `device`; the stitched output stays on the CPU so GPU memory does not grow with the
    volume. With flip_axes, predictions of the volume flipped on each axis are averaged in (test-time
    augmentation), each flipped back before averaging.
    """
    from monai.inferers import sliding_window_inference  # MONAI is imported by the commands that use it

    network.eval()
    x = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None, None]
    autocast = torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else nullcontext()

    def run(inputs: torch.Tensor) -> torch.Tensor:
        with autocast:
            out = sliding_window_inference(inputs, roi_size=patch_size, sw_batch_size=sw_batch_size,
                                           predictor=network, overlap=overlap, mode="gaussian",
                                           sw_device=device, device=torch.device("cpu"))
        return out.float()

    logits = run(x)
    for axis in flip_axes:
        logits += run(torch.flip(x, (2 + axis,))).flip(2 + axis)
    if flip_axes:
        logits /= 1 + len(flip_axes)
    return logits[0]
