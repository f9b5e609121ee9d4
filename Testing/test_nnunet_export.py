"""`pgl export-dataset --format nnunet`: an nnU-Net v2 raw dataset, judged by nnU-Net's own integrity check;
cases that do not label every structure are left out and listed; nothing of the user's is replaced."""
import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
from seg_files import phantom_masks, terminology, write_seg

from pgl_engine import export_dataset
from pgl_engine.cli import main
from pgl_engine.errors import PGLError


def verify(folder, capfd):
    """nnU-Net's verification passes, and prints neither an error nor a warning (geometry mismatches are only
    printed)."""
    capfd.readouterr()
    verify_dataset_integrity(str(folder), num_processes=1)
    printed = capfd.readouterr().out
    assert "verify_dataset_integrity Done" in printed
    assert "Error" not in printed and "Warning" not in printed and "WARNING" not in printed, printed


def cases_folder(cohort, tmp_path, count=3):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for i in range(count):
        shutil.copy(cohort / "images" / f"phantom_{i:03d}.nii.gz", images)
        for suffix in (".nii.gz", ".labels.json"):
            shutil.copy(cohort / "labels" / f"phantom_{i:03d}{suffix}", labels)
    return images, labels


@pytest.mark.slow
def test_labelled_folders_export_as_a_dataset_nnunet_verifies(cohort, tmp_path, capfd):
    images, labels = cases_folder(cohort, tmp_path)
    seen = []
    target = export_dataset(tmp_path / "nnUNet_raw", "Abdomen", 7, images=images, labels=labels,
                            progress=seen.append)
    assert target == tmp_path / "nnUNet_raw" / "Dataset007_Abdomen"
    data = json.loads((target / "dataset.json").read_text())
    assert data["labels"] == {"background": 0, "liver": 1, "spleen": 2, "right kidney": 3, "left kidney": 4,
                              "tumour": 5}  # names from the label maps' tables
    assert (data["channel_names"], data["numTraining"], data["file_ending"]) == ({"0": "CT"}, 3, ".nii.gz")
    assert sorted(p.name for p in (target / "imagesTr").iterdir()) == [f"Abdomen_{i:03d}_0000.nii.gz"
                                                                       for i in (1, 2, 3)]
    assert "phantom" not in json.dumps(data) + " ".join(p.name for p in target.rglob("*"))  # neutral case IDs
    original = nib.load(cohort / "images" / "phantom_001.nii.gz")
    exported = nib.load(target / "imagesTr" / "Abdomen_002_0000.nii.gz")
    assert np.allclose(original.affine, exported.affine, atol=1e-4)
    assert np.array_equal(np.asarray(original.dataobj), np.asarray(exported.dataobj))
    truth = np.asarray(nib.load(cohort / "labels" / "phantom_001.nii.gz").dataobj)
    assert np.array_equal(np.asarray(nib.load(target / "labelsTr" / "Abdomen_002.nii.gz").dataobj), truth)
    assert seen[-1]["event"] == "done" and seen[-1]["cases"] == 3 and seen[-1]["left_out"] == []
    verify(target, capfd)
    # the judge can fail, and what its worker processes print is seen: a label value the dataset does not name
    label = sitk.ReadImage(str(target / "labelsTr" / "Abdomen_001.nii.gz"))
    broken = sitk.GetImageFromArray(sitk.GetArrayFromImage(label) * 2)
    broken.CopyInformation(label)
    sitk.WriteImage(broken, str(target / "labelsTr" / "Abdomen_001.nii.gz"))
    with pytest.raises(RuntimeError, match="unexpected labels"):
        verify_dataset_integrity(str(target), num_processes=1)
    assert "Error: Unexpected labels found in file" in capfd.readouterr().out


