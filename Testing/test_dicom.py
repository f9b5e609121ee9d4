"""DICOM archives: series found in a folder tree, awkward objects skipped with their reason, a series read as the
same physical image as the NIfTI it came from, cached by content, and usable by every command."""
import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import tiny_config
from dicom_series import write_localizer, write_report, write_series
from PGLPretrainLib.logic import describe_listing

from pgl_engine.cli import main
from pgl_engine.data.cache import ScanCache
from pgl_engine.data.dicom import DicomSeries
from pgl_engine.data.imaging import find_scans, image_affine_ras, list_scans, read_geometry, read_image
from pgl_engine.data.labels import pair_folders
from pgl_engine.errors import PGLError
from pgl_engine.pretraining.trainer import prepare_scans


@pytest.fixture(scope="module")
def phantom(cohort):
    path = cohort / "images" / "phantom_000.nii.gz"
    return path, read_image(path)


def test_a_series_is_the_same_physical_image_as_its_nifti(phantom, tmp_path):
    path, image = phantom
    write_series(image, tmp_path / "study" / "ct", slope=1.0, intercept=-1024.0)
    (series,) = list_scans(tmp_path)
    assert isinstance(series, DicomSeries) and series.name == "study_ct"
    read = read_image(series)
    assert read.GetSize() == image.GetSize()
    np.testing.assert_allclose(image_affine_ras(read), image_affine_ras(image), atol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(image))
    size, affine = read_geometry(series)  # from the headers alone
    assert size == read.GetSize() and np.allclose(affine, image_affine_ras(read), atol=1e-4)


def test_rescale_slope_and_intercept_give_hounsfield_units(phantom, tmp_path):
    _, image = phantom
    write_series(image, tmp_path / "ct", slope=2.0, intercept=-2048.0)
    read = read_image(list_scans(tmp_path)[0])
    difference = np.abs(sitk.GetArrayFromImage(read).astype(float) - sitk.GetArrayFromImage(image).astype(float))
    assert difference.max() <= 1.0  # stored values are (HU + 2048) / 2, rounded


def test_an_archive_tree_gives_its_ct_series_and_lists_the_rest_with_reasons(phantom, tmp_path):
    _, image = phantom
    study = tmp_path / "archive" / "PATIENT1" / "STUDY1"
    write_series(image, study / "CT_venous", number=3)
    write_series(image, study / "CT_copy", number=4, drop_slices=(5,))
    write_series(image, study / "CT_tilt", number=5, tilt_mm_per_slice=0.8)
    write_series(image, study / "CT_mixed", number=6, tilt_orientation_of=4)
    write_series(image, study / "MR", number=7, modality="MR")
    write_localizer(image, study / "SCOUT")
    write_report(study / "REPORT" / "SR0001.dcm")
    (study / "notes.txt").write_text("not a scan")
    (tmp_path / "archive" / "labels").mkdir()
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), str(tmp_path / "archive" / "labels" / "x.nii.gz"))
    search = find_scans(tmp_path / "archive")
    assert [s.name for s in search.scans] == ["PATIENT1_STUDY1_CT_venous"]
    reasons = {s.what.split(" [")[0].rsplit("/", 1)[-1]: s.reason for s in search.skipped}
    assert "missing slices" in reasons["CT_copy"] and "after slice 5" in reasons["CT_copy"]
    assert "gantry tilt" in reasons["CT_tilt"]
    assert "not parallel" in reasons["CT_mixed"]
    assert "modality MR" in reasons["MR"] and "--modalities CT MR" in reasons["MR"]
    assert "localizer" in reasons["SCOUT"]
    assert "not an image (SR" in reasons["REPORT"]
    assert "label maps" in reasons["labels"]
    with_mr = find_scans(tmp_path / "archive", modalities=("CT", "MR"))
    assert "PATIENT1_STUDY1_MR" in [s.name for s in with_mr.scans]


def test_scan_list_reports_counts_in_json_and_a_table(phantom, tmp_path, capsys):
    _, image = phantom
    write_series(image, tmp_path / "a" / "ct", number=2)
    write_localizer(image, tmp_path / "a" / "scout")
    assert main(["scan-list", "--images", str(tmp_path / "a"), "--progress", "json"]) == 0
    done = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert done["counts"] == {"scans": 1, "files": 0, "series": 1, "skipped": 1, "other_files": 0}
    assert done["scans"][0]["files"] == image.GetSize()[2] and done["skipped"][0]["reason"].startswith("a localizer")
    assert main(["scan-list", "--images", str(tmp_path / "a")]) == 0
    table = capsys.readouterr().out
    assert "1 scan(s) to use" in table and "use   ct" in table and "skip" in table


