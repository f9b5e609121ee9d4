"""The loop's smaller parts on their own: skipped bf16 updates, the groups' learning-rate schedules, the model's
record."""
from __future__ import annotations

import math

import pytest
import torch

from pgl_engine.config import PretrainConfig
from pgl_engine.models.metadata import KEY_ORDER, model_metadata, training_record
from pgl_engine.training.bf16_overflow import BF16_SKIP_LIMIT, OverflowSkips
from pgl_engine.training.lr_schedule import group_schedules, warmup_cosine


def test_only_bf16_skips_overflowing_updates_and_only_up_to_the_limit():
    events = []
    skips = OverflowSkips(active=True, progress=events.append)
    for step in range(1, BF16_SKIP_LIMIT):
        assert skips.tolerates(math.nan)
        skips.skip(math.nan, step)
    assert not skips.tolerates(math.nan) and skips.tolerates(1.0)
    assert [e["event"] for e in events] == ["warning"] and "step 1: the loss was nan in bf16" in events[0]["message"]
    skips.stepped()
    assert skips.tolerates(math.nan) and skips.record() == {"skipped_bf16_overflow": BF16_SKIP_LIMIT - 1}
    off = OverflowSkips(active=False)
    assert not off.tolerates(math.nan) and off.record() == {}
    weight = torch.nn.Parameter(torch.ones(2))
    weight.grad = torch.tensor([1.0, math.inf])
    optimizer = torch.optim.SGD([weight], lr=0.1)
    assert skips.must_skip(1.0, optimizer) and not off.must_skip(1.0, optimizer)
    weight.grad = torch.ones(2)
    assert not skips.must_skip(1.0, optimizer) and skips.must_skip(math.inf, optimizer)


def test_a_delayed_group_is_held_then_runs_its_own_warm_up_and_cosine():
    plain, held = group_schedules([{}, {"delay": 4}], warmup=2, steps=12)
    assert [plain(s) for s in range(12)] == [warmup_cosine(2, 12)(s) for s in range(12)]
    assert [held(s) for s in range(4)] == [0.0] * 4
    assert [held(s) for s in range(4, 12)] == [warmup_cosine(2, 8)(s) for s in range(8)]


def test_the_model_record_holds_the_training_settings_in_one_order_for_both_commands():
    config = PretrainConfig(images="scans", out="model", steps=40, device="cpu", workers=3)
    training = training_record(config, 12, processes=2)
    assert training["steps"] == 12 and training["processes"] == 2 and training["lr"] == config.lr
    assert not {"images", "out", "device", "workers", "network"} & set(training)
    metadata = model_metadata(config, "pretrained", "pgl", {}, training, [], 0, feature_channels=8, extra=1)
    assert [k for k in metadata if k in KEY_ORDER] == [k for k in KEY_ORDER if k in metadata]
    assert list(metadata)[-1] == "extra"  # an entry the order does not know goes last
    assert metadata["network"] == config.network.to_dict() and metadata["spacing"] == list(config.spacing)


@pytest.mark.parametrize("kind, entries", [("pretrained", {"effective_rank": 3.0, "feature_channels": 8}),
                                           ("segmentation", {"init": {}, "validation": None, "learnt": {},
                                                             "finished_early": None, "configuration": None,
                                                             "cases": [], "lineage": []})])
def test_both_kinds_of_record_start_and_end_alike(kind, entries):
    config = PretrainConfig(images="scans", out="model")
    keys = list(model_metadata(config, kind, "x", {}, {}, [], 0, **entries))
    assert keys[:7] == ["kind", "method", "network", "spacing", "hu_window", "patch_size", "labels"]
    assert keys[-2:] == ["engine_version", "created"]
