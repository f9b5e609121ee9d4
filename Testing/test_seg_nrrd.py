"""Slicer segmentation files (.seg.nrrd) in and out: read with slicerio, segments matched across cases by
terminology code or name (not by label value), colours kept, overlapping layers resolved as Slicer does,
resampled from another grid; `pgl segment --format seg.nrrd` read back by slicerio and by Slicer's own reader."""
import json
import shutil
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio
from conftest import SEG_NETWORK, seg_options
from seg_files import phantom_masks, terminology, write_seg

from pgl_engine.cli import main
from pgl_engine.config import NetworkConfig
from pgl_engine.data.cache import ScanCache
from pgl_engine.data.imaging import find_scans, scan_name
from pgl_engine.data.labels import (LabelledPair, label_on_scan_grid, label_table, labelled_values, load_label_on_grid,
                                    match_segments, pair_folders)
from pgl_engine.data.scan_list import scan_listing
from pgl_engine.errors import PGLError
from pgl_engine.finetuning.trainer import finetune
from pgl_engine.inference.segmentation import segment
from pgl_engine.models.store import read_metadata

RED, GREEN, BLUE = [0.9, 0.1, 0.1], [0.1, 0.8, 0.2], [0.2, 0.3, 0.9]


def events():
    seen = []
    return seen, seen.append


def case_a(cohort, folder, **kw):
    """phantom_000: liver (coded), spleen (no code), stored in that order."""
    reference, labels = phantom_masks(cohort / "labels" / "phantom_000.nii.gz")
    return write_seg(folder / "phantom_000.seg.nrrd", reference, [
        (labels == 1, {"name": "liver", "color": RED, "terminology": terminology("liver")}),
        (labels == 2, {"name": "spleen", "color": GREEN, "terminology": terminology(None)})], **kw)


def case_b(cohort, folder, **kw):
    """phantom_001 spelt otherwise and stored in the other order: 'Spleen' first, the liver as 'hepar' (coded)."""
    reference, labels = phantom_masks(cohort / "labels" / "phantom_001.nii.gz")
    return write_seg(folder / "phantom_001.seg.nrrd", reference, [
        (labels == 2, {"name": "Spleen", "color": BLUE, "terminology": terminology(None)}),
        (labels == 1, {"name": "hepar", "color": BLUE, "terminology": terminology("liver")})], **kw)


def scan_of(cohort, i):
    return cohort / "images" / f"phantom_{i:03d}.nii.gz"


