"""`pgl check-pretraining`: a paired leave-one-case-out comparison of random and pretrained init on the user's
own labelled scans."""
import json
import shutil

import pytest
from conftest import tiny_config

from pgl_engine import pretrain
from pgl_engine.cli import main
from pgl_engine.errors import PGLError
from pgl_engine.pretraining.check import CheckConfig, check_pretraining, describe_check


@pytest.fixture(scope="module")
def labelled(cohort, tmp_path_factory):
    """Two labelled phantoms in images/ and labels/, and a tiny pretrained model."""
    root = tmp_path_factory.mktemp("check")
    for sub in ("images", "labels"):
        (root / sub).mkdir()
        for i in (0, 1):
            shutil.copy(cohort / sub / f"phantom_00{i}.nii.gz", root / sub)
    model = pretrain(tiny_config(cohort / "images", root / "pre", root / "cache", steps=2))
    return root, model


@pytest.mark.slow
def test_each_case_is_held_out_once_per_seed_and_the_paired_difference_is_reported(labelled, tmp_path):
    root, model = labelled
    events = []
    summary = check_pretraining(CheckConfig(images=str(root / "images"), labels=str(root / "labels"), init=str(model),
                                            out=str(tmp_path / "check"), steps=2, seeds=1, patch_size=(16, 16, 16),
                                            device="cpu", cache_dir=str(root / "cache")), events.append)
    assert [(r["held_out"], r["seed"]) for r in summary["runs"]] == [("phantom_000", 0), ("phantom_001", 0)]
    assert all(0 <= r[k] <= 1 for r in summary["runs"] for k in ("random", "pretrained"))
    difference = summary["difference"]
    assert difference["n"] == 2 and difference["ci95"][0] <= difference["mean"] <= difference["ci95"][1]
    assert json.loads((tmp_path / "check" / "check.json").read_text())["difference"] == difference
    assert [e["step"] for e in events if e["event"] == "progress" and e["stage"] == "check"] == [1, 2]
    assert describe_check(summary).startswith(f"Pretrained minus random init: {difference['mean']:+.3f} Dice")


def test_one_pair_or_a_segmentation_model_is_refused_with_a_message(labelled, seg_model, tmp_path, capsys):
    root, model = labelled
    (tmp_path / "images").mkdir()
    shutil.copy(root / "images" / "phantom_000.nii.gz", tmp_path / "images")
    code = main(["check-pretraining", "--images", str(tmp_path / "images"), "--labels", str(root / "labels"),
                 "--init", str(model), "--out", str(tmp_path / "out")])
    assert code != 0 and "needs at least 2 labelled scans (found 1)" in capsys.readouterr().err
    with pytest.raises(PGLError, match="is a segmentation model; choose the pretrained model"):
        check_pretraining(CheckConfig(images=str(root / "images"), labels=str(root / "labels"), init=str(seg_model),
                                      out=str(tmp_path / "out2")))