def test_a_series_is_cached_by_content_and_decoded_once(phantom, tmp_path, monkeypatch):
    _, image = phantom
    write_series(image, tmp_path / "scans" / "ct")
    (series,) = list_scans(tmp_path / "scans")
    first = ScanCache(tmp_path / "cache", (8.0, 8.0, 8.0), (-1024, 325)).get(series)
    import pgl_engine.data.imaging as imaging

    monkeypatch.setattr(imaging, "read_series", lambda s: pytest.fail("a cached series was decoded again"))
    cache = ScanCache(tmp_path / "cache", (8.0, 8.0, 8.0), (-1024, 325))
    again = cache.get(list_scans(tmp_path / "scans")[0])
    assert cache.hits == 1 and again.digest == first.digest
    np.testing.assert_array_equal(again.load(), first.load())


def test_same_named_scan_files_in_two_subfolders_are_refused(cohort, tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "scan.nii.gz").write_bytes((cohort / "images" / "phantom_000.nii.gz").read_bytes())
    with pytest.raises(PGLError, match="two scans named scan.nii.gz"):
        find_scans(tmp_path)


def test_series_pair_with_label_maps_named_after_them_and_segment_to_named_files(phantom, cohort, seg_model,
                                                                                   tmp_path, capsys):
    path, image = phantom
    write_series(image, tmp_path / "archive" / "ct")
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "ct.nii.gz").write_bytes((cohort / "labels" / "phantom_000.nii.gz").read_bytes())
    (pair,), _ = pair_folders(tmp_path / "archive", labels)
    assert isinstance(pair.image, DicomSeries) and pair.label == labels / "ct.nii.gz"
    code = main(["segment", "--model", str(seg_model), "--input", str(tmp_path / "archive"), "--output",
                 str(tmp_path / "out"), "--device", "cpu", "--progress", "none"])
    assert code == 0, capsys.readouterr().err
    written = nib.load(str(tmp_path / "out" / "ct.nii.gz"))
    np.testing.assert_allclose(written.affine, nib.load(str(path)).affine, atol=1e-4)
    assert written.shape == nib.load(str(path)).shape


def damaged_archive(image, root):
    """A good series, a series with one slice cut short in its pixel data, and a file with the DICOM marker followed
    by garbage (as from an interrupted copy); returns the two damaged files."""
    write_series(image, root / "good", number=1)
    cut = write_series(image, root / "cut", number=2)[3]
    cut.write_bytes(cut.read_bytes()[:-40])
    garbled = root / "loose" / "IM0099.dcm"
    garbled.parent.mkdir()
    garbled.write_bytes(b"\0" * 128 + b"DICM" + np.random.default_rng(0).bytes(300))
    (root / "loose" / "notes.txt").write_text("not a scan")  # still an ignored other file
    (root / "loose" / "photo.bin").write_bytes(b"\0" * 200)
    return cut, garbled


def test_damaged_dicom_files_are_named_with_the_reason_not_counted_as_other_files(phantom, tmp_path, capsys):
    _, image = phantom
    cut, garbled = damaged_archive(image, tmp_path / "archive")
    assert main(["scan-list", "--images", str(tmp_path / "archive"), "--progress", "json"]) == 0
    done = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [s["name"] for s in done["scans"]] == ["good"]
    reasons = {s["what"]: s["reason"] for s in done["skipped"]}
    assert "truncated" in reasons[str(cut)] and "pixel data" in reasons[str(cut)]
    assert "truncated or garbled" in reasons[str(garbled)]
    assert "missing slices" in next(r for w, r in reasons.items() if w.startswith("cut ["))  # its series, one short
    assert done["counts"]["other_files"] == 1  # photo.bin only: notes are not counted, damaged DICOM is named
    survey = describe_listing(done)  # the Pretrain panel's survey of the folder
    assert f"{cut}: truncated" in survey and f"{garbled}: truncated or garbled" in survey
    assert main(["scan-list", "--images", str(tmp_path / "archive")]) == 0
    table = capsys.readouterr().out
    assert f"skip  {garbled}: truncated or garbled" in table and f"skip  {cut}: truncated" in table


def test_pretraining_warns_with_the_names_of_damaged_dicom_files(phantom, tmp_path):
    _, image = phantom
    cut, garbled = damaged_archive(image, tmp_path / "archive")
    events = []
    config = tiny_config(tmp_path / "archive", tmp_path / "out", tmp_path / "cache")
    assert len(prepare_scans(config, events.append)) == 1
    warning = "\n".join(e["message"] for e in events if e["event"] == "warning")
    assert f"{cut}: truncated" in warning and f"{garbled}: truncated or garbled" in warning
