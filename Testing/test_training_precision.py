"""Training arithmetic (--precision): fp16 on CUDA, bf16 fine-tuning on CPUs with native bf16, fp32 otherwise;
and the time budget `pgl finetune` trains for when neither --steps nor --minutes is given."""
import xml.etree.ElementTree as ET

import pytest
import torch
from conftest import ROOT, seg_options

from pgl_engine.cli import build_parser, finetune_options
from pgl_engine.config import DEFAULT_FINETUNE_MINUTES
from pgl_engine.finetuning.trainer import finetune
from pgl_engine.models.store import read_metadata
from pgl_engine.training import precision

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_auto_trains_in_bf16_only_on_a_native_bf16_cpu_and_for_a_stage_measured_to_allow_it(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.training_dtype(CPU, "auto", cpu_bf16=True) == torch.bfloat16
    assert precision.training_dtype(CPU, "auto", cpu_bf16=False) == torch.float32
    assert precision.training_dtype(CPU, "fp32", cpu_bf16=True) == torch.float32
    assert precision.training_dtype(CUDA, "auto", cpu_bf16=False) == torch.float16
    assert precision.training_dtype(CUDA, "bf16") == torch.bfloat16
    assert precision.training_dtype(torch.device("mps"), "auto") == torch.float32
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.training_dtype(CPU, "auto", cpu_bf16=True) == torch.float32
    assert precision.training_dtype(CPU, "bf16", cpu_bf16=False) == torch.bfloat16  # asked for: emulated


@pytest.mark.slow
def test_fine_tuning_in_bf16_learns_and_the_model_records_its_precision(cohort, tmp_path):
    records = {}
    for name in ("fp32", "bf16"):
        out = tmp_path / name
        finetune(**seg_options(cohort, out, tmp_path / "cache", steps=12, precision=name))
        records[name] = (read_metadata(out)["timing"]["precision"],
                         [line for line in (out / "train_log.jsonl").read_text().splitlines()])
    assert records["fp32"][0] == "float32" and records["bf16"][0] == "bfloat16"
    assert records["fp32"][1] != records["bf16"][1]  # the arithmetic differs, so the losses do


def finetune_command(*extra: str):
    return build_parser().parse_args(["finetune", "--images", "i", "--labels", "l", "--out", "o", *extra])


def test_pgl_finetune_leaves_the_time_budget_to_the_engine_unless_given_steps_or_minutes():
    assert "minutes" not in finetune_options(finetune_command())  # finetune() applies its default
    explicit = finetune_options(finetune_command("--steps", "800"))
    assert "minutes" not in explicit and explicit.get("steps", 800) == 800
    assert finetune_options(finetune_command("--minutes", "2"))["minutes"] == 2
    assert "minutes" not in finetune_options(finetune_command("--resume"))
    assert "network" not in finetune_options(finetune_command())  # chosen for the budget
    assert finetune_options(finetune_command("--channels", "4", "8", "--strides", "2"))["network"].channels == (4, 8)


def test_the_segmentation_panel_defaults_to_the_engine_s_fine_tuning_minutes():
    ui = ET.parse(ROOT / "PGLSegmentation" / "Resources" / "UI" / "PGLSegmentation.ui")
    box = ui.find(".//widget[@name='finetuneMinutesSpinBox']")
    assert float(box.find("property[@name='value']/double").text) == DEFAULT_FINETUNE_MINUTES
