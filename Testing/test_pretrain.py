"""Pretraining on a tiny phantom cohort: learning, EMA, exact resume, NaN handling, output folders."""
import json

import numpy as np
import pytest
import torch
from conftest import tiny_config

from pgl_engine import load_model, pretrain
from pgl_engine.errors import PGLError
from pgl_engine.pretraining.ema import ema_update
from pgl_engine.pretraining.methods import PGL
from pgl_engine.pretraining.trainer import Pretrainer
from pgl_engine.training.bf16_overflow import BF16_SKIP_LIMIT
from pgl_engine.training.checkpoint import checkpoint_path, load_checkpoint


def run(cohort, tmp_path, name, **overrides):
    events = []
    config = tiny_config(cohort / "images", tmp_path / name, tmp_path / "cache", **overrides)
    pretrain(config, progress=events.append)
    return events


def losses(events):
    return [e["loss"] for e in events if e["event"] == "progress" and e["stage"] == "pretrain"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["pgl", "byol"])
def test_loss_decreases_and_model_is_written(cohort, tmp_path, method):
    events = run(cohort, tmp_path, method, method=method, steps=40, lr=3e-3)
    curve = losses(events)
    assert len(curve) == 40
    assert np.mean(curve[-8:]) < 0.8 * np.mean(curve[:8]), curve
    done = events[-1]
    assert done["event"] == "done" and done["steps"] == 40
    model = load_model(tmp_path / method)
    assert model.metadata["kind"] == "pretrained" and model.metadata["method"] == method
    assert 0 < model.metadata["effective_rank"] <= 8
    assert model.metadata["num_scans"] == 3 and len(model.metadata["data_fingerprint"]) == 64
    log = [json.loads(line) for line in (tmp_path / method / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 41))


@pytest.mark.slow
def test_ema_target_differs_from_online_and_moves(cohort, tmp_path):
    config = tiny_config(cohort / "images", tmp_path / "ema", tmp_path / "cache", steps=10, checkpoint_every=5)
    trainer = Pretrainer(config)
    trainer.run()
    final = load_checkpoint(tmp_path / "ema")["model"]
    online = {k[len("online_backbone."):]: v for k, v in final.items() if k.startswith("online_backbone.")}
    target = {k[len("target_backbone."):]: v for k, v in final.items() if k.startswith("target_backbone.")}
    torch.manual_seed(config.seed)
    initial = PGL(config).target_backbone.state_dict()
    weight = next(k for k in online if k.endswith("weight") and online[k].ndim == 5)
    assert not torch.allclose(online[weight], target[weight])  # target lags behind
    assert not torch.allclose(initial[weight], target[weight])  # and it moved


def test_deep_level_loss_trains_its_own_heads_under_the_ema(cohort, tmp_path):
    config = tiny_config(cohort / "images", tmp_path / "deep", tmp_path / "cache", steps=4, checkpoint_every=2,
                         deep_weight=1.0)
    Pretrainer(config).run()
    final = load_checkpoint(tmp_path / "deep")["model"]
    torch.manual_seed(config.seed)
    initial = PGL(config).state_dict()
    key = next(k for k in final if k.startswith("deep_projector.") and final[k].ndim == 5)
    assert final[key].shape[1] == config.network.channels[-1]  # it sees the bottom block's features
    assert not torch.allclose(initial[key], final[key])  # trained by the deep loss alone
    assert not torch.allclose(final[key], final["target_" + key])  # its target lags behind
    assert not torch.allclose(initial["target_" + key], final["target_" + key])  # and moved
    assert load_model(tmp_path / "deep").metadata["training"]["deep_weight"] == 1.0
    assert not any(k.startswith("deep_") for k in PGL(tiny_config(cohort / "images", tmp_path / "x",
                                                                  tmp_path / "cache", deep_weight=0)).state_dict())


def test_a_checkpoint_from_before_the_deep_level_resumes_without_it(cohort, tmp_path):
    run(cohort, tmp_path, "old", steps=2, checkpoint_every=2, deep_weight=0.0)
    state = load_checkpoint(tmp_path / "old")
    del state["config"]["deep_weight"]  # as written by an engine without the option
    torch.save(state, checkpoint_path(tmp_path / "old"))
    events = run(cohort, tmp_path, "old", steps=4, resume=True)  # the default now has a deep level
    assert events[-1]["event"] == "done"
    assert load_model(tmp_path / "old").metadata["training"]["deep_weight"] == 0.0


