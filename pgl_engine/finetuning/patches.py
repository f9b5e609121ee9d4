"""Fine-tuning's training items: labelled cases and patches cut from them, centred on structures by choice."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data.augment import augment_intensity, shift_structures
from ..data.cache import CachedScan
from ..data.spatial_augment import SpatialAugment, mapped_grid, sample
from ..pretraining.views import pad_to

FOREGROUND_SAMPLES = 20000  # remembered voxel positions per label and case, to centre patches on structures


@dataclass
class LabelledCase:
    scan: CachedScan
    labels: np.ndarray  # uint8 class indices on the scan's cached grid
    foreground: dict[int, np.ndarray]  # label -> (n, 3) voxel positions
    labelled: np.ndarray  # (classes,) bool: the classes this case labels (background always; partial labels)

    @classmethod
    def build(cls, scan: CachedScan, labels: np.ndarray, seed: int, labelled: np.ndarray | None = None
              ) -> "LabelledCase":
        """`labelled`: the classes the case labels (default: all up to its largest class)."""
        rng = np.random.default_rng([seed, 5])
        foreground = {}
        for value in np.unique(labels):
            if value == 0:
                continue
            positions = np.argwhere(labels == value)
            if len(positions) > FOREGROUND_SAMPLES:
                positions = positions[rng.choice(len(positions), FOREGROUND_SAMPLES, replace=False)]
            foreground[int(value)] = positions
        if labelled is None:
            labelled = np.ones(int(labels.max()) + 1, dtype=bool)
        return cls(scan, labels, foreground, labelled)


class PatchDataset(Dataset):
    """Item i: one patch and its labels, centred on a labelled structure with probability foreground_p."""

    def __init__(self, cases: list[LabelledCase], patch_size: tuple[int, int, int], foreground_p: float,
                 seed: int, length: int, flip_axes: tuple[int, ...] = (), structure_shift: float = 0.0,
                 spatial: SpatialAugment | None = None, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)):
        self.cases, self.patch_size, self.foreground_p = cases, np.array(patch_size), foreground_p
        self.seed, self.length, self.flip_axes = seed, length, flip_axes
        self.spatial, self.spacing = spatial, spacing
        self.structure_shift = structure_shift  # in the normalised intensity units of the cached scans
        self.structures = max((int(case.labels.max()) for case in cases), default=0)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, 3, index])
        case = self.cases[int(rng.integers(len(self.cases)))]
        image = pad_to(case.scan.load(), tuple(self.patch_size))
        labels = pad_to(case.labels, tuple(self.patch_size))
        offset = (np.array(image.shape) - np.array(case.labels.shape)) // 2
        lo = self.corner(rng, case, offset, np.array(image.shape))
        patch, target = self.cut(rng, image, labels, lo)
        flips = [1 + a for a in self.flip_axes if rng.random() < 0.5]
        if flips:
            patch, target = patch.flip(flips), target.flip(flips)
        if self.structure_shift > 0 and self.structures:
            patch = shift_structures(patch, target, rng, self.structure_shift, self.structures)
        return {"image": augment_intensity(patch, rng), "label": target, "labelled": torch.from_numpy(case.labelled)}

    def corner(self, rng: np.random.Generator, case: LabelledCase, offset: np.ndarray, shape: np.ndarray
               ) -> np.ndarray:
        """The patch's low corner in the padded image: around a structure's voxel, or anywhere."""
        if case.foreground and rng.random() < self.foreground_p:
            value = list(case.foreground)[int(rng.integers(len(case.foreground)))]
            points = case.foreground[value]
            centre = points[int(rng.integers(len(points)))] + offset
            centre = centre + rng.integers(-self.patch_size // 4, self.patch_size // 4 + 1)
        else:
            centre = np.array([rng.integers(0, s) for s in shape])
        return np.clip(centre - self.patch_size // 2, 0, shape - self.patch_size)

    def cut(self, rng: np.random.Generator, image: np.ndarray, labels: np.ndarray, lo: np.ndarray
            ) -> tuple[torch.Tensor, torch.Tensor]:
        """Image and label patches at `lo`, rotated and scaled when a spatial augmentation is drawn."""
        transform = self.spatial.draw(rng) if self.spatial else None
        if transform:
            grid = mapped_grid(tuple(self.patch_size), self.spacing, lo + (self.patch_size - 1) / 2, *transform)
            image_patch, label_patch = sample(image, labels, grid)
        else:
            box = tuple(slice(int(a), int(a + p)) for a, p in zip(lo, self.patch_size))
            image_patch, label_patch = image[box], labels[box]
        patch = torch.from_numpy(np.asarray(image_patch, dtype=np.float32))[None]
        target = torch.from_numpy(np.asarray(label_patch, dtype=np.int64))[None]
        return patch, target
