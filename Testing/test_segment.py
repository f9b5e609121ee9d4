"""Segmentation output: exactly the input's grid in any orientation, labels on the right anatomy."""
import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import ORGANS

from pgl_engine.data.imaging import read_geometry
from pgl_engine.errors import PGLError
from pgl_engine.inference.evaluation import dice_per_label
from pgl_engine.data.components import keep_largest_components
from pgl_engine.inference.segmentation import largest_component_values, segment

NAMES = {v: str(v) for v in ORGANS}


def read_zyx(path):
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image


def as_lps_nrrd(src, dst):
    """The same anatomy stored LPS-first: identity direction in LPS, arrays flipped on x and y."""
    array, image = read_zyx(src)
    out = sitk.GetImageFromArray(array[:, ::-1, ::-1].copy())
    out.SetSpacing(image.GetSpacing())
    corner = image.TransformIndexToPhysicalPoint((image.GetSize()[0] - 1, image.GetSize()[1] - 1, 0))
    out.SetOrigin(corner)
    out.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, 1))
    sitk.WriteImage(out, str(dst))
    return dst


def as_oblique(src, dst, interpolator):
    """Resampled onto a grid rotated 20 degrees about z, with other in-plane spacing.

    (The coarse test phantoms have 8-20 mm slices, so a tilt out of the axial plane would blur them beyond
    recognition; tilted affines are covered with a smooth field in test_imaging.py.)
    """
    image = sitk.ReadImage(str(src))
    rotation = sitk.VersorTransform((0, 0, 1), np.deg2rad(20))
    direction = np.array(rotation.GetMatrix()).reshape(3, 3) @ np.array(image.GetDirection()).reshape(3, 3)
    spacing = (4.0, 5.0, image.GetSpacing()[2])
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in image.GetSize()]))
    size = [int(np.ceil(s * sp / nsp)) for s, sp, nsp in zip(image.GetSize(), image.GetSpacing(), spacing)]
    origin = centre - direction @ (np.array(spacing) * (np.array(size) - 1) / 2)
    out = sitk.Resample(image, size, sitk.Transform(), interpolator, origin.tolist(), spacing,
                        direction.ravel().tolist(), -1000 if interpolator == sitk.sitkLinear else 0)
    sitk.WriteImage(out, str(dst))
    return dst


def as_permuted_nifti(src, dst):
    """Axes stored in (z, x, y) order with z reversed: a valid but unusual NIfTI affine."""
    img = nib.load(src)
    array = np.asarray(img.dataobj).transpose(2, 0, 1)[::-1]
    affine = img.affine[:, [2, 0, 1, 3]].copy()
    affine[:3, 3] += affine[:3, 0] * (array.shape[0] - 1)
    affine[:3, 0] *= -1
    nib.save(nib.Nifti1Image(array.copy(), affine), str(dst))
    return dst


VARIANTS = {
    "lps.nrrd": lambda src, dst, labels: as_lps_nrrd(src, dst),
    "oblique.nii.gz": lambda src, dst, labels: as_oblique(src, dst, sitk.sitkNearestNeighbor if labels
                                                          else sitk.sitkLinear),
    "permuted.nii.gz": lambda src, dst, labels: as_permuted_nifti(src, dst),
    "oblique.mha": lambda src, dst, labels: as_oblique(src, dst, sitk.sitkNearestNeighbor if labels
                                                       else sitk.sitkLinear),
}