def test_resume_from_a_mid_run_checkpoint_matches_a_straight_run(cohort, tmp_path):
    run(cohort, tmp_path, "straight", steps=8)
    straight = load_checkpoint(tmp_path / "straight")["model"]

    class StopAfter4(Pretrainer):
        def train_step(self, batch):
            if self.step == 4:
                raise KeyboardInterrupt
            return super().train_step(batch)

    config = tiny_config(cohort / "images", tmp_path / "resumed", tmp_path / "cache", steps=8, checkpoint_every=4)
    with pytest.raises(KeyboardInterrupt):
        StopAfter4(config).run()
    assert load_checkpoint(tmp_path / "resumed")["step"] == 4
    run(cohort, tmp_path, "resumed", steps=8, checkpoint_every=4, resume=True)
    resumed = load_checkpoint(tmp_path / "resumed")["model"]
    assert load_checkpoint(tmp_path / "resumed")["step"] == 8
    for name in straight:
        assert torch.allclose(straight[name], resumed[name], atol=1e-6), name


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(cohort, tmp_path, monkeypatch):
    original = PGL.forward

    def nan_at_step_4(self, batch):
        loss, stats = original(self, batch)
        nan_at_step_4.calls += 1
        return (loss * float("nan") if nan_at_step_4.calls == 4 else loss), stats

    nan_at_step_4.calls = 0
    monkeypatch.setattr(PGL, "forward", nan_at_step_4)
    with pytest.raises(PGLError, match="loss became nan at step 4"):
        run(cohort, tmp_path, "nan", steps=8, checkpoint_every=3)
    state = load_checkpoint(tmp_path / "nan")
    assert state["step"] == 3
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def nan_losses_at(calls: set, monkeypatch):
    """Make PGL's loss NaN on the given forward calls (1-based)."""
    original = PGL.forward
    seen = []

    def forward(self, batch):
        loss, stats = original(self, batch)
        seen.append(1)
        return (loss * float("nan") if len(seen) in calls else loss), stats

    monkeypatch.setattr(PGL, "forward", forward)


def test_bf16_overflow_skips_the_update_and_training_goes_on(cohort, tmp_path, monkeypatch):
    nan_losses_at({4}, monkeypatch)
    events = run(cohort, tmp_path, "skip", steps=6, precision="bf16")
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    assert any("step 4: the loss was nan in bf16, so this update was skipped" in w for w in warnings), warnings
    meta = json.loads((tmp_path / "skip" / "pgl_model.json").read_text())
    assert meta["training"]["skipped_bf16_overflow"] == 1 and meta["training"]["steps"] == 6
    state = load_checkpoint(tmp_path / "skip")
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_bf16_overflow_that_persists_stops_training(cohort, tmp_path, monkeypatch):
    nan_losses_at(set(range(3, 3 + BF16_SKIP_LIMIT)), monkeypatch)
    with pytest.raises(PGLError, match=f"loss became nan at step {2 + BF16_SKIP_LIMIT}.*--precision fp32"):
        run(cohort, tmp_path, "persist", steps=12, precision="bf16")


