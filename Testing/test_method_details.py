"""Pieces of the method checked against answers known in advance: the crop-prior ablation, the EMA and
learning-rate schedules, the anti-collapse penalty, the effective rank, the paper preset; and fine-tuning's
resume with held weights, --val-count and --tta on the CPU."""
from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import SEG_NETWORK, seg_options, smooth_volume, tiny_config

from pgl_engine import load_model, pretrain
from pgl_engine.cli import main
from pgl_engine.comparison.config import INIT_VARIANTS, CompareConfig
from pgl_engine.config import PRESETS, FinetuneConfig, NetworkConfig, PretrainConfig
from pgl_engine.errors import PGLError
from pgl_engine.finetuning.trainer import Finetuner, finetune, resolve_init
from pgl_engine.inference.segmentation import segment
from pgl_engine.pretraining.aligner import align_pair, roi_align_3d
from pgl_engine.pretraining.ema import ema_momentum
from pgl_engine.pretraining.losses import effective_rank, variance_covariance_penalty
from pgl_engine.training.checkpoint import load_checkpoint
from pgl_engine.training.lr_schedule import warmup_cosine


def pooled(volume: np.ndarray, lo, hi, size=8) -> torch.Tensor:
    """An 'encoder' that is plain average pooling of the crop [lo, hi) to size^3 (1, 1, size, size, size)."""
    crop = torch.from_numpy(volume[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))])[None, None]
    return torch.nn.functional.adaptive_avg_pool3d(crop, size)


def test_without_the_crop_prior_the_whole_views_are_matched_instead_of_their_overlap():
    volume = smooth_volume((48, 48, 48))
    lo_a, hi_a, lo_b, hi_b = (0, 0, 0), (32, 32, 32), (16, 16, 16), (48, 48, 48)
    fa, fb = pooled(volume, lo_a, hi_a), pooled(volume, lo_b, hi_b)
    prior = {"lo_a": torch.tensor([lo_a], dtype=torch.float32), "hi_a": torch.tensor([hi_a], dtype=torch.float32),
             "lo_b": torch.tensor([lo_b], dtype=torch.float32), "hi_b": torch.tensor([hi_b], dtype=torch.float32),
             "flip_a": torch.zeros(1, 3, dtype=torch.bool), "flip_b": torch.zeros(1, 3, dtype=torch.bool)}
    with_prior = align_pair(fa, fb, prior, 4)
    without = align_pair(fa, fb, prior, 4, use_crop_prior=False)
    # with the prior both grids show the overlap [16, 32)^3 and agree; without it each shows its whole view
    assert float((with_prior[0] - with_prior[1]).abs().mean()) < 0.2 * float((without[0] - without[1]).abs().mean())
    whole_a = roi_align_3d(fa, prior["lo_a"], prior["hi_a"], prior["flip_a"], prior["lo_a"], prior["hi_a"], 4)
    assert torch.allclose(without[0], whole_a)
    assert not torch.allclose(without[0], with_prior[0])


def test_the_crop_prior_ablation_changes_the_training_loss_not_just_the_metadata(cohort, tmp_path):
    config = tiny_config(cohort / "images", tmp_path / "a", tmp_path / "cache", steps=1)
    from pgl_engine.pretraining.methods import build_method
    from pgl_engine.pretraining.trainer import Pretrainer

    run = Pretrainer(config)
    run.model = run.prepare()
    batch = next(iter(run.batches(0)))
    torch.manual_seed(0)
    full = build_method(config)
    ablated = build_method(PretrainConfig(**{**config.to_dict(), "crop_prior": False}))
    ablated.load_state_dict(full.state_dict())
    with torch.no_grad():
        assert not math.isclose(float(full(batch)[0]), float(ablated(batch)[0]), rel_tol=1e-4)


def test_ema_momentum_runs_from_its_start_to_one_on_a_cosine():
    assert ema_momentum(0, 100, 0.996) == pytest.approx(0.996)
    assert ema_momentum(50, 100, 0.996) == pytest.approx(0.998)
    assert ema_momentum(100, 100, 0.996) == pytest.approx(1.0)
    assert ema_momentum(250, 100, 0.996) == pytest.approx(1.0)  # past the end: stays at 1


def test_warmup_then_cosine_reaches_its_peak_and_ends_at_zero():
    factor = warmup_cosine(10, 110)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(10) == pytest.approx(1.0)
    assert factor(60) == pytest.approx(0.5)  # halfway through the cosine
    assert factor(110) == pytest.approx(0.0) and factor(500) == pytest.approx(0.0)
    assert all(factor(s) >= factor(s + 1) for s in range(10, 110))


def test_variance_covariance_penalty_on_inputs_with_known_answers():
    generator = torch.Generator().manual_seed(0)
    independent = torch.randn(20000, 4, generator=generator) * 2.0  # std 2 > 1, uncorrelated
    assert float(variance_covariance_penalty(independent)) < 0.01
    collapsed = torch.zeros(100, 4)  # every channel constant: std 0, hinge 1 - sqrt(eps)
    assert float(variance_covariance_penalty(collapsed)) == pytest.approx(1.0 - math.sqrt(1e-4), abs=1e-6)
    x = torch.randn(20000, 1, generator=generator) * 2.0
    duplicated = torch.cat([x, x], dim=1)  # two copies: covariance 4 off the diagonal, twice, over 2 channels
    assert float(variance_covariance_penalty(duplicated)) == pytest.approx(2 * float(x.var()) ** 2 / 2, rel=1e-3)


