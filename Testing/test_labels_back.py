"""Labels back on the input grid equal the arg-max of SimpleITK's linear resampling of every class."""
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from pgl_engine.data.imaging import ras_grid_covering, ras_image
from pgl_engine.inference.labels_back import labels_on_grid


def itk_labels(logits: torch.Tensor, affine: np.ndarray, reference: sitk.Image) -> np.ndarray:
    """The definition: each class resampled linearly (its minimum outside the grid), then the first maximum."""
    channels = [sitk.GetArrayFromImage(sitk.Resample(ras_image(logits[k].numpy(), affine), reference,
                                                     sitk.Transform(), sitk.sitkLinear, float(logits[k].min()),
                                                     sitk.sitkFloat32)) for k in range(logits.shape[0])]
    return np.argmax(np.stack(channels), axis=0).astype(np.uint8)


def reference_grid(size, spacing, rotation=None, origin=(10.0, -20.0, 5.0)) -> sitk.Image:
    reference = sitk.Image(size, sitk.sitkUInt8)
    reference.SetSpacing(spacing)
    reference.SetOrigin(origin)
    if rotation is None:
        reference.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    else:
        euler = sitk.Euler3DTransform()
        euler.SetRotation(*rotation)
        reference.SetDirection(euler.GetMatrix())
    return reference


def blob_logits(shape, classes=5, seed=0) -> torch.Tensor:
    """Smooth logits with organ-sized regions, as a segmentation network gives."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.standard_normal((classes, *[max(2, s // 4) for s in shape])).astype(np.float32))
    return torch.nn.functional.interpolate(coarse[None], size=tuple(shape), mode="trilinear")[0]


@pytest.mark.parametrize("rotation", [None, (0.2, -0.1, 0.3)], ids=["axis-aligned", "oblique"])
def test_the_labels_equal_itk_linear_resampling(rotation):
    reference = reference_grid((90, 84, 30), (0.8, 0.8, 2.5), rotation)
    affine, size = ras_grid_covering(reference, (3.2, 3.2, 6.0))
    logits = blob_logits(size)
    ours = labels_on_grid(logits, affine, reference, depth=7)
    assert ours.shape == (30, 84, 90)
    agreement = (ours == itk_labels(logits, affine, reference)).mean()
    assert agreement > 0.9999, agreement  # the rest: float rounding where two classes tie


def test_points_beyond_the_model_grid_take_itks_default_values():
    """A reference grid reaching past the model's: outside points get the class with the largest minimum."""
    reference = reference_grid((40, 40, 12), (1.0, 1.0, 3.0), origin=(0.0, 0.0, 0.0))
    affine, size = ras_grid_covering(reference, (4.0, 4.0, 6.0))
    affine[:3, 3] += 12.0  # the model grid moved, so part of the reference lies outside it
    logits = blob_logits(size, classes=3, seed=1)
    logits[2] += 10.0  # class 2 has the largest minimum
    expected = itk_labels(logits, affine, reference)
    ours = labels_on_grid(logits, affine, reference)
    assert (expected == 2).mean() > 0.3
    assert (ours == expected).mean() > 0.9999


def test_a_single_slice_model_grid():
    reference = reference_grid((30, 30, 2), (1.0, 1.0, 1.0))
    affine, size = ras_grid_covering(reference, (3.0, 3.0, 6.0))
    assert size[2] == 1
    logits = blob_logits(size, classes=3, seed=2)
    assert (labels_on_grid(logits, affine, reference) == itk_labels(logits, affine, reference)).mean() > 0.9999


def test_logits_with_boundaries_everywhere_take_the_itk_path_and_agree():
    """Noise logits (no two neighbours agree): interpolating nearly every point would be slower than ITK."""
    from pgl_engine.inference.labels_back import MIXED_LIMIT, _uniform_cells

    reference = reference_grid((60, 50, 20), (0.8, 0.8, 2.5), (0.1, 0.0, 0.2))
    affine, size = ras_grid_covering(reference, (3.2, 3.2, 6.0))
    logits = torch.from_numpy(np.random.default_rng(3).standard_normal((4, *size)).astype(np.float32))
    winner = np.pad(logits.argmax(0).numpy().astype(np.uint8), 1, mode="edge")
    assert _uniform_cells(winner).mean() < 1 - MIXED_LIMIT
    assert (labels_on_grid(logits, affine, reference) == itk_labels(logits, affine, reference)).mean() > 0.9999