def test_output_folders_are_never_clobbered(cohort, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.docx").write_text("precious")
    with pytest.raises(PGLError, match="already holds other files"):
        run(cohort, tmp_path, "foreign")
    assert (foreign / "thesis.docx").read_text() == "precious"
    run(cohort, tmp_path, "mine", steps=2)
    before = (tmp_path / "mine" / "model.safetensors").read_bytes()
    with pytest.raises(PGLError, match="--resume"):
        run(cohort, tmp_path, "mine", steps=2)
    assert (tmp_path / "mine" / "model.safetensors").read_bytes() == before
    run(cohort, tmp_path, "mine", steps=2, overwrite=True, seed=5)
    assert (tmp_path / "mine" / "model.safetensors").read_bytes() != before
    stopped = tmp_path / "stopped"  # a run stopped before its first checkpoint left only its log
    stopped.mkdir()
    (stopped / "train_log.jsonl").write_text("")
    with pytest.raises(PGLError, match="stopped before its first checkpoint.*--overwrite"):
        run(cohort, tmp_path, "stopped", steps=2)
    with pytest.raises(PGLError, match="nothing to resume.*--overwrite instead of --resume"):
        run(cohort, tmp_path, "stopped", steps=2, resume=True)
    run(cohort, tmp_path, "stopped", steps=2, overwrite=True)
    assert (stopped / "model.safetensors").is_file()


def test_scans_smaller_than_the_patch_are_padded(cohort, tmp_path):
    events = run(cohort, tmp_path, "big_patch", steps=2, patch_size=(48, 48, 32), spacing=(12.0, 12.0, 12.0))
    assert events[-1]["event"] == "done"
    assert checkpoint_path(tmp_path / "big_patch").is_file()


def test_collapse_is_reported(cohort, tmp_path):
    # a threshold above any reachable rank forces the warning; the paper's plain variant has no regulariser
    events = run(cohort, tmp_path, "plain", steps=4, anti_collapse_weight=0.0, rank_warning=1.01)
    warnings = [e for e in events if e["event"] == "warning" and "not expected to help" not in e["message"]]
    assert len(warnings) == 1 and "feature collapse" in warnings[0]["message"]  # once (the tiny run's advice aside)
    ranks = [e["effective_rank"] for e in events if e.get("stage") == "pretrain" and "effective_rank" in e]
    assert len(ranks) == 2 and all(0 < r <= 8 for r in ranks)  # steps 1 and 4 (the last) measure it


def test_the_rank_is_measured_every_n_steps_and_changes_nothing_else(cohort, tmp_path):
    every = run(cohort, tmp_path, "every", steps=5, rank_every=1)
    sparse = run(cohort, tmp_path, "sparse", steps=5, rank_every=2)
    measured = [e["step"] for e in sparse if e.get("stage") == "pretrain" and "effective_rank" in e]
    assert measured == [1, 2, 4, 5]
    assert losses(every) == losses(sparse)
    ranks = {e["step"]: e["effective_rank"] for e in every if e.get("stage") == "pretrain"}
    assert all(e["effective_rank"] == ranks[e["step"]] for e in sparse if e.get("stage") == "pretrain"
               and "effective_rank" in e)


@pytest.mark.parametrize("ablation", [{"flip_axes": [0, 1, 2], "flip_prior": False}, {"crop_prior": False},
                                      {"flip_axes": [0, 1, 2], "flip_prior": False, "crop_prior": False},
                                      {"nonmonotone_p": 1.0}, {"anti_collapse_on": "full"}, {"bias_field": 0.1},
                                      {"flip_axes": [0, 1, 2], "intensity_strength": 0.3}])
def test_ablations_train(cohort, tmp_path, ablation):
    events = run(cohort, tmp_path, "ablation", steps=2, **ablation)
    assert events[-1]["event"] == "done"
    training = load_model(tmp_path / "ablation").metadata["training"]
    assert all(training[k] == v for k, v in ablation.items())


@pytest.mark.parametrize("flip_axes, expected", [((), set()), ((1,), {1}), ((0, 1, 2), {0, 1, 2})])
def test_views_are_flipped_only_on_the_chosen_axes(cohort, tmp_path, flip_axes, expected):
    trainer = Pretrainer(tiny_config(cohort / "images", tmp_path / "run", tmp_path / "cache", steps=12,
                                     flip_axes=flip_axes))
    trainer.model = trainer.prepare()
    flipped = set()
    for batch in trainer.batches(0):
        for key in ("flip_a", "flip_b"):
            flipped |= {axis for axis in range(3) if bool(batch[key][:, axis].any())}
    assert flipped == expected


def test_ema_update_follows_the_formula_for_parameters_and_buffers():
    torch.manual_seed(0)
    online, target = torch.nn.BatchNorm3d(4), torch.nn.BatchNorm3d(4)
    for module in (online, target):
        module.weight.data.normal_()
        module.running_mean.normal_()
    online.num_batches_tracked += 7
    expected_weight = 0.9 * target.weight.detach().clone() + 0.1 * online.weight.detach()
    expected_mean = 0.9 * target.running_mean.clone() + 0.1 * online.running_mean
    ema_update([(online, target)], 0.9)
    assert torch.allclose(target.weight, expected_weight, atol=1e-6)
    assert torch.allclose(target.running_mean, expected_mean, atol=1e-6)
    assert int(target.num_batches_tracked) == 7  # integer buffers are copied


def test_a_skipped_first_update_does_not_warn_about_the_schedule(cohort, tmp_path, monkeypatch, recwarn):
    # with mixed precision the gradient scaler skips updates while it calibrates; here the first is skipped
    calls = []
    original = torch.amp.GradScaler.step

    def skip_first(self, optimizer, *args, **kwargs):
        calls.append(1)
        return None if len(calls) == 1 else original(self, optimizer, *args, **kwargs)

    monkeypatch.setattr(torch.amp.GradScaler, "step", skip_first)
    run(cohort, tmp_path, "skip", steps=3)
    assert len(calls) == 3
    assert not [w for w in recwarn if "lr_scheduler.step()" in str(w.message)]