@pytest.fixture(scope="module")
def reference_dice(seg_model, cohort, tmp_path_factory):
    out = segment(seg_model, cohort / "images" / "phantom_002.nii.gz", tmp_path_factory.mktemp("ref") / "p.nii.gz")[0]
    truth = np.asarray(nib.load(cohort / "labels" / "phantom_002.nii.gz").dataobj)
    return dice_per_label(np.asarray(nib.load(out).dataobj), truth, NAMES)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_output_is_on_the_input_grid_and_on_the_right_anatomy(seg_model, cohort, tmp_path, variant, reference_dice):
    make = VARIANTS[variant]
    image = make(cohort / "images" / "phantom_002.nii.gz", tmp_path / f"image_{variant}", False)
    truth_file = make(cohort / "labels" / "phantom_002.nii.gz", tmp_path / f"truth_{variant}", True)
    output = tmp_path / f"seg_{variant}"
    segment(seg_model, image, output)
    size_in, affine_in = read_geometry(image)
    size_out, affine_out = read_geometry(output)
    assert size_out == size_in
    assert np.allclose(affine_out, affine_in, atol=1e-4)
    pred, pred_image = read_zyx(output)
    assert pred.dtype == np.uint8
    truth, _ = read_zyx(truth_file)
    dice = dice_per_label(pred, truth, NAMES)
    # same anatomy, same labels: a shifted result loses overlap, a mirrored one swaps the kidneys
    assert dice[1] > reference_dice[1] - 0.15, (dice, reference_dice)  # liver
    for kidney, other in ((3, 4), (4, 3)):
        assert dice[kidney] > 0.5 * reference_dice[kidney], (dice, reference_dice)
        swapped = dice_per_label((pred == kidney).astype(np.uint8), (truth == other).astype(np.uint8), {1: ""})[1]
        assert dice[kidney] > swapped + 0.2, (kidney, dice[kidney], swapped)
    sidecar = json.loads(output.with_name(output.name.split(".")[0] + ".labels.json").read_text())
    assert sidecar["labels"]["3"]["name"] == "right kidney"


def test_nifti_output_keeps_the_input_affine_exactly(seg_model, cohort, tmp_path):
    source = cohort / "images" / "phantom_001.nii.gz"
    out = segment(seg_model, source, tmp_path / "seg.nii.gz", largest_component=True)[0]
    a, b = nib.load(source), nib.load(out)
    assert a.shape == b.shape and np.array_equal(a.affine, b.affine)
    assert b.get_data_dtype() == np.uint8


def test_folder_in_folder_out_and_never_over_the_input(seg_model, cohort, tmp_path):
    events = []
    outs = segment(seg_model, cohort / "images", tmp_path / "pred", progress=events.append)
    assert sorted(p.name for p in outs) == sorted(p.name for p in (cohort / "images").iterdir())
    per_file = [e["seconds"] for e in events if e.get("stage") == "segment"]  # time per phase, per scan
    assert len(per_file) == len(outs)
    assert all(list(s) == ["read", "preprocess", "inference", "resample_back", "write"] for s in per_file)
    assert all(v >= 0 for s in per_file for v in s.values()) and sum(per_file[0].values()) > 0
    with pytest.raises(PGLError, match="would overwrite the input scan"):
        segment(seg_model, cohort / "images", cohort / "images")
    with pytest.raises(PGLError, match="no such scan or folder"):
        segment(seg_model, tmp_path / "missing.nii.gz", tmp_path / "x.nii.gz")


def test_one_pass_is_refused_for_an_instance_normalised_model_by_name(seg_model, cohort, tmp_path):
    with pytest.raises(PGLError, match=r"--one-pass needs a model .* leave --one-pass out"):
        segment(seg_model, cohort / "images" / "phantom_002.nii.gz", tmp_path / "x.nii.gz", one_pass=True)
    assert not (tmp_path / "x.nii.gz").exists()


def test_largest_component_auto_takes_the_labels_the_training_data_showed_in_one_piece(seg_model, cohort, tmp_path):
    from pgl_engine.models.store import load_model

    model = load_model(seg_model)
    one_piece = model.metadata["one_piece_labels"]
    assert 1 in one_piece and set(one_piece) <= {int(v) for v in model.label_table}  # the liver is one piece
    assert largest_component_values(model, "auto") == one_piece
    assert largest_component_values(model, "all") is None and largest_component_values(model, True) is None
    assert largest_component_values(model, "none") == [] == largest_component_values(model, False)
    del model.metadata["one_piece_labels"]  # a model fine-tuned before the record existed
    assert largest_component_values(model, "auto") == []
    with pytest.raises(PGLError, match="--largest-component must be one of auto, all, none, got 'some'"):
        segment(seg_model, cohort / "images" / "phantom_001.nii.gz", tmp_path / "x.nii.gz", largest_component="some")