def test_effective_rank_on_inputs_with_known_answers():
    basis = torch.linalg.qr(torch.randn(64, 8, generator=torch.Generator().manual_seed(1)))[0]
    assert effective_rank(basis * 3.0) == pytest.approx(8.0, rel=1e-3)  # equal singular values: full rank
    line = torch.randn(64, 1) @ torch.randn(1, 8)
    assert effective_rank(line) == pytest.approx(1.0, rel=1e-3)
    assert effective_rank(torch.ones(64, 8)) == 0.0  # constant: nothing left after centring
    with_nan = basis.clone()
    with_nan[3, 2] = float("nan")
    assert math.isnan(effective_rank(with_nan))  # a monitor: never raises


def test_the_paper_preset_is_the_papers_setting_and_explicit_options_win(cohort, tmp_path, capsys):
    args = ["pretrain", "--images", str(cohort / "images"), "--cache-dir", str(tmp_path / "cache"), "--steps", "2",
            "--batch-size", "2", "--patch-size", "16", "--spacing", "8", "--grid-size", "6", "--workers", "0",
            "--projector-hidden", "8", "--predictor-hidden", "8", "--projector-dim", "8", "--device", "cpu",
            "--feature-channels", "8", "--channels", "4", "8", "16", "--strides", "2", "2", "--preset", "paper"]
    assert main([*args, "--out", str(tmp_path / "paper")]) == 0
    training = load_model(tmp_path / "paper").metadata["training"]
    assert training["preset"] == "paper" and training["flip_axes"] == [0, 1, 2] and training["flip_prior"]
    assert training["anti_collapse_weight"] == 0.0 and training["deep_weight"] == 0.0 and training["crop_prior"]
    assert "--preset paper: method=pgl, flip_axes=(0, 1, 2)" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "mine"), "--deep-weight", "0.5"]) == 0
    assert load_model(tmp_path / "mine").metadata["training"]["deep_weight"] == 0.5
    assert INIT_VARIANTS["pgl-paper"] == PRESETS["paper"]
    with pytest.raises(PGLError, match="pgl-plain is now pgl-noreg"):
        CompareConfig(inits=("random", "pgl-plain")).validate()


def test_the_flip_prior_ablation_without_flips_is_refused():
    with pytest.raises(PGLError, match="--no-flip-prior changes nothing without flips"):
        PretrainConfig(images="x", out="y", flip_prior=False)
    PretrainConfig(images="x", out="y", flip_prior=False, flip_axes=(0, 1, 2))


class StopAt(Finetuner):
    at = 3

    def train_step(self, batch):
        if self.step == self.at:
            raise KeyboardInterrupt
        return super().train_step(batch)


@pytest.mark.slow
def test_finetune_resume_with_held_weights_matches_a_straight_run(cohort, tmp_path):
    network = NetworkConfig(**SEG_NETWORK)
    pre = pretrain(tiny_config(cohort / "images", tmp_path / "pre", tmp_path / "cache", steps=1, network=network,
                               spacing=(6.0, 6.0, 8.0), patch_size=(32, 32, 16)))

    def options(name, **extra):
        o = seg_options(cohort, tmp_path / name, tmp_path / "cache", init=str(pre), steps=8, head_first_steps=4,
                        checkpoint_every=3, **extra)
        o.pop("network")
        return resolve_init(o)

    finetune(**options("straight"))
    with pytest.raises(KeyboardInterrupt):  # stopped at step 3, inside the hold, after the checkpoint at 3
        StopAt(FinetuneConfig(**options("resumed"))).run()
    held = load_checkpoint(tmp_path / "resumed")
    assert held["step"] == 3
    assert [g["lr"] for g in held["optimizer"]["param_groups"]][1] == 0.0  # the transferred weights still held
    finetune(**options("resumed", resume=True))
    a, b = load_checkpoint(tmp_path / "straight")["model"], load_checkpoint(tmp_path / "resumed")["model"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


@pytest.mark.slow
def test_val_count_keeps_the_best_model_and_tta_averages_flips_on_the_cpu(cohort, tmp_path):
    model = finetune(**seg_options(cohort, tmp_path / "model", tmp_path / "cache", steps=40, val_count=1,
                                   val_every=20, flip_axes=(0,)))
    metadata = load_model(model).metadata
    assert metadata["validation"]["step"] in (20, 40) and 0.0 <= metadata["validation"]["dice"] <= 1.0
    assert metadata["num_scans"] == 2  # the third labelled scan was held out
    scan = cohort / "images" / "phantom_002.nii.gz"
    plain, = segment(model, scan, tmp_path / "plain.nii.gz", device="cpu")
    averaged, = segment(model, scan, tmp_path / "tta.nii.gz", device="cpu", tta=True)
    a, b = np.asarray(nib.load(str(plain)).dataobj), np.asarray(nib.load(str(averaged)).dataobj)
    assert a.shape == b.shape and b.max() > 0
    assert 0 < np.mean(a != b) < 0.2  # flipped predictions averaged in: a different, close label map
