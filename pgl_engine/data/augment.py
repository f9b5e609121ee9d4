"""Per-view intensity augmentation (values in [0, 1]); spatial transforms live in pretraining/views.py."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable 3D Gaussian blur of a (C, X, Y, Z) tensor, sigma in voxels."""
    radius = max(1, int(np.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    out = x[None]
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = -1
        pad = [0] * 6
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        out = F.conv3d(F.pad(out.reshape(-1, 1, *out.shape[2:]), pad, mode="replicate"),
                       kernel.reshape(shape)).reshape(out.shape)
    return out[0]


def random_remap(x: torch.Tensor, rng: np.random.Generator, knots: int = 6) -> torch.Tensor:
    """A random piecewise-linear, generally non-monotone, intensity curve on [0, 1]."""
    ys = np.sort(rng.random(knots)) if rng.random() < 0.3 else rng.random(knots)
    idx = torch.clamp(x, 0, 1) * (knots - 1)
    i0 = torch.clamp(idx.floor().long(), 0, knots - 2)
    w = idx - i0
    ys_t = torch.as_tensor(ys, dtype=x.dtype)
    return ys_t[i0] * (1 - w) + ys_t[i0 + 1] * w


def random_bias_field(shape: tuple[int, ...], rng: np.random.Generator, amplitude: float,
                      degree: int = 2) -> torch.Tensor:
    """A smooth multiplicative field exp(p) on a (X, Y, Z) grid, p a random polynomial of the coordinates.

    p has every monomial of degree 1..degree with a normal coefficient and is scaled so that max |p| is a
    draw from [0, amplitude]: factors between exp(-amplitude) and exp(amplitude), varying across the grid.
    """
    axes = [torch.linspace(-1, 1, n) for n in shape]
    x, y, z = torch.meshgrid(*axes, indexing="ij")
    p = torch.zeros(shape)
    for i in range(degree + 1):
        for j in range(degree + 1 - i):
            for k in range(degree + 1 - i - j):
                if i + j + k:
                    p += float(rng.normal()) * x ** i * y ** j * z ** k
    return torch.exp(p * (rng.uniform(0, amplitude) / max(float(p.abs().max()), 1e-6)))


def shift_structures(x: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator, amplitude: float,
                     count: int, sigma: float = 1.0) -> torch.Tensor:
    """Add to each labelled structure its own intensity offset, drawn from [-amplitude, amplitude].

    labels holds values 0..count (0 = background, never shifted); count offsets are drawn whatever the
    patch holds, so the random stream does not depend on the patch. The offset map is blurred (sigma in
    voxels) so that a shifted structure keeps a soft edge, as a differently enhancing organ would.
    """
    offsets = torch.zeros(count + 1, dtype=x.dtype)
    offsets[1:] = torch.from_numpy(rng.uniform(-amplitude, amplitude, count))  # cast to x's dtype on assignment
    return x + gaussian_blur(offsets[torch.clamp(labels, 0, count)], sigma)


def augment_intensity(x: torch.Tensor, rng: np.random.Generator, nonmonotone_p: float = 0.0,
                      strength: float = 1.0, bias_field: float = 0.0) -> torch.Tensor:
    """Brightness and contrast each x U[0.75, 1.25] (p = 0.5 each), gamma U[0.7, 1.5] (p = 0.5), Gaussian noise of
    std U[0, 0.1] (p = 0.1) and blur with sigma U[0.5, 1] voxels (p = 0.2), as in docs/method.md.

    strength scales how far brightness, contrast and gamma move from identity (1 = those ranges, 0 = none); the
    random draws are the same whatever the strength. bias_field > 0 first
    multiplies x by a smooth random field (random_bias_field), so that two views of one scan disagree
    on each structure's intensity; 0 draws nothing, leaving the other draws as they were.
    """
    if bias_field > 0:
        x = x * random_bias_field(tuple(x.shape[1:]), rng, bias_field).to(x.dtype)
    if nonmonotone_p > 0 and rng.random() < nonmonotone_p:
        x = random_remap(x, rng)
    def factor(lo: float, hi: float) -> float:
        """A factor drawn from [lo, hi], pulled toward 1 by strength."""
        return 1 + strength * (rng.uniform(lo, hi) - 1)

    if rng.random() < 0.5:  # brightness
        x = x * factor(0.75, 1.25)
    if rng.random() < 0.5:  # contrast about the mean
        mean = x.mean()
        x = (x - mean) * factor(0.75, 1.25) + mean
    if rng.random() < 0.5:
        x = torch.clamp(x, 0, None) ** factor(0.7, 1.5)
    if rng.random() < 0.1:
        x = x + torch.from_numpy(rng.normal(0, rng.uniform(0, 0.1), x.shape).astype(np.float32))
    if rng.random() < 0.2:
        x = gaussian_blur(x, rng.uniform(0.5, 1.0))
    return x
