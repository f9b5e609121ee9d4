"""Evaluation: Dice and HD95 in millimetres on shapes with known answers."""
import csv

import nibabel as nib
import numpy as np
import pytest

from pgl_engine.cli import main
from pgl_engine.inference.evaluation import dice_per_label, evaluate, hd95_mm


def ball(shape, centre, radius, spacing):
    grids = np.meshgrid(*[np.arange(s) * sp for s, sp in zip(shape, spacing)], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grids, centre)) <= radius ** 2


def test_dice_of_known_overlaps():
    a = np.zeros((10, 10, 10), np.uint8)
    b = np.zeros_like(a)
    a[:4] = 1
    b[2:6] = 1
    assert dice_per_label(a, b, {1: "x", 2: "y"}) == pytest.approx({1: 0.5, 2: float("nan")}, nan_ok=True)


def test_hd95_is_in_millimetres_with_anisotropic_spacing():
    spacing = (1.0, 1.0, 4.0)
    shape = (60, 60, 20)
    a = ball(shape, (30, 30, 40), 15, spacing).astype(np.uint8)
    b = ball(shape, (30, 30, 48), 15, spacing).astype(np.uint8)  # shifted 8 mm = 2 slices
    assert hd95_mm(a, b, 1, spacing) == pytest.approx(8.0, abs=1.0)
    assert hd95_mm(a, a, 1, spacing) == 0.0
    assert np.isnan(hd95_mm(a, np.zeros_like(a), 1, spacing))


def test_evaluate_folders_and_csv(tmp_path, capsys):
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    affine = np.diag([1.0, 1.0, 4.0, 1.0])
    shape = (60, 60, 20)
    ref = ball(shape, (30, 30, 40), 15, (1, 1, 4)).astype(np.uint8)
    nib.save(nib.Nifti1Image(ref, affine), str(tmp_path / "ref" / "c.nii.gz"))
    nib.save(nib.Nifti1Image(ref.copy(), affine), str(tmp_path / "pred" / "c.nii.gz"))
    result = evaluate(tmp_path / "pred", tmp_path / "ref", tmp_path / "e.csv")
    assert result["mean"]["mean"]["dice"] == 1.0
    rows = list(csv.DictReader(open(tmp_path / "e.csv")))
    assert rows[0]["case"] == "c.nii.gz" and float(rows[0]["dice"]) == 1.0
    nib.save(nib.Nifti1Image(ref[:, :, :-1], affine), str(tmp_path / "pred" / "c.nii.gz"))
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--labels", str(tmp_path / "ref")]) == 1
    assert "has another grid than the reference" in capsys.readouterr().err


def test_the_csv_replaces_only_its_own_previous_csv_and_never_an_input(tmp_path, capsys):
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    ref = ball((30, 30, 10), (15, 15, 20), 8, (1, 1, 4)).astype(np.uint8)
    for folder in ("pred", "ref"):
        nib.save(nib.Nifti1Image(ref, np.diag([1.0, 1.0, 4.0, 1.0])), str(tmp_path / folder / "c.nii.gz"))
    base = ["evaluate", "--pred", str(tmp_path / "pred"), "--labels", str(tmp_path / "ref"), "--progress", "none"]
    notes = tmp_path / "notes.csv"
    notes.write_text("my,own,table\n")
    reference = tmp_path / "ref" / "c.nii.gz"
    before = reference.read_bytes()
    for target, overwrite, message in [
        (notes, [], "exists and is not a CSV written by pgl evaluate"),
        (reference, ["--overwrite"], "is one of the label maps being evaluated"),
        (tmp_path, [], "is a folder; give --csv a file name"),
        (tmp_path / "missing" / "e.csv", [], "no such folder for --csv"),
    ]:
        assert main([*base, "--csv", str(target), *overwrite]) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert notes.read_text() == "my,own,table\n" and reference.read_bytes() == before
    assert main([*base, "--csv", str(notes), "--overwrite"]) == 0
    assert notes.read_text().startswith("case,label,name,dice,hd95_mm")
    assert main([*base, "--csv", str(notes)]) == 0  # our own CSV now: replaced without asking