def test_labels_become_consecutive_and_segmentations_export_on_the_scan_grid(cohort, tmp_path, capfd):
    """Label values 3 and 4 only (the kidneys) -> 1 and 2; a .seg.nrrd case cropped and with overlapping layers
    lands on its scan's grid."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for i in range(2):
        shutil.copy(cohort / "images" / f"phantom_{i:03d}.nii.gz", images)
        reference, array = phantom_masks(cohort / "labels" / f"phantom_{i:03d}.nii.gz")
        write_seg(labels / f"phantom_{i:03d}.seg.nrrd", reference, [
            (np.isin(array, (3, 4)), {"name": "kidneys"}),  # overlaps both sides: a layer of its own
            (array == 3, {"name": "Kidney_Right", "terminology": terminology("kidney", "right")}),
            (array == 4, {"name": "Kidney_Left", "terminology": terminology("kidney", "left")})], crop=True)
    target = export_dataset(tmp_path / "raw", "Kidneys", 12, images=images, labels=labels,
                            label_names=["right kidney", "left kidney"])
    data = json.loads((target / "dataset.json").read_text())
    assert data["labels"] == {"background": 0, "right kidney": 1, "left kidney": 2}  # matched by code
    for i in range(2):
        label = sitk.ReadImage(str(target / "labelsTr" / f"Kidneys_{i + 1:03d}.nii.gz"))
        image = sitk.ReadImage(str(target / "imagesTr" / f"Kidneys_{i + 1:03d}_0000.nii.gz"))
        assert label.GetSize() == image.GetSize()
        _, truth = phantom_masks(cohort / "labels" / f"phantom_{i:03d}.nii.gz")
        assert np.array_equal(sitk.GetArrayFromImage(label), np.select([truth == 3, truth == 4], [1, 2], 0))
    verify(target, capfd)


def test_cases_that_do_not_label_every_structure_are_left_out_and_listed(cohort, tmp_path, capfd):
    images, labels = cases_folder(cohort, tmp_path)
    table = json.loads((labels / "phantom_001.labels.json").read_text())
    del table["labels"]["2"]  # phantom_001 does not label the spleen
    array = nib.load(labels / "phantom_001.nii.gz")
    kept = np.where(np.asarray(array.dataobj) == 2, 0, np.asarray(array.dataobj)).astype(np.uint8)
    nib.save(nib.Nifti1Image(kept, array.affine), labels / "phantom_001.nii.gz")
    (labels / "phantom_001.labels.json").write_text(json.dumps(table))
    seen = []
    target = export_dataset(tmp_path / "raw", "Partial", 3, images=images, labels=labels, keep_case_names=True,
                            progress=seen.append)
    assert json.loads((target / "dataset.json").read_text())["numTraining"] == 2
    assert sorted(p.name for p in (target / "labelsTr").iterdir()) == ["phantom_000.nii.gz", "phantom_002.nii.gz"]
    warning = next(e for e in seen if e["event"] == "warning")
    assert "phantom_001 lacks spleen" in warning["message"] and "left out" in warning["message"]
    verify(target, capfd)
    with pytest.raises(PGLError, match="no case labels every structure"):
        export_dataset(tmp_path / "raw2", "Partial", 3, pairs=[(images / "phantom_001.nii.gz",
                                                               labels / "phantom_001.nii.gz")],
                       label_names=["liver", "spleen", "right kidney", "left kidney", "tumour"])


def test_nothing_of_the_users_is_replaced_and_bad_options_are_named(cohort, tmp_path):
    images, labels = cases_folder(cohort, tmp_path, count=1)
    raw = tmp_path / "raw"
    (raw / "Dataset005_Mine").mkdir(parents=True)
    (raw / "Dataset005_Mine" / "notes.txt").write_text("mine")
    with pytest.raises(PGLError, match="Dataset005_Mine: exists and is not empty"):
        export_dataset(raw, "Mine", 5, images=images, labels=labels)
    with pytest.raises(PGLError, match="already holds Dataset005_Mine with the ID 5"):
        export_dataset(raw, "Other", 5, images=images, labels=labels)
    assert (raw / "Dataset005_Mine" / "notes.txt").read_text() == "mine"
    with pytest.raises(PGLError, match="--id must be a whole number from 1 to 999"):
        export_dataset(raw, "X", 1000, images=images, labels=labels)
    with pytest.raises(PGLError, match="--name must be letters"):
        export_dataset(raw, "two words", 6, images=images, labels=labels)
    with pytest.raises(PGLError, match="one way"):
        export_dataset(raw, "X", 6, images=images, labels=labels, dataset=cohort / "dataset.json")
    with pytest.raises(PGLError, match="'background'"):
        export_dataset(raw, "X", 6, images=images, labels=labels, label_names=["background", "b", "c", "d", "e"])
    assert sorted(p.name for p in raw.iterdir()) == ["Dataset005_Mine"]  # no temporary folder left behind


def test_the_cli_exports_a_dataset_json_and_reports_errors_without_a_traceback(cohort, tmp_path, capsys):
    out = tmp_path / "raw"
    assert main(["export-dataset", "--dataset", str(cohort / "dataset.json"), "--format", "nnunet", "--out", str(out),
                 "--name", "Cohort", "--id", "42", "--progress", "json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    done = lines[-1]
    assert done["event"] == "done" and done["cases"] == 3 and done["out"] == str(out / "Dataset042_Cohort")
    assert main(["export-dataset", "--dataset", str(cohort / "dataset.json"), "--out", str(out), "--name",
                 "Cohort", "--id", "42", "--progress", "none"]) == 1
    err = capsys.readouterr().err
    assert "Dataset042_Cohort: exists and is not empty" in err and "Traceback" not in err
