"""Fine-tuning patches with a random axial rotation and scaling: exact where nothing is drawn, geometrically right
where something is, labels kept as whole values."""
from __future__ import annotations

import numpy as np
import pytest

from pgl_engine.data.spatial_augment import SpatialAugment, mapped_grid, sample
from pgl_engine.finetuning.patches import LabelledCase, PatchDataset


def volumes():
    rng = np.random.default_rng(0)
    volume = rng.random((40, 50, 30)).astype(np.float16)
    labels = (np.arange(volume.size).reshape(volume.shape) % 5).astype(np.uint8)
    return volume, labels


def test_the_identity_transform_is_the_plain_crop():
    volume, labels = volumes()
    image, target = sample(volume, labels, mapped_grid((8, 8, 4), (2, 2, 4), (19.5, 24.5, 14.5), 0.0, 1.0))
    assert np.abs(image - volume[16:24, 21:29, 13:17].astype(np.float32)).max() < 1e-5
    assert (target == labels[16:24, 21:29, 13:17]).all()


@pytest.mark.parametrize("quarter_turns", [1, -1])
def test_a_quarter_turn_rotates_the_crop_in_the_axial_plane(quarter_turns):
    volume, labels = volumes()
    image, target = sample(volume, labels, mapped_grid((8, 8, 4), (2, 2, 4), (19.5, 19.5, 14.5),
                                                       quarter_turns * np.pi / 2, 1.0))
    crop = volume[16:24, 16:24, 13:17].astype(np.float32)
    assert np.abs(image - np.rot90(crop, -quarter_turns, axes=(0, 1))).max() < 1e-5
    assert (target == np.rot90(labels[16:24, 16:24, 13:17], -quarter_turns, axes=(0, 1))).all()


def test_scaling_is_in_millimetres_and_the_outside_is_air_and_background():
    volume, labels = volumes()
    grid = mapped_grid((4, 4, 4), (1, 1, 3), (1.5, 1.5, 1.5), 0.0, 2.0)  # twice the extent, from the corner
    assert np.allclose(np.diff(grid[0, :, 0, 0]), 2.0) and np.allclose(np.diff(grid[2, 0, 0, :]), 2.0)
    image, target = sample(volume, labels, grid)
    assert image[0, 0, 0] == 0 and target[0, 0, 0] == 0  # voxel -1.5: outside the scan
    assert set(np.unique(target)) <= set(np.unique(labels)) and target.dtype == np.int64


def test_the_dataset_draws_transforms_at_the_asked_rate_and_keeps_label_values():
    volume, labels = volumes()
    case = LabelledCase.build(type("Scan", (), {"load": lambda self: volume})(), labels, seed=0)
    plain = PatchDataset([case], (16, 16, 8), 0.67, seed=0, length=40)
    spatial = PatchDataset([case], (16, 16, 8), 0.67, seed=0, length=40, spatial=SpatialAugment(1.0, 30, 1.0),
                           spacing=(1.0, 1.0, 2.0))
    off = PatchDataset([case], (16, 16, 8), 0.67, seed=0, length=40, spatial=SpatialAugment(0.0, 30, 0.0))
    differ = 0
    for i in range(40):
        a, b, c = plain[i], spatial[i], off[i]
        assert set(np.unique(b["label"].numpy())) <= {0, 1, 2, 3, 4}
        assert b["image"].shape == a["image"].shape == (1, 16, 16, 8)
        differ += not np.array_equal(a["label"].numpy(), b["label"].numpy())
        assert np.array_equal(a["label"].numpy(), c["label"].numpy())  # p = 0: the plain patches
    assert differ >= 20  # small angles and scales near 1 can leave a nearest-neighbour patch as it was
