"""Tiny-network logics for driving the real panels quickly on 2 cores (the panels take their logic as a
dependency; only the engine options they do not expose are added)."""
from __future__ import annotations

import time

import pytest
from PGLPretrainLib.logic import PGLPretrainLogic
from PGLSegmentationLib.logic import PGLSegmentationLogic

TINY_PRETRAIN = ["--batch-size", "1", "--grid-size", "4", "--workers", "0", "--feature-channels", "8", "--channels",
                 "4", "8", "16", "--strides", "2", "2", "--projector-hidden", "8", "--predictor-hidden", "8",
                 "--projector-dim", "8", "--checkpoint-every", "1"]
# conftest.SEG_NETWORK as engine options (num_res_units: the engine's default, 1)
SEG_NETWORK_ARGS = ["--feature-channels", "8", "--channels", "8", "16", "32", "--strides", "2", "2"]
TINY_FINETUNE = ["--workers", "0", "--lr", "3e-3", "--batch-size", "2"]


class TinyPretrainLogic(PGLPretrainLogic):
    def __init__(self, cache):
        super().__init__()
        self.cache = str(cache)

    def pretrain(self, *args, extraArgs=(), **kwargs):
        return super().pretrain(*args, extraArgs=[*TINY_PRETRAIN, "--cache-dir", self.cache, *extraArgs], **kwargs)


class TinySegmentationLogic(PGLSegmentationLogic):
    def __init__(self, cache):
        super().__init__()
        self.cache = str(cache)

    def finetune(self, *args, extraArgs=(), patchSize=None, spacing=None, init="none", **kwargs):
        network = SEG_NETWORK_ARGS if init in ("", "none") else []  # a pretrained init brings its own network
        return super().finetune(*args, patchSize=(32, 32, 16), spacing=(6.0, 6.0, 8.0), init=init,
                                extraArgs=[*network, *TINY_FINETUNE, "--cache-dir", self.cache, *extraArgs], **kwargs)

    def check_pretraining(self, *args, extraArgs=(), **kwargs):
        return super().check_pretraining(*args, extraArgs=["--patch-size", "16", "--cache-dir", self.cache,
                                                           *extraArgs], **kwargs)


def click(harness, button) -> float:
    """Click like a user and return how long the click's slot kept the event loop (ms)."""
    start = time.perf_counter()
    button.click()
    elapsed = (time.perf_counter() - start) * 1000
    harness.process_events()
    return elapsed


def replace_segments(target, source) -> None:
    """What a user's correction in the Segment Editor amounts to here: the target's segments become the source's."""
    segmentation = target.GetSegmentation()
    segmentation.RemoveAllSegments()
    truth = source.GetSegmentation()
    for i in range(truth.GetNumberOfSegments()):
        segmentation.CopySegmentFromSegmentation(truth, truth.GetNthSegmentID(i))


@pytest.fixture
def panel(slicer_app, tmp_path):
    """The PGL Segmentation panel on CPU with the tiny-network logic (imported by the test modules that drive it)."""
    widget = slicer_app.load_module("PGLSegmentation")
    widget.panel.logic = TinySegmentationLogic(tmp_path / "cache")
    widget.panel.ui.deviceComboBox.currentText = "CPU"
    return widget.panel
