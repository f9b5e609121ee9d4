"""tools/compare_errors.py: the resolution ceiling and the confusion counts of a comparison."""
import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "compare_errors.py"
spec = importlib.util.spec_from_file_location("compare_errors", TOOL)
compare_errors = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_errors)

NAMES = {1: "liver", 2: "spleen"}


def test_ceiling_is_near_perfect_on_a_fine_grid_and_falls_on_a_coarse_one(cohort):
    labels = cohort / "labels"
    native = tuple(float(s) for s in nib.load(next(labels.glob("*.nii*"))).header.get_zooms()[:3])
    fine = compare_errors.ceiling(labels, native, NAMES)
    coarse = compare_errors.ceiling(labels, tuple(4 * s for s in native), NAMES)
    assert all(d > 0.9 for d in fine.values()), fine
    assert all(coarse[n] < fine[n] - 0.02 for n in fine), (fine, coarse)


def test_confusion_counts_voxels_by_truth_and_prediction(tmp_path):
    truth = np.zeros((4, 4, 4), dtype=np.uint8)
    truth[:2] = 1
    pred = truth.copy()
    pred[0, 0, :3] = 2  # 3 liver voxels called spleen
    pred[3, 3, 3] = 1  # 1 background voxel called liver
    for folder, array in (("labels", truth), ("pred", pred)):
        (tmp_path / folder).mkdir()
        nib.save(nib.Nifti1Image(array, np.diag([2.0, 2.0, 3.0, 1.0])), tmp_path / folder / "case.nii.gz")
    counts = compare_errors.confusion([tmp_path / "pred", tmp_path / "pred"], tmp_path / "labels", 3)
    expected = 2 * np.array([[31, 1, 0], [0, 29, 3], [0, 0, 0]])
    np.testing.assert_array_equal(counts, expected)
    assert counts.sum() == pytest.approx(2 * truth.size)
