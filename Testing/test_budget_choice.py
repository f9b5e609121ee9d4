"""The configuration chosen for a time budget: the finest grid and widest network whose measured step time affords
the steps that grid needs, else the closest; recorded in the model; never chosen where the user fixed it."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import seg_options

from pgl_engine.config import WIDE_NETWORK, NetworkConfig
from pgl_engine.errors import PGLError
from pgl_engine.finetuning import budget_choice
from pgl_engine.finetuning.budget_choice import GRIDS, Grid, candidates, choose, choose_configuration
from pgl_engine.finetuning.trainer import default_minutes, finetune
from pgl_engine.models.store import read_metadata

CPU = torch.device("cpu")
FINE, COARSE = GRIDS


def timed(monkeypatch, seconds: dict) -> list:
    """Step times by (grid name, first channel count); returns the list of candidates probed, in order."""
    probed = []

    def fake(candidate, classes, batch_size, device, dtype):
        probed.append(candidate)
        return seconds[(candidate.grid.name, candidate.network.channels[0])]

    monkeypatch.setattr(budget_choice, "seconds_per_step", fake)
    monkeypatch.setattr(budget_choice, "PROBE_TO_TRAINING", 1.0)  # the times given are training steps'
    return probed


def test_a_fast_machine_keeps_the_fine_grid_and_wide_network_and_times_that_grid_only(monkeypatch):
    probed = timed(monkeypatch, {("fine", 16): 0.05, ("fine", 8): 0.02})
    choice = choose(None, None, 270.0, 5, 2, CPU, torch.float32, clock=lambda: 0.0)
    assert choice.candidate.grid == FINE and choice.candidate.network == WIDE_NETWORK
    assert [(c.grid, c.network) for c in probed] == [(FINE, NetworkConfig()), (FINE, WIDE_NETWORK)]
    assert choice.record["chosen"]["grid"] == "fine"
    assert [p["affordable_steps"] for p in choice.record["probes"]] == [13500, 5400]


def test_the_narrow_network_is_taken_where_the_wide_one_does_not_afford_the_grid(monkeypatch):
    timed(monkeypatch, {("fine", 16): 0.2, ("fine", 8): 0.1})
    choice = choose(None, None, 270.0, 5, 2, CPU, torch.float32, clock=lambda: 0.0)
    assert choice.candidate.grid == FINE and choice.candidate.network == NetworkConfig()


def test_a_slow_cpu_gets_the_coarse_grid_and_narrow_network_without_timing_the_fine_wide_one(monkeypatch):
    # the 2-core CPU without bf16: 1.6 s, 0.45 s, 0.55 s and 0.25 s per step
    probed = timed(monkeypatch, {("fine", 16): 1.6, ("fine", 8): 0.45, ("coarse", 16): 0.55, ("coarse", 8): 0.25})
    choice = choose(None, None, 270.0, 5, 2, CPU, torch.float32, clock=lambda: 0.0)
    assert choice.candidate.grid == COARSE and choice.candidate.network == NetworkConfig()
    assert "1080 steps" in choice.sentence and "enough" in choice.sentence
    # the fine grid's narrow network affords 600 of its 1800 steps: the wide one (never faster) is not timed
    assert (FINE, WIDE_NETWORK) not in [(c.grid, c.network) for c in probed]
    assert [p["affordable_steps"] for p in choice.record["probes"]] == [600, 1080, 490]


def test_a_probe_counts_for_a_slower_training_step(monkeypatch):
    timed(monkeypatch, {("fine", 16): 1.6, ("fine", 8): 0.45, ("coarse", 16): 0.25, ("coarse", 8): 0.1})
    monkeypatch.setattr(budget_choice, "PROBE_TO_TRAINING", 1.3)
    choice = choose(None, None, 270.0, 5, 2, CPU, torch.float32, clock=lambda: 0.0)
    # 0.25 s probed is 0.325 s in training: 830 of the 1000 steps the coarse grid needs, so the narrow network
    assert choice.candidate.network == NetworkConfig()
    assert choice.record["probes"][-1]["affordable_steps"] == 830


def test_where_no_candidate_affords_its_need_the_closest_is_taken(monkeypatch):
    timed(monkeypatch, {("fine", 16): 16.0, ("fine", 8): 4.5, ("coarse", 16): 5.5, ("coarse", 8): 2.5})
    choice = choose(None, None, 270.0, 5, 2, CPU, torch.float32, clock=lambda: 0.0)
    assert choice.candidate.grid == COARSE and choice.candidate.network.channels[0] == 8
    assert "the closest" in choice.sentence


def test_the_probes_are_paid_from_the_budget(monkeypatch):
    timed(monkeypatch, {("fine", 16): 1.0, ("fine", 8): 0.15, ("coarse", 16): 0.3, ("coarse", 8): 0.1})
    ticks = iter([0.0, 100.0, 200.0, 200.0, 200.0, 200.0, 200.0, 200.0])
    choice = choose(None, None, 300.0, 5, 2, CPU, torch.float32, clock=lambda: next(ticks))
    # 300 s budget, 100 s gone on probing it: the fine narrow network's 0.15 s no longer affords 1800 steps
    assert choice.candidate.grid == COARSE


def test_a_fixed_network_or_grid_is_the_only_one_tried():
    network = NetworkConfig(channels=(4, 8), strides=(2,), feature_channels=4)
    assert [c.network for c in candidates(network, None)] == [network, network]
    grid = Grid("given", (2.0, 2.0, 4.0), (32, 32, 32), 1000)
    assert [c.grid for c in candidates(None, grid)] == [grid, grid]


def test_a_pretrained_model_keeps_its_own_grid_and_never_a_finer_one(monkeypatch):
    narrow = NetworkConfig()
    assert [c.grid for c in candidates(narrow, None, pretrained_spacing=COARSE.spacing)] == [COARSE]
    assert [c.grid for c in candidates(narrow, None, pretrained_spacing=FINE.spacing)] == [FINE, COARSE]
    # a grid between the two: only the coarser one
    assert [c.grid for c in candidates(narrow, None, pretrained_spacing=(2.0, 2.0, 4.0))] == [COARSE]
    # a fast machine that affords the fine grid still fine-tunes a coarse-pretrained model on its coarse grid
    timed(monkeypatch, {("fine", 8): 0.01, ("coarse", 8): 0.01})
    choice = choose(narrow, None, 270.0, 5, 2, CPU, torch.float32, clock=lambda: 0.0,
                    pretrained_spacing=COARSE.spacing)
    assert choice.candidate.grid == COARSE


def options(**extra) -> dict:
    return {"images": "i", "labels": "l", "out": "o", "device": "cpu", "minutes": 5.0, **extra}


def test_the_choice_fills_what_is_free_and_nothing_without_a_budget_or_with_everything_fixed(monkeypatch):
    timed(monkeypatch, {("fine", 16): 1.6, ("fine", 8): 0.45, ("coarse", 16): 0.55, ("coarse", 8): 0.25,
                        ("given", 16): 1.6, ("given", 8): 0.45})
    chosen = options()
    record = choose_configuration(chosen, set(), started=budget_choice.time.perf_counter())
    assert chosen["spacing"] == COARSE.spacing and chosen["network"] == NetworkConfig()
    assert record["chosen"]["patch_size"] == list(COARSE.patch_size)

    given = options(spacing=(1.5, 1.5, 3.0), network=WIDE_NETWORK)
    assert choose_configuration(given, {"spacing", "network"}, budget_choice.time.perf_counter()) is None
    assert choose_configuration(options(minutes=0.0, steps=5), set(), budget_choice.time.perf_counter()) is None
    assert choose_configuration(options(resume=True), set(), budget_choice.time.perf_counter()) is None

    width_only = options(spacing=(1.5, 1.5, 3.0))  # a fine grid given: 0.45 s affords 600 of its 1800 steps
    choose_configuration(width_only, {"spacing"}, budget_choice.time.perf_counter())
    assert width_only["spacing"] == (1.5, 1.5, 3.0) and width_only["network"] == NetworkConfig()
    assert width_only["patch_size"] == FINE.patch_size

    # from a model pretrained on the coarse grid (resolve_init has put its spacing and network in the options)
    pretrained = options(init="models/pgl", spacing=COARSE.spacing, network=NetworkConfig())
    record = choose_configuration(pretrained, {"network"}, budget_choice.time.perf_counter())
    assert pretrained["spacing"] == COARSE.spacing and [p["grid"] for p in record["probes"]] == ["coarse"]


@pytest.mark.slow
def test_a_fine_tuning_with_a_budget_records_its_choice_in_the_model(cohort, tmp_path, monkeypatch):
    tiny = Grid("tiny", (8.0, 8.0, 8.0), (16, 16, 16), 3)
    monkeypatch.setattr(budget_choice, "GRIDS", (tiny,))
    monkeypatch.setattr(budget_choice, "MIN_CHOICE_BUDGET_S", 0.0)
    monkeypatch.setattr(budget_choice, "PREPARE_GUESS_S", 0.0)
    monkeypatch.setattr(budget_choice, "FINISH_RESERVE_S", 0.0)
    network = NetworkConfig(channels=(4, 8), strides=(2,), feature_channels=4)
    monkeypatch.setattr(budget_choice, "WIDE_NETWORK", network)
    events = []
    base = seg_options(cohort, tmp_path / "model", tmp_path / "cache")
    for key in ("spacing", "patch_size", "network", "steps"):
        base.pop(key, None)
    model = finetune(progress=events.append, **{**base, "minutes": 0.1})
    metadata = read_metadata(model)
    assert metadata["configuration"]["chosen"]["grid"] == "tiny"
    assert metadata["spacing"] == [8.0, 8.0, 8.0] and metadata["patch_size"] == [16, 16, 16]
    said = [e["message"] for e in events if e.get("event") == "info" and "configuration chosen" in e["message"]]
    assert said and "steps fit" in said[0]
    json.dumps(metadata["configuration"])  # plain JSON


def test_continuing_a_segmentation_model_defaults_to_the_refine_budget(seg_model):
    assert default_minutes(str(seg_model)) < default_minutes("none") == 5.0
    with pytest.raises(PGLError):
        default_minutes("/nonexistent/model")