def test_largest_component_keeps_one_blob_per_label():
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[2:8, 2:8, 2:8] = 1
    labels[15:17, 15:17, 15:17] = 1
    labels[10:12, 2:4, 2:4] = 2
    kept = keep_largest_components(labels.copy())
    assert (kept == 1).sum() == 216 and (kept == 2).sum() == 8


def test_files_it_did_not_write_are_replaced_only_with_overwrite(seg_model, cohort, tmp_path, capsys):
    from pgl_engine.cli import main

    refs = tmp_path / "refs"
    refs.mkdir()
    reference = refs / "phantom_002.nii.gz"  # a reference label map named like its scan, as they are
    reference.write_bytes((cohort / "labels" / "phantom_002.nii.gz").read_bytes())
    before = reference.read_bytes()
    args = ["segment", "--model", str(seg_model), "--input", str(cohort / "images" / "phantom_002.nii.gz"),
            "--output", str(reference), "--device", "cpu", "--progress", "none"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "1 file(s) there would be replaced that pgl segment did not write" in err and str(reference) in err
    assert reference.read_bytes() == before
    assert main(args + ["--overwrite"]) == 0 and reference.read_bytes() != before
    assert main(args) == 0  # now a previous output of ours (its .labels.json beside it): replaced without asking


def test_folder_mode_prepares_the_next_scan_while_the_network_runs(seg_model, cohort, tmp_path, monkeypatch):
    """The network on scan k waits (up to 60 s) until scan k+1 is being prepared: only overlap lets it finish."""
    import threading

    import pgl_engine.inference.segmentation as segment_module

    started = {name: threading.Event() for name in ("phantom_001.nii.gz", "phantom_002.nii.gz")}
    prepare, finish = segment_module.prepare_scan, segment_module.finish_scan

    def watched_prepare(model, source):
        if source.name in started:
            started[source.name].set()
        return prepare(model, source)

    def waiting_finish(model, scan, *args, **kwargs):
        following = {"phantom_000.nii.gz": "phantom_001.nii.gz", "phantom_001.nii.gz": "phantom_002.nii.gz"}
        if scan.source.name in following:
            assert started[following[scan.source.name]].wait(60), "the next scan was not prepared meanwhile"
        return finish(model, scan, *args, **kwargs)

    monkeypatch.setattr(segment_module, "prepare_scan", watched_prepare)
    monkeypatch.setattr(segment_module, "finish_scan", waiting_finish)
    outputs = segment(seg_model, cohort / "images", tmp_path / "segs", device="cpu")
    assert [o.name for o in outputs] == ["phantom_000.nii.gz", "phantom_001.nii.gz", "phantom_002.nii.gz"]
    single = segment(seg_model, cohort / "images" / "phantom_001.nii.gz", tmp_path / "one.nii.gz", device="cpu")[0]
    assert np.array_equal(read_zyx(outputs[1])[0], read_zyx(single)[0])


def test_a_scan_that_fails_to_prepare_in_folder_mode_is_named(seg_model, cohort, tmp_path):
    import shutil

    folder = tmp_path / "scans"
    folder.mkdir()
    shutil.copy(cohort / "images" / "phantom_000.nii.gz", folder / "a.nii.gz")
    (folder / "b.nii.gz").write_bytes(b"not a scan")
    with pytest.raises(PGLError, match="b.nii.gz"):
        segment(seg_model, folder, tmp_path / "segs", device="cpu")
    assert (tmp_path / "segs" / "a.nii.gz").is_file()  # the scan before it was written
