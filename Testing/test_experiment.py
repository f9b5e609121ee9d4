"""`pgl compare`: the whole chain on tiny settings, paired statistics, and reuse of finished pieces."""
import json
import re
import shutil
from dataclasses import replace

import numpy as np
import pytest

from pgl_engine.comparison.experiment import CompareConfig, compare
from pgl_engine.comparison.report import held_steps
from pgl_engine.comparison.stats import RunResult, paired_difference
from pgl_engine.errors import PGLError


def test_paired_difference_interval():
    d = paired_difference([0.6, 0.7, 0.8], [0.5, 0.5, 0.7])
    diffs = np.array([0.1, 0.2, 0.1])
    half = 4.302653 * diffs.std(ddof=1) / np.sqrt(3)  # t(0.975, 2)
    assert d.mean == pytest.approx(diffs.mean()) and d.n == 3 and d.has_interval
    assert d.ci95 == pytest.approx([diffs.mean() - half, diffs.mean() + half], rel=1e-5)
    assert np.isnan(paired_difference([0.5], [0.4]).ci95[0]) and not paired_difference([0.5], [0.4]).has_interval


def test_organ_mean_leaves_the_tumour_and_the_run_alone():
    run = RunResult("pgl", 1, 0, dice={"liver": 0.9, "spleen": 0.8, "right kidney": 0.7, "left kidney": 0.6,
                                       "tumour": 0.0, "mean": 0.6}, hd95_mm={}, loss_curve=[1.0])
    scored = run.scored()
    assert scored.dice["organ mean"] == pytest.approx(0.75)
    assert "organ mean" not in run.dice and scored.init == "pgl"
    assert RunResult.from_json(scored.to_json()) == scored  # result.json round trip


def test_compare_runs_end_to_end_and_reuses_finished_runs(tmp_path):
    config = CompareConfig(out=str(tmp_path / "cmp"), unlabeled=2, labeled=(1,), test=1, seeds=2,
                           inits=("random", "pgl"), pretrain_steps=2, finetune_steps=2, patch_size=(16, 16, 16),
                           spacing=(12.0, 12.0, 12.0), phantom_spacing_scale=4.0, device="cpu", workers=0,
                           finetune_options={"structure_shift_hu": 20})
    events = []
    report = compare(config, progress=events.append)
    text = report.read_text()
    assert "`--finetune-option structure_shift_hu=20`" in text and "--pretrain-option" not in text
    model = json.loads((tmp_path / "cmp" / "runs" / "n1" / "seed0" / "pgl" / "model" / "pgl_model.json").read_text())
    assert model["training"]["structure_shift_hu"] == 20  # the option reached the fine-tuning runs
    assert "Every weight trains from the first fine-tuning step" in text  # automatic: off at 2 steps
    assert held_steps(replace(config, finetune_steps=6400)) == 800
    assert held_steps(replace(config, finetune_steps=3200)) == 171  # on the ramp: 400 x (3200 - 800) / 5600
    assert held_steps(replace(config, finetune_options={"head_first_steps": 5})) == 5
    assert "| random |" in text and "| pgl |" in text and "| pgl - random |" in text and "organ mean" in text
    assert (tmp_path / "cmp" / "dice_n1.png").stat().st_size > 1000
    assert (tmp_path / "cmp" / "loss_curves.png").stat().st_size > 1000
    results = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert len(results["runs"]) == 4  # 2 seeds x 2 inits
    assert set(results["table"]["1"]) == {"random", "pgl"}
    organs = ("liver", "spleen", "right kidney", "left kidney")
    for run in results["runs"]:  # the organ mean leaves the tumour out
        assert run["dice"]["organ mean"] == pytest.approx(np.nanmean([run["dice"][o] for o in organs]))
    assert set(results["differences"]["1"]) == {"organ mean", "mean"}
    assert set(results["differences"]["1"]["organ mean"]) == {"pgl - random"}
    assert 0 < results["ranks"]["pgl"]["test_features"] <= 32
    assert events[-1]["event"] == "done"
    # a second call reuses every finished piece: same numbers, no new fine-tuning
    mtime = (tmp_path / "cmp" / "runs" / "n1" / "seed0" / "pgl" / "result.json").stat().st_mtime
    compare(config)
    assert (tmp_path / "cmp" / "runs" / "n1" / "seed0" / "pgl" / "result.json").stat().st_mtime == mtime
    again = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert again["table"] == results["table"]


@pytest.mark.parametrize("options, expected", [
    ({"pretrain_options": {"no_such_option": 1}}, "--pretrain-option: ['no_such_option']"),
    ({"finetune_options": {"seed": 3}}, "--finetune-option: ['seed'] unknown or set by compare itself"),
    ({"inits": ()}, "--inits and --labeled each need at least one value"),
])
def test_compare_refuses_options_it_cannot_pass_on(options, expected):
    with pytest.raises(PGLError, match=re.escape(expected)):
        CompareConfig(**options).validate()
    CompareConfig(pretrain_options={"flip_axes": []}, finetune_options={"transfer": "encoder"}).validate()


@pytest.mark.slow
def test_compare_in_parallel_processes_matches_one_after_another(tmp_path):
    # fp32: on a CPU with native bf16, fine-tuning's bf16 autocast on these toy patches (a 2x2x2 bottleneck) can
    # overflow in a rotated or scaled patch, and whether it does depends on the thread count's rounding
    config = CompareConfig(out=str(tmp_path / "cmp"), unlabeled=2, labeled=(1,), test=1, seeds=2,
                           inits=("random", "pgl"), pretrain_steps=2, finetune_steps=2, patch_size=(16, 16, 16),
                           spacing=(12.0, 12.0, 12.0), phantom_spacing_scale=4.0, device="cpu", workers=0,
                           finetune_options={"precision": "fp32"})
    compare(config)
    in_turn = json.loads((tmp_path / "cmp" / "results.json").read_text())
    for piece in ("runs", "models"):  # keep the data, redo every pretraining and fine-tuning run
        shutil.rmtree(tmp_path / "cmp" / piece)
    events = []
    config.jobs = 2
    compare(config, progress=events.append)
    parallel = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert [(r["labeled"], r["seed"], r["init"]) for r in parallel["runs"]] == \
        [(r["labeled"], r["seed"], r["init"]) for r in in_turn["runs"]]
    for a, b in zip(parallel["runs"], in_turn["runs"]):  # same seeds, same pieces: same results (up to the
        assert a["loss_curve"][0] == pytest.approx(b["loss_curve"][0], rel=1e-3)  # rounding of other thread
        assert a["loss_curve"] == pytest.approx(b["loss_curve"], rel=1e-2)  # counts in later steps)
    assert "pretrained pgl" in [e.get("message") for e in events]
    steps = [e["step"] for e in events if e.get("stage") == "compare: fine-tuning runs"]
    assert steps == [1, 2, 3, 4]


def test_compare_refuses_zero_jobs():
    with pytest.raises(PGLError, match="--jobs must be >= 1"):
        CompareConfig(jobs=0).validate()


def test_loss_plot_of_random_init_alone_has_no_empty_legend(tmp_path, recwarn):
    from pgl_engine.comparison.report import plot_losses

    results = [RunResult("random", 1, seed, dice={}, hd95_mm={}, loss_curve=curve)
               for seed, curve in enumerate(([2.0, 1.5, 1.2], [2.1, 1.4]))]
    plot_losses(tmp_path / "loss.png", tmp_path, ("random",), results)
    assert (tmp_path / "loss.png").stat().st_size > 1000
    assert not [w for w in recwarn if "legend" in str(w.message)]