def test_a_seg_nrrd_pairs_with_its_scan_and_is_never_taken_for_one(cohort, tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for i in (0, 1):
        shutil.copy(scan_of(cohort, i), images)
    case_a(cohort, labels)
    case_a(cohort, images)  # a segmentation saved beside the scans: not a scan (pretraining must not learn it)
    assert scan_name(labels / "phantom_000.seg.nrrd") == "phantom_000"
    assert [p.name for p in find_scans(images).scans] == ["phantom_000.nii.gz", "phantom_001.nii.gz"]
    skipped = scan_listing(images)["skipped"]
    assert [(s["what"].endswith("phantom_000.seg.nrrd"), "Slicer segmentation" in s["reason"]) for s in skipped] == \
        [(True, True)]
    pairs, notes = pair_folders(images, labels)
    assert [(p.image.name, p.label.name) for p in pairs] == [("phantom_000.nii.gz", "phantom_000.seg.nrrd")]
    assert "phantom_001" in notes[0]
    shutil.copy(cohort / "labels" / "phantom_000.nii.gz", labels)
    with pytest.raises(PGLError, match="two label maps for the scan phantom_000"):
        pair_folders(images, labels)


def test_segments_match_across_cases_by_code_then_name_not_by_value_and_keep_their_colours(cohort, tmp_path):
    pairs = [LabelledPair(scan_of(cohort, 0), case_a(cohort, tmp_path)),
             LabelledPair(scan_of(cohort, 1), case_b(cohort, tmp_path))]
    seen, progress = events()
    matched, names = match_segments(pairs, {}, progress)
    assert names == {1: "liver", 2: "spleen"}
    report = " ".join(e["message"] for e in seen)
    assert "'Spleen' in phantom_001.seg.nrrd (same name ignoring case) taken as 'spleen'" in report
    assert "'hepar' in phantom_001.seg.nrrd (same terminology, SCT 10200004 Liver) taken as 'liver'" in report
    table = label_table(names)  # colours from the first case that holds each structure
    assert [table["1"]["color"], table["2"]["color"]] == [[230, 26, 26], [26, 204, 51]]
    cache = ScanCache(None, (8.0, 8.0, 8.0), (-200.0, 300.0))
    for i, pair in enumerate(matched):
        truth = load_label_on_grid(LabelledPair(pair.image, cohort / "labels" / f"phantom_{i:03d}.nii.gz"),
                                   cache.get(pair.image), {1: "liver", 2: "spleen", 3: "r", 4: "l", 5: "t"})
        got = load_label_on_grid(pair, cache.get(pair.image), names)
        assert np.array_equal(got, np.where(truth <= 2, truth, 0))  # by name and code, not by stored value
        assert labelled_values(pair) == {1, 2}
    # with label names given, segments join them; others are left out and said so
    seen.clear()
    matched, names = match_segments(pairs[:1], {1: "Liver"}, progress)
    assert names == {1: "Liver"} and matched[0].segments == {"Segment_1": 1}
    assert any("spleen are not among the label names" in e["message"] for e in seen)


def test_overlapping_segments_take_the_later_one_as_slicer_does_and_say_so(cohort, tmp_path):
    reference, labels = phantom_masks(cohort / "labels" / "phantom_000.nii.gz")
    tumour = labels == 5
    assert tumour.any()
    path = write_seg(tmp_path / "phantom_000.seg.nrrd", reference, [
        (np.isin(labels, (1, 5)), {"name": "liver", "terminology": terminology("liver")}),  # the tumour lies in it
        (tumour, {"name": "tumour"})])
    assert slicerio.read_segmentation(str(path))["voxels"].ndim == 4  # two layers
    seen, progress = events()
    matched, names = match_segments([LabelledPair(scan_of(cohort, 0), path)], {}, progress)
    assert names == {1: "liver", 2: "tumour"}
    assert any(f"'liver' and 'tumour' overlap in {int(tumour.sum())} voxel(s)" in e["message"] and
               "the later segment in the file, 'tumour', is taken" in e["message"] for e in seen)
    image = sitk.ReadImage(str(scan_of(cohort, 0)))
    got = label_on_scan_grid(matched[0], image, names)
    assert np.array_equal(got, np.select([labels == 5, labels == 1], [2, 1], 0))


@pytest.mark.parametrize("grid", ["cropped", "finer"])
def test_a_segmentation_on_another_grid_is_resampled_onto_its_scan_nearest(cohort, tmp_path, grid):
    reference, labels = phantom_masks(cohort / "labels" / "phantom_000.nii.gz")
    expected = np.where(labels <= 2, labels, 0)
    if grid == "finer":  # Slicer's oversampling: half the spacing along x, each voxel twice
        fine = sitk.Expand(reference, (2, 1, 1), sitk.sitkNearestNeighbor)
        fine.SetOrigin(reference.TransformContinuousIndexToPhysicalPoint((-0.25, 0, 0)))
        reference, labels = fine, sitk.GetArrayFromImage(fine)
    path = write_seg(tmp_path / "phantom_000.seg.nrrd", reference, [
        (labels == 1, {"name": "liver"}), (labels == 2, {"name": "spleen"})], crop=grid == "cropped")
    stored = slicerio.read_segmentation(str(path))["voxels"].shape
    assert stored != expected.shape[::-1]
    pair, names = match_segments([LabelledPair(scan_of(cohort, 0), path)], {})
    got = label_on_scan_grid(pair[0], sitk.ReadImage(str(scan_of(cohort, 0))), names)
    assert got.shape == expected.shape and np.array_equal(got, expected)


def test_bad_segmentations_are_refused_naming_the_file_and_what_to_do(cohort, tmp_path):
    reference, labels = phantom_masks(cohort / "labels" / "phantom_000.nii.gz")
    scan = scan_of(cohort, 0)
    a = write_seg(tmp_path / "a.seg.nrrd", reference, [(labels == 1, {"name": "liver",
                                                                         "terminology": terminology("liver")})])
    b = write_seg(tmp_path / "b.seg.nrrd", reference, [(labels == 2, {"name": "Liver",
                                                                         "terminology": terminology("kidney")})])
    with pytest.raises(PGLError, match=r"b.seg.nrrd: segment 'Liver' is coded SCT 64033007 Kidney but 'liver' of "
                                       r"a.seg.nrrd is coded SCT 10200004 Liver"):
        match_segments([LabelledPair(scan, a), LabelledPair(scan, b)], {})
    twice = write_seg(tmp_path / "twice.seg.nrrd", reference, [(labels == 1, {"name": "liver"}),
                                                                (labels == 2, {"name": "LIVER"})])
    with pytest.raises(PGLError, match="segments 'liver' and 'LIVER' are both 'liver'"):
        match_segments([LabelledPair(scan, twice)], {})
    with pytest.raises(PGLError, match="label maps and Slicer segmentations .* are mixed"):
        match_segments([LabelledPair(scan, a), LabelledPair(scan, cohort / "labels" / "phantom_000.nii.gz")], {})
    far = sitk.Image(reference)
    far.SetOrigin((5000.0, 5000.0, 5000.0))
    outside = write_seg(tmp_path / "far.seg.nrrd", far, [(labels == 1, {"name": "liver"})])
    pair, names = match_segments([LabelledPair(scan, outside)], {})
    with pytest.raises(PGLError, match="far.seg.nrrd: its segments lie outside its scan phantom_000.nii.gz"):
        label_on_scan_grid(pair[0], sitk.ReadImage(str(scan)), names)
    broken = tmp_path / "broken.seg.nrrd"
    broken.write_bytes(b"NRRD0004\ntype: nonsense\n")
    with pytest.raises(PGLError, match="broken.seg.nrrd: cannot be read as a Slicer segmentation"):
        match_segments([LabelledPair(scan, broken)], {})


def test_an_empty_segment_is_not_labelled_in_its_case(cohort, tmp_path):
    reference, labels = phantom_masks(cohort / "labels" / "phantom_000.nii.gz")
    path = write_seg(tmp_path / "phantom_000.seg.nrrd", reference, [
        (labels == 1, {"name": "liver"}), (np.zeros_like(labels, bool), {"name": "spleen"})])
    seen, progress = events()
    matched, names = match_segments([LabelledPair(scan_of(cohort, 0), path)], {1: "liver", 2: "spleen"}, progress)
    assert labelled_values(matched[0]) == {1}
    assert any("segment(s) spleen are empty, so this case does not label them" in e["message"] for e in seen)


def test_finetuning_on_segmentations_takes_their_names_colours_and_partial_labels(cohort, tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for i in (0, 1):
        shutil.copy(scan_of(cohort, i), images)
    case_a(cohort, labels, crop=True)
    reference, array = phantom_masks(cohort / "labels" / "phantom_001.nii.gz")
    write_seg(labels / "phantom_001.seg.nrrd", reference, [(array == 1, {"name": "Liver", "color": BLUE})])
    seen, progress = events()
    options = seg_options(cohort, tmp_path / "model", tmp_path / "cache", dataset="", images=str(images),
                          labels=str(labels), steps=2, network=NetworkConfig(**SEG_NETWORK))
    model = finetune(progress=progress, **options)
    table = read_metadata(model)["labels"]
    assert table == {"1": {"name": "liver", "color": [230, 26, 26]}, "2": {"name": "spleen", "color": [26, 204, 51]}}
    assert any("phantom_001 labels liver (not spleen)" in e.get("message", "") for e in seen)


def oblique_lps_scan(cohort, tmp_path):
    """phantom_002 as an oblique NRRD (LPS, rotated axes), the way scans come from many scanners."""
    image = sitk.ReadImage(str(scan_of(cohort, 2)))
    euler = sitk.Euler3DTransform()
    euler.SetRotation(0.15, -0.1, 0.2)
    image.SetDirection(tuple((np.array(euler.GetMatrix()).reshape(3, 3) @ np.diag([-1, -1, 1])).ravel()))
    path = tmp_path / "oblique.nrrd"
    sitk.WriteImage(image, str(path))
    return path


@pytest.mark.slow
def test_segment_writes_seg_nrrd_that_slicerio_reads_as_the_nifti_output(seg_model, cohort, tmp_path):
    scan = oblique_lps_scan(cohort, tmp_path)
    nifti = segment(seg_model, scan, tmp_path / "out" / "oblique.nii.gz", device="cpu")[0]
    assert main(["segment", "--model", str(seg_model), "--input", str(scan), "--output", f"{tmp_path / 'seg'}/",
                 "--format", "seg.nrrd", "--device", "cpu", "--progress", "none"]) == 0
    path = tmp_path / "seg" / "oblique.seg.nrrd"
    written = slicerio.read_segmentation(str(path))
    table = read_metadata(seg_model)["labels"]
    segments = written["segments"]
    assert [s["name"] for s in segments] == [table[k]["name"] for k in sorted(table, key=int)]
    assert [[round(255 * c) for c in s["color"]] for s in segments] == \
        [table[k]["color"] for k in sorted(table, key=int)]
    assert segments[0]["terminology"]["type"] == ["SCT", "10200004", "Liver"]  # "liver": a known structure
    kidney = next(s for s in segments if s["name"] == "right kidney")["terminology"]
    assert kidney["type"][1] == "64033007" and kidney["typeModifier"] == ["SCT", "24028007", "Right"]
    assert "terminology" not in next(s for s in segments if s["name"] == "tumour")  # not a known structure
    reference = sitk.ReadImage(str(nifti))
    labels = sitk.GetArrayFromImage(reference).transpose(2, 1, 0)  # i, j, k
    voxels = written["voxels"]
    assert voxels.shape == labels.shape
    for s in segments:
        assert np.array_equal(slicerio.segment_mask(written, s), labels == s["labelValue"]), s["name"]
    assert set(np.unique(labels)) - {0}  # the model found something
    matrix = np.array(written["ijkToLPS"])
    assert np.allclose(matrix[:3, 3], reference.GetOrigin(), atol=1e-3)
    assert np.allclose(matrix[:3, :3], np.array(reference.GetDirection()).reshape(3, 3) @
                       np.diag(reference.GetSpacing()), atol=1e-4)
    assert json.loads((tmp_path / "seg" / "oblique.labels.json").read_text())["written_by"] == "pgl segment"
    # a second run replaces its own output; a .seg.nrrd is no input
    assert main(["segment", "--model", str(seg_model), "--input", str(scan), "--output", str(path),
                 "--device", "cpu", "--progress", "none"]) == 0
    with pytest.raises(PGLError, match="is a Slicer segmentation .* not a scan"):
        segment(seg_model, path, tmp_path / "x.nii.gz")
    with pytest.raises(PGLError, match="--format seg.nrrd writes Slicer segmentations"):
        segment(seg_model, scan, tmp_path / "x.nii.gz", output_format="seg.nrrd")


def test_slicer_reads_the_written_segmentation_named_and_coded(seg_model, cohort, tmp_path, mrml):
    import slicer

    out = segment(seg_model, scan_of(cohort, 2), tmp_path / "result.seg.nrrd", device="cpu")[0]
    node = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "result")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(out))
    assert storage.ReadData(node)
    segmentation = node.GetSegmentation()
    names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
    assert names == ["liver", "spleen", "right kidney", "left kidney", "tumour"]
    liver = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("liver"))
    import vtk

    entry = vtk.reference("")
    liver.GetTag(liver.GetTerminologyEntryTagName(), entry)
    assert "SCT^10200004^Liver" in str(entry)


def test_without_slicerio_a_segmentation_is_refused_with_what_to_install(cohort, tmp_path, monkeypatch):
    path = case_a(cohort, tmp_path)
    monkeypatch.setitem(sys.modules, "slicerio", None)  # as in an environment made by hand without it
    with pytest.raises(PGLError, match=r"needs the slicerio package: pip install slicerio"):
        match_segments([LabelledPair(scan_of(cohort, 0), path)], {})
