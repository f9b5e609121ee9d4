"""Pairs of views from cached scans, reproducible from (seed, sample index) alone.

Because every random draw of sample i comes from a generator seeded with (seed, stream, i), a resumed
run, a run with more workers or a run on another number of processes sees exactly the same samples,
and no random state has to be checkpointed.
"""
from __future__ import annotations

import signal
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data.augment import augment_intensity
from ..data.cache import CachedScan
from .views import cut_view, pad_to, padded_shape_needed, sample_view_pair


class ViewPairDataset(Dataset):
    """Item i: two augmented views of one scan and their priors (crop boxes and flips)."""

    def __init__(self, scans: list[CachedScan], patch_size: tuple[int, int, int],
                 scale_range: tuple[float, float], min_overlap: float, seed: int, length: int,
                 *, flip_axes: tuple[int, ...], intensity_strength: float, nonmonotone_p: float = 0.0,
                 bias_field: float = 0.0, stream: int = 0):
        self.scans = scans
        self.patch_size = tuple(patch_size)
        self.scale_range = tuple(scale_range)
        self.min_overlap = min_overlap
        self.seed = seed
        self.length = length
        self.nonmonotone_p = nonmonotone_p
        self.bias_field = bias_field
        self.stream = stream
        self.flip_axes = tuple(flip_axes)
        self.intensity_strength = intensity_strength

    def __len__(self) -> int:
        return self.length

    def scan_index(self, index: int) -> int:
        """Scans are visited in a fresh random order each epoch."""
        n = len(self.scans)
        epoch, position = divmod(index, n)
        return int(np.random.default_rng([self.seed, 1, self.stream, epoch]).permutation(n)[position])

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, 2, self.stream, index])
        volume = pad_to(self.scans[self.scan_index(index)].load(),
                        padded_shape_needed(self.patch_size, self.scale_range[1]))
        a, b = sample_view_pair(volume.shape, self.patch_size, self.scale_range, self.min_overlap, rng,
                                flip_axes=self.flip_axes)
        item = {}
        for name, prior in (("a", a), ("b", b)):
            item[f"view_{name}"] = augment_intensity(
                cut_view(volume, prior, self.patch_size), rng, nonmonotone_p=self.nonmonotone_p,
                strength=self.intensity_strength, bias_field=self.bias_field)
            item[f"lo_{name}"] = torch.tensor(prior.lo, dtype=torch.float32)
            item[f"hi_{name}"] = torch.tensor(prior.hi, dtype=torch.float32)
            item[f"flip_{name}"] = torch.tensor(prior.flips, dtype=torch.bool)
        return item


def _ignore_sigint(_worker_id: int) -> None:
    # Ctrl-C goes to the whole process group; the main process saves a checkpoint and stops the workers
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class StepSampler(Sampler):
    """Sample indices of one process for steps start .. total-1.

    Step s uses the global indices s*B*W .. (s+1)*B*W - 1 (B per process, W processes); process r takes
    its B of them. So W processes with batch B see exactly the samples of one process with batch W*B,
    and a run resumed with another W continues the same global index sequence from its step.
    """

    def __init__(self, batch_size: int, start_step: int, total_steps: int, rank: int = 0, world_size: int = 1):
        self.batch_size, self.start, self.total = batch_size, start_step, total_steps
        self.rank, self.world_size = rank, world_size

    def __iter__(self) -> Iterator[int]:
        b = self.batch_size
        for step in range(self.start, self.total):
            first = step * b * self.world_size + self.rank * b
            yield from range(first, first + b)

    def __len__(self) -> int:
        return (self.total - self.start) * self.batch_size


def make_loader(dataset: Dataset, batch_size: int, start_step: int, total_steps: int, workers: int,
                rank: int = 0, world_size: int = 1) -> DataLoader:
    """Batches of this process for steps start_step .. total_steps-1 (see StepSampler)."""
    return DataLoader(dataset, batch_size=batch_size,
                      sampler=StepSampler(batch_size, start_step, total_steps, rank, world_size),
                      num_workers=workers, worker_init_fn=_ignore_sigint if workers else None,
                      persistent_workers=False, prefetch_factor=4 if workers else None, drop_last=False)
