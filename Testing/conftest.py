"""Shared fixtures: a tiny phantom cohort and tiny training settings, so the suite runs on 2 CPU cores."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from pgl_engine.config import NetworkConfig, PretrainConfig
from pgl_engine.phantoms.tuning import write_cohort

ROOT = Path(__file__).resolve().parents[1]
for folder in (ROOT, ROOT / "PGLPretrain", ROOT / "PGLSegmentation"):  # Slicer-side packages, as Slicer sees them
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

# the networks of the tiny runs: PRETRAIN_NETWORK for pretraining (tiny_config, cli_args.pretrain_args),
# SEG_NETWORK (below) for fine-tuning; panel_helpers.SEG_NETWORK_ARGS is SEG_NETWORK as engine options
PRETRAIN_NETWORK = dict(feature_channels=8, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)


@pytest.fixture(scope="session")
def cohort(tmp_path_factory) -> Path:
    """Three coarse phantoms (about 12 mm voxels after resampling) in cohort/images."""
    out = tmp_path_factory.mktemp("cohort")
    write_cohort(out, 3, labels=True, seed=0, spacing_scale=4.0)
    return out


def tiny_config(images: Path, out: Path, cache: Path, **overrides) -> PretrainConfig:
    options = dict(images=str(images), out=str(out), cache_dir=str(cache), steps=6, batch_size=2,
                   patch_size=(16, 16, 16), spacing=(8.0, 8.0, 8.0), grid_size=6, workers=0,
                   checkpoint_every=100, projector_hidden=16, predictor_hidden=16, projector_dim=8,
                   network=NetworkConfig(**PRETRAIN_NETWORK), seed=0, device="cpu")
    options.update(overrides)
    return PretrainConfig(**options)


def smooth_volume(shape=(48, 44, 40), seed=0) -> np.ndarray:
    """A smooth random field (sum of low-frequency waves), float32."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    out = np.zeros(shape, np.float32)
    for _ in range(6):
        k = rng.normal(size=3) * 2 * np.pi / 40
        out += np.sin(sum(k[i] * grids[i] for i in range(3)) + rng.uniform(0, 6.3)).astype(np.float32)
    return out


ORGANS = (1, 2, 3, 4)  # liver, spleen, right kidney, left kidney (tumours are too small for a tiny model)
SEG_NETWORK = dict(feature_channels=8, channels=(8, 16, 32), strides=(2, 2), num_res_units=1)


def seg_options(cohort: Path, out: Path, cache: Path, **overrides) -> dict:
    """Fine-tuning options: a small UNet on 6 x 6 x 8 mm voxels, trained on phantoms 0 and 1 of the cohort."""
    options = dict(dataset=str(cohort / "dataset.json"), out=str(out), cache_dir=str(cache), max_labeled=2,
                   steps=250, batch_size=2, patch_size=(32, 32, 16), spacing=(6.0, 6.0, 8.0), lr=3e-3, workers=0,
                   device="cpu", network=NetworkConfig(**SEG_NETWORK))
    options.update(overrides)
    return options


@pytest.fixture(scope="session")
def seg_model(cohort, tmp_path_factory) -> Path:
    """A segmentation model fine-tuned once for the whole session (about 15 s on 2 cores)."""
    from pgl_engine.finetuning.trainer import finetune

    work = tmp_path_factory.mktemp("seg_model")
    return finetune(**seg_options(cohort, work / "model", work / "cache"))


@pytest.fixture
def mrml():
    """A fresh real MRML scene with the volumes and segmentations logics (slicer-core)."""
    from mrml_harness import MRMLHarness

    harness = MRMLHarness()
    yield harness
    harness.close()


STALL_LIMIT_MS = 250  # the GUI never waits longer than this on the event loop


@pytest.fixture
def slicer_app(tmp_path):
    """The Slicer stand-in (Qt event loop, PythonQt-style qt, CTK/qMRML stand-ins, MRML scene); an exception
    escaping a slot fails the test."""
    from slicer_harness import SlicerHarness

    harness = SlicerHarness(tmp_path / "slicer")
    yield harness
    errors = list(harness.slot_errors)
    harness.close()
    assert not errors, "an exception escaped a slot:\n" + "\n".join(errors)
