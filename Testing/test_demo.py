"""`pgl demo`: the clinician's path at toy sizes writes its data, models, predictions and a report with each stage's
time and the Dice table; its full-size budgets fit the quick start's five minutes; `make compare` runs the small
comparison that the demo used to be."""
import re
import shlex

from conftest import ROOT

from pgl_engine.cli import build_parser
from pgl_engine.cli_options import dataclass_from_args
from pgl_engine.comparison.config import SMALL_COMPARISON, CompareConfig
from pgl_engine.models.store import read_metadata
from pgl_engine.phantoms.tuning import ORGANS
from pgl_engine.walkthrough import DEMO, QUICK, demo

STAGES = ("phantoms", "pretrain", "finetune", "segment", "evaluate")


def test_the_quick_demo_writes_data_models_predictions_and_a_report(tmp_path):
    events = []
    report = demo(str(tmp_path / "demo"), quick=True, device="cpu", workers=0, progress=events.append)
    out = tmp_path / "demo"
    assert report == out / "report.md"
    for cohort, count in (("unlabeled", QUICK.unlabeled), ("labeled", QUICK.labeled), ("test", QUICK.test)):
        assert len(list((out / "data" / cohort / "images").glob("*.nii.gz"))) == count
    assert len(list((out / "data" / "test" / "labels").glob("*.nii.gz"))) == QUICK.test
    assert read_metadata(out / "models" / "pgl")["kind"] == "pretrained"
    assert read_metadata(out / "models" / "segmentation")["init"]["path"] == str(out / "models" / "pgl")
    assert len(list((out / "predictions").glob("*.nii.gz"))) == QUICK.test

    text = report.read_text()
    for name in STAGES:  # one timed row per stage, and the total
        assert re.search(rf"^\| {name} \| .* \| \d+\.\d \|$", text, re.M), name
    assert re.search(r"^\| \*\*total\*\* \|", text, re.M)
    for organ in (*ORGANS, "**organ mean**"):  # the Dice table: a value per test scan and the mean
        assert re.search(rf"^\| {re.escape(organ)} \| (\**[0-9.–]+\**) \| (\**[0-9.–]+\**) \|$", text, re.M), organ
    assert "## The configuration fine-tuning chose" in text and "synthetic" in text
    done = [e for e in events if e["event"] == "done"]
    assert len(done) == 1 and set(done[0]["stage_seconds"]) == set(STAGES)  # the stages' own `done` kept back


def test_the_demo_is_sized_for_the_quick_starts_five_minutes():
    budgets = dict(DEMO.budgets_s)
    assert set(budgets) == set(STAGES)
    assert sum(budgets.values()) <= 4.5 * 60  # margin for starting Python and writing the report
    assert budgets["finetune"] == DEMO.finetune_minutes * 60 and DEMO.labeled == 2


def test_make_compare_runs_the_small_comparison():
    makefile = (ROOT / "Makefile").read_text()
    args = shlex.split(re.search(r"^COMPARE_ARGS \?= (.*)$", makefile, re.M).group(1))
    config = dataclass_from_args(CompareConfig, build_parser().parse_args(["compare", *args]))
    given = {k: getattr(config, k) for k in SMALL_COMPARISON}
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in given.items()} == SMALL_COMPARISON
    assert "pgl compare --out $(COMPARE_OUT) $(COMPARE_ARGS)" in makefile
