"""The segmentation time estimate: measured when fine-tuning ends, stored with the model, the same in the engine
and in the Slicer panel."""
import json
from pathlib import Path

import pytest

from pgl_engine.inference.time_estimate import RATES_KEY, describe_seconds, estimate_seconds, model_grid_voxels
from PGLCommon.model_info import describe_segment_time, expected_segment_seconds


def test_fine_tuning_stores_the_measured_rates(seg_model):
    metadata = json.loads((Path(seg_model) / "pgl_model.json").read_text())
    rates = metadata[RATES_KEY]
    assert rates["device"] == "cpu"
    assert rates["input_s_per_megavoxel"] > 0 and rates["network_s_per_megavoxel"] > 0
    small = estimate_seconds(metadata, (256, 256, 100), (0.8, 0.8, 2.5))
    large = estimate_seconds(metadata, (512, 512, 400), (0.8, 0.8, 2.5))
    assert rates["startup_s"] < small < large


@pytest.mark.parametrize("size, spacing", [((512, 512, 200), (0.78, 0.78, 2.5)), ((64, 80, 30), (2.0, 1.5, 5.0)),
                                           ((100, 100, 1), (1.0, 1.0, 1.0))])
def test_the_panel_and_the_engine_give_the_same_estimate(size, spacing):
    metadata = {"spacing": [3.2, 3.2, 6.0], RATES_KEY: {"device": "cpu", "startup_s": 2.5,
                                                         "input_s_per_megavoxel": 0.12,
                                                         "network_s_per_megavoxel": 1.7}}
    assert expected_segment_seconds(metadata, size, spacing) == pytest.approx(estimate_seconds(metadata, size,
                                                                                                spacing))


def test_the_model_grid_covers_the_volume():
    assert model_grid_voxels({"spacing": [2.0, 2.0, 5.0]}, (100, 50, 10), (1.0, 1.0, 2.5)) == 50 * 25 * 5
    assert model_grid_voxels({"spacing": [2.0, 2.0, 5.0]}, (101, 50, 1), (1.0, 1.0, 1.0)) == 51 * 25 * 1


def test_models_without_rates_say_so():
    old = {"kind": "segmentation", "spacing": [3.2, 3.2, 6.0]}
    assert estimate_seconds(old, (10, 10, 10), (1, 1, 1)) is None
    assert "not measured" in describe_segment_time(old, (10, 10, 10), (1, 1, 1))


def test_times_read_naturally():
    assert describe_seconds(0.2) == "about 1 s"
    assert describe_seconds(42.4) == "about 42 s"
    assert describe_seconds(200) == "about 3 min"
