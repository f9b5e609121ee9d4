"""Contrast phases of the phantoms: other organ intensities on the same anatomy, recorded per file, used by
`pgl phantom --phases` and `pgl compare --phases` (report by phase; a cohort of other phases is not reused)."""
import json

import numpy as np
import pytest

from pgl_engine.cli import main
from pgl_engine.comparison.experiment import CompareConfig, compare
from pgl_engine.comparison.stats import organ_mean_by_phase
from pgl_engine.errors import PGLError
from pgl_engine.phantoms.tuning import PHASES, make_phantom, phase_of, read_phases, write_cohort


def test_phases_change_organ_intensities_and_keep_the_anatomy():
    cases = {phase: make_phantom(3, spacing_scale=3.0, phase=phase) for phase in PHASES}
    medians = {phase: {k: float(np.median(c.image[c.labels == k])) for k in (1, 2, 3)} for phase, c in cases.items()}
    for phase, case in cases.items():
        assert np.array_equal(case.labels, cases["venous"].labels)
        assert np.array_equal(case.affine, cases["venous"].affine)
        low, high = PHASES[phase]["liver"]
        assert low - 25 < medians[phase][1] < high + 25  # texture, vessels and noise around the drawn value
    assert medians["native"][3] < medians["venous"][3] - 60  # unenhanced kidney: far darker
    assert medians["arterial"][1] < medians["venous"][1] - 15  # arterial liver: not yet enhanced
    outside_body = cases["venous"].image[0, 0, 0]
    assert all(c.image[0, 0, 0] == outside_body for c in cases.values())


def test_cohort_takes_the_phases_in_turn_and_records_them(tmp_path):
    write_cohort(tmp_path / "c", 3, seed=10, spacing_scale=4.0, phases=("venous", "native"))
    assert read_phases(tmp_path / "c") == {"phantom_010.nii.gz": "venous", "phantom_011.nii.gz": "native",
                                           "phantom_012.nii.gz": "venous"}
    (tmp_path / "c" / "phases.json").unlink()  # a cohort written before phases existed is venous
    assert set(read_phases(tmp_path / "c").values()) == {"venous"}
    with pytest.raises(PGLError, match=r"unknown \['delayed'\]; choose from venous, arterial, native"):
        write_cohort(tmp_path / "d", 2, phases=("venous", "delayed"))
    assert not (tmp_path / "d").exists()  # refused before anything was written


def test_phantom_command_writes_the_asked_phases(tmp_path, capsys):
    code = main(["phantom", "--out", str(tmp_path / "p"), "--count", "2", "--seed", "4", "--spacing-scale", "4",
                 "--phases", "arterial", "native"])
    assert code == 0
    assert json.loads((tmp_path / "p" / "phases.json").read_text()) == {
        "phantom_004.nii.gz": phase_of(4, ("arterial", "native")), "phantom_005.nii.gz": phase_of(5, ("arterial", "native"))}
    assert set(read_phases(tmp_path / "p").values()) == {"arterial", "native"}


def test_organ_mean_by_phase_groups_the_test_scans():
    phase_by_file = {"a.nii.gz": "venous", "b.nii.gz": "native", "c.nii.gz": "native"}
    dice = {"a.nii.gz": 0.9, "b.nii.gz": 0.6, "c.nii.gz": 0.4}
    cases = [{"case": f, "name": organ, "dice": d} for f, d in dice.items()
             for organ in ("liver", "spleen", "right kidney", "left kidney")]
    cases += [{"case": "b.nii.gz", "name": "tumour", "dice": 0.0}]  # lesions stay out of the organ mean
    assert organ_mean_by_phase(cases, phase_by_file) == pytest.approx({"native": 0.5, "venous": 0.9})


@pytest.mark.slow
def test_compare_reports_by_phase_and_refuses_a_cohort_of_other_phases(tmp_path):
    config = CompareConfig(out=str(tmp_path / "cmp"), unlabeled=2, labeled=(1,), test=2, seeds=2,
                           inits=("random", "pgl"), pretrain_steps=2, finetune_steps=2, patch_size=(16, 16, 16),
                           spacing=(12.0, 12.0, 12.0), phantom_spacing_scale=4.0, device="cpu", workers=0,
                           phases=("venous", "native"))
    text = compare(config).read_text()
    data = tmp_path / "cmp" / "data"
    assert sorted(read_phases(data / "test").values()) == ["native", "venous"]
    assert set(read_phases(data / "labeled").values()) == {"venous"}  # the labelled scans stay venous
    assert "Organ mean by contrast phase" in text and "| init | native | venous |" in text
    results = json.loads((tmp_path / "cmp" / "results.json").read_text())
    by_phase = results["by_phase"]["1"]
    for init in ("random", "pgl"):
        runs = [r for r in results["runs"] if r["init"] == init]
        assert by_phase["table"][init]["native"]["mean"] == pytest.approx(
            np.mean([r["organ_mean_by_phase"]["native"] for r in runs]))
    assert set(by_phase["differences"]["pgl - random"]) == {"native", "venous"}
    config.phases = ("venous",)
    with pytest.raises(PGLError, match=r"data/unlabeled holds phantoms of other contrast phases"):
        compare(config)
    config.phases = ("venous", "portal")
    with pytest.raises(PGLError, match=r"unknown \['portal'\]"):
        config.validate()
