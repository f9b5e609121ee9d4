"""Fine-tuning: learns on 2 phantoms, loads pretrained weights, refuses bad labels and wrong models."""
import json
import shutil
from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import ORGANS, SEG_NETWORK, seg_options, tiny_config

from pgl_engine import load_model, pretrain
from pgl_engine.config import FinetuneConfig, NetworkConfig
from pgl_engine.errors import PGLError
from pgl_engine.finetuning.trainer import Finetuner, finetune, resolve_init
from pgl_engine.inference.evaluation import dice_per_label
from pgl_engine.inference.segmentation import segment
from pgl_engine.models.networks import is_decoder_key
from pgl_engine.training.loop import merge_resume_config


def test_fine_tuning_reaches_dice_well_above_chance(seg_model, cohort, tmp_path):
    out = segment(seg_model, cohort / "images" / "phantom_002.nii.gz", tmp_path / "pred.nii.gz")[0]
    pred = np.asarray(nib.load(out).dataobj)
    truth = np.asarray(nib.load(cohort / "labels" / "phantom_002.nii.gz").dataobj)
    dice = dice_per_label(pred, truth, {v: str(v) for v in ORGANS})
    # chance: the best labelling that ignores the image, i.e. calling every voxel the organ: 2f / (1 + f)
    chance = {v: 2 * (truth == v).mean() / (1 + (truth == v).mean()) for v in ORGANS}
    assert all(chance[v] < 0.2 for v in ORGANS), chance
    assert dice[1] > chance[1] + 0.4, (dice, chance)  # liver
    assert np.mean([dice[v] - chance[v] for v in ORGANS]) > 0.3, (dice, chance)
    meta = load_model(seg_model).metadata
    assert meta["kind"] == "segmentation"
    assert [meta["labels"][str(v)]["name"] for v in (1, 2, 3, 4, 5)] == [
        "liver", "spleen", "right kidney", "left kidney", "tumour"]
    assert len({tuple(meta["labels"][k]["color"]) for k in meta["labels"]}) == 5


@pytest.mark.slow
def test_pretrained_weights_are_loaded(cohort, tmp_path):
    network = NetworkConfig(**SEG_NETWORK)
    pre = pretrain(tiny_config(cohort / "images", tmp_path / "pre", tmp_path / "cache", steps=2, network=network,
                               spacing=(6.0, 6.0, 8.0), patch_size=(32, 32, 16)))
    pretrained = load_model(pre).backbone.state_dict()
    options = seg_options(cohort, tmp_path / "ft", tmp_path / "cache", init=str(pre), steps=1)
    options.pop("network")  # network, spacing and HU window come from the pretrained model
    run = Finetuner(FinetuneConfig(**resolve_init(options)))
    model = run.prepare()
    for name, tensor in model.backbone.state_dict().items():
        assert torch.equal(tensor, pretrained[name]), name
    random_init = Finetuner(FinetuneConfig(**seg_options(cohort, tmp_path / "r", tmp_path / "cache"))).prepare()
    assert not all(torch.equal(t, pretrained[n]) for n, t in random_init.backbone.state_dict().items())
    finetune(**options)
    assert load_model(tmp_path / "ft").metadata["init"]["method"] == "pgl"
    # encoder-only transfer: the encoder comes from the model, the decoder is the random initialisation
    encoder_only = Finetuner(FinetuneConfig(**resolve_init({**options, "transfer": "encoder"}))).prepare()
    random_weights = Finetuner(FinetuneConfig(**resolve_init(options | {"init": "none", "network": network,
                                                                         "out": str(tmp_path / "r2")}))).prepare()
    decoder = [n for n in pretrained if is_decoder_key(n)]
    assert 0 < len(decoder) < len(pretrained)
    assert any(n.startswith("model.1.submodule.2.") for n in decoder)  # an inner up block, not only the top one
    for name, tensor in encoder_only.backbone.state_dict().items():
        source = random_weights.backbone.state_dict() if name in decoder else pretrained
        assert torch.equal(tensor, source[name]), name


def test_transferred_weights_get_the_init_lr_scale(cohort, tmp_path):
    network = NetworkConfig(**SEG_NETWORK)
    pre = pretrain(tiny_config(cohort / "images", tmp_path / "pre", tmp_path / "cache", steps=1, network=network,
                               spacing=(6.0, 6.0, 8.0), patch_size=(32, 32, 16)))
    options = seg_options(cohort, tmp_path / "ft", tmp_path / "cache", init=str(pre), steps=1, lr=2e-3,
                          init_lr_scale=0.1, transfer="encoder")
    options.pop("network")
    run = Finetuner(FinetuneConfig(**resolve_init(options)))
    run.model = run.prepare()
    run.build_optimizer()
    fresh, pretrained = run.optimizer.param_groups
    assert fresh["initial_lr"] == pytest.approx(2e-3) and pretrained["initial_lr"] == pytest.approx(2e-4)
    slow = {id(p) for p in pretrained["params"]}
    for name, parameter in run.model.named_parameters():
        from_init = name.startswith("backbone.") and not is_decoder_key(name.removeprefix("backbone."))
        assert (id(parameter) in slow) == from_init, name
    assert len(fresh["params"]) + len(slow) == len(list(run.model.parameters()))
    # random initialisation: nothing was transferred, one group at --lr
    plain = Finetuner(FinetuneConfig(**seg_options(cohort, tmp_path / "r", tmp_path / "cache", init_lr_scale=0.1)))
    plain.model = plain.prepare()
    plain.build_optimizer()
    assert [g["initial_lr"] for g in plain.optimizer.param_groups] == [pytest.approx(3e-3)]


@pytest.mark.slow
def test_head_first_steps_hold_the_transferred_weights_then_train_them(cohort, tmp_path):
    network = NetworkConfig(**SEG_NETWORK)
    pre = pretrain(tiny_config(cohort / "images", tmp_path / "pre", tmp_path / "cache", steps=1, network=network,
                               spacing=(6.0, 6.0, 8.0), patch_size=(32, 32, 16)))
    options = seg_options(cohort, tmp_path / "ft", tmp_path / "cache", init=str(pre), steps=4, head_first_steps=2)
    options.pop("network")
    run = Finetuner(FinetuneConfig(**resolve_init(options)))
    run.model = run.forward_model = run.prepare()
    run.build_optimizer()
    fresh, held = run.optimizer.param_groups
    ids = {id(p) for p in held["params"]}
    names = {name for name, p in run.model.named_parameters() if id(p) in ids}
    assert names == {"backbone." + k for k in run.transferred if "backbone." + k in dict(run.model.named_parameters())}

    def snapshot():
        return {name: p.detach().clone() for name, p in run.model.named_parameters()}

    start = snapshot()
    batches = iter(run.batches(0))
    for _ in range(2):
        assert held["lr"] == 0.0 and fresh["lr"] > 0
        run.train_step(next(batches))
    after_two = snapshot()
    assert all(torch.equal(after_two[n], start[n]) for n in names)  # held while the head trains
    assert any(not torch.equal(after_two[n], start[n]) for n in after_two if n not in names)
    assert held["lr"] > 0
    run.train_step(next(batches))
    assert any(not torch.equal(p.detach(), after_two[n]) for n, p in run.model.named_parameters() if n in names)
    for bad in (4, -2):
        with pytest.raises(PGLError, match="--head-first-steps"):
            FinetuneConfig(**{**resolve_init(options), "head_first_steps": bad}).validate()


def test_a_time_budget_that_plans_a_long_run_holds_the_transferred_weights_as_that_run_would(cohort, tmp_path):
    """--minutes plans the step count after the optimiser exists: a plan long enough for the automatic hold
    (--head-first-steps -1) must find the transferred weights in their own group."""
    network = NetworkConfig(**SEG_NETWORK)
    pre = pretrain(tiny_config(cohort / "images", tmp_path / "pre", tmp_path / "cache", steps=1, network=network,
                               spacing=(6.0, 6.0, 8.0), patch_size=(32, 32, 16)))
    options = seg_options(cohort, tmp_path / "ft", tmp_path / "cache", init=str(pre), minutes=5)
    options.pop("network")
    run = Finetuner(FinetuneConfig(**resolve_init(options)))
    run.model = run.forward_model = run.prepare()
    run.build_optimizer()
    assert len(run.optimizer.param_groups) == 2  # apart while the hold is still 0 (800 steps)
    batches = iter(run.batches(0))
    run.train_step(next(batches))
    run.set_steps(6400)  # as a plan at a fast step time would: 800 steps held
    run.train_step(next(batches))
    fresh, held = run.optimizer.param_groups
    assert held["lr"] == 0.0 and fresh["lr"] > 0


def test_head_first_steps_rise_without_a_jump_to_an_eighth_of_long_budgets_and_stay_off_for_older_checkpoints(
        cohort, tmp_path):
    options = seg_options(cohort, tmp_path / "ft", tmp_path / "cache", steps=12800)
    default = FinetuneConfig(**options)
    assert default.head_first_steps == -1 and default.head_first == 1600
    assert replace(default, steps=6400).head_first == 800  # resolved from the steps in force, not stored
    assert replace(default, steps=800).head_first == replace(default, steps=200).head_first == 0  # short: off
    assert replace(default, steps=3600).head_first == 225  # halfway up the ramp: half of an eighth
    held = [replace(default, steps=n).head_first for n in range(700, 7000, 10)]
    assert all(0 <= b - a <= 3 for a, b in zip(held, held[1:]))  # rises steadily, never jumps
    assert FinetuneConfig(**{**options, "head_first_steps": 0}).head_first == 0
    assert FinetuneConfig(**{**options, "steps": 100, "head_first_steps": 30}).head_first == 30
    saved = default.to_dict()
    del saved["head_first_steps"]  # as written by an engine without the option, which trained without it
    assert merge_resume_config(default, saved, None).head_first == 0


def test_pretrained_model_with_another_network_is_refused(cohort, tmp_path):
    pre = pretrain(tiny_config(cohort / "images", tmp_path / "pre", tmp_path / "cache", steps=1))
    with pytest.raises(PGLError, match="another network configuration"):
        finetune(**seg_options(cohort, tmp_path / "ft", tmp_path / "cache", init=str(pre)))
    assert not (tmp_path / "ft").exists() or not any((tmp_path / "ft").iterdir())


def labelled_folder(tmp_path, cohort, label_transform=None, names=("a.nii.gz",)):
    """images/ + labels/ with one phantom whose label map is changed by label_transform(array, affine)."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for name in names:
        shutil.copy(cohort / "images" / "phantom_000.nii.gz", images / name)
        label = nib.load(cohort / "labels" / "phantom_000.nii.gz")
        array, affine = np.asarray(label.dataobj).copy(), label.affine.copy()
        if label_transform:
            array, affine = label_transform(array, affine)
        nib.save(nib.Nifti1Image(array.astype(np.uint8), affine), str(labels / name))
    return images, labels


def shifted(array, affine):
    affine = affine.copy()
    affine[0, 3] += 25.0
    return array, affine


@pytest.mark.parametrize("transform, names, expected", [
    (shifted, None, "has another grid than its scan"),
    (lambda a, f: (a[:-3], f), None, "has another grid than its scan"),
    (lambda a, f: (np.where(a == 1, 9, a), f), ("liver", "spleen", "right kidney", "left kidney", "tumour"),
     r"holds label values \[9\]"),
    (lambda a, f: (np.zeros_like(a), f), None, "is empty"),
    (lambda a, f: (np.where(a == 2, 0, a), f), ("liver", "spleen", "right kidney", "left kidney", "tumour"),
     r"spleen \(2\) appear in none"),
])
def test_bad_label_maps_are_refused(tmp_path, cohort, transform, names, expected):
    images, labels = labelled_folder(tmp_path, cohort, transform)
    out = tmp_path / "out"
    with pytest.raises(PGLError, match=expected):
        finetune(images=str(images), labels=str(labels), out=str(out), label_names=names or (), steps=1,
                 workers=0, spacing=(8.0, 8.0, 8.0), patch_size=(16, 16, 16), cache_dir=str(tmp_path / "c"),
                 network=NetworkConfig(**SEG_NETWORK), device="cpu")
    assert not (out / "model.safetensors").exists()


def test_scans_and_labels_pair_by_name(tmp_path, cohort):
    images, labels = labelled_folder(tmp_path, cohort, names=("case_1.nii.gz",))
    (labels / "case_1.nii.gz").rename(labels / "other.nii.gz")
    with pytest.raises(PGLError, match="no scan has a label map with the same file name"):
        finetune(images=str(images), labels=str(labels), out=str(tmp_path / "out"), steps=1, workers=0)


def test_model_folders_of_the_wrong_kind_are_refused(tmp_path, cohort, seg_model):
    pre = pretrain(tiny_config(cohort / "images", tmp_path / "pre", tmp_path / "cache", steps=1))
    with pytest.raises(PGLError, match="is a pretrained model, not a segmentation model"):
        segment(pre, cohort / "images" / "phantom_002.nii.gz", tmp_path / "pred.nii.gz")
    assert not (tmp_path / "pred.nii.gz").exists()
    with pytest.raises(PGLError, match="not a PGL model folder"):
        finetune(**seg_options(cohort, tmp_path / "ft", tmp_path / "cache", init=str(tmp_path)))


@pytest.mark.slow
def test_msd_dataset_json_with_nnunet_v2_labels(tmp_path, cohort):
    dataset = json.loads((cohort / "dataset.json").read_text())
    dataset["labels"] = {"background": 0, "liver": 1, "spleen": 2, "kidney R": 3, "kidney L": 4, "lesion": 5}
    for entry in dataset["training"]:
        entry["image"] = str(cohort / entry["image"])
        entry["label"] = str(cohort / entry["label"])
    (tmp_path / "dataset.json").write_text(json.dumps(dataset))
    out = finetune(**seg_options(cohort, tmp_path / "ft", tmp_path / "cache", steps=2,
                                 dataset=str(tmp_path / "dataset.json"), max_labeled=1))
    labels = load_model(out).metadata["labels"]
    assert [labels[k]["name"] for k in sorted(labels)] == ["liver", "spleen", "kidney R", "kidney L", "lesion"]


def test_label_values_with_gaps_come_back_unchanged(tmp_path, cohort):
    # values 10 and 20 instead of 1 and 2, nothing else: the model predicts classes, the output keeps the values
    images, labels = labelled_folder(tmp_path, cohort, lambda a, f: (np.select([a == 1, a == 2], [10, 20], 0), f))
    model = finetune(images=str(images), labels=str(labels), out=str(tmp_path / "m"), steps=2, workers=0,
                     spacing=(8.0, 8.0, 8.0), patch_size=(16, 16, 16), cache_dir=str(tmp_path / "c"),
                     network=NetworkConfig(**SEG_NETWORK), device="cpu")
    assert sorted(load_model(model).metadata["labels"]) == ["10", "20"]
    out = segment(model, images / "a.nii.gz", tmp_path / "pred.nii.gz")[0]
    assert set(np.unique(np.asarray(nib.load(out).dataobj))) <= {0, 10, 20}


def test_structure_shift_moves_each_structure_by_its_own_bounded_offset():
    from pgl_engine.data.augment import shift_structures

    labels = torch.zeros((1, 32, 32, 16), dtype=torch.int64)
    labels[0, 2:14, 2:14, 2:14] = 1
    labels[0, 18:30, 2:14, 2:14] = 2
    x = torch.full((1, 32, 32, 16), 0.5)
    offsets = []
    for seed in range(12):
        shifted = shift_structures(x.clone(), labels, np.random.default_rng(seed), 0.05, count=3)
        inside = [shifted[0, 5:11, 5:11, 5:11] - 0.5, shifted[0, 21:27, 5:11, 5:11] - 0.5]
        assert all(float(d.max() - d.min()) < 1e-5 for d in inside)  # one offset per structure
        assert torch.allclose(shifted[0, 2:30, 22:30, :], x[0, 2:30, 22:30, :])  # background away from them kept
        offsets.append([float(d.mean()) for d in inside])
    offsets = np.array(offsets)
    assert np.abs(offsets).max() <= 0.05 + 1e-6
    assert (offsets[:, 0] != offsets[:, 1]).all()  # the structures move independently
    assert (offsets < -0.01).any() and (offsets > 0.01).any()  # both directions


def test_patches_get_structure_shifts_only_when_asked(cohort):
    from types import SimpleNamespace

    from pgl_engine.finetuning.patches import LabelledCase, PatchDataset

    labels = np.zeros((24, 24, 16), np.uint8)
    labels[4:12, 4:12, 4:12], labels[12:20, 12:20, 4:12] = 1, 2
    scan = SimpleNamespace(load=lambda: np.full((24, 24, 16), 0.5, np.float32))
    case = LabelledCase.build(scan, labels, seed=0)
    plain = PatchDataset([case], (16, 16, 16), 0.67, seed=1, length=4)
    shifted = PatchDataset([case], (16, 16, 16), 0.67, seed=1, length=4, structure_shift=0.05)
    for i in range(4):
        a, b = plain[i], shifted[i]
        assert torch.equal(a["label"], b["label"])
        if (a["label"] > 0).any():
            assert not torch.allclose(a["image"], b["image"])
    with pytest.raises(PGLError, match="--structure-shift-hu must be >= 0"):
        FinetuneConfig(images="i", labels="l", out="o", structure_shift_hu=-1)


def test_fine_tuning_with_structure_shifts_records_them(cohort, tmp_path):
    out = finetune(**seg_options(cohort, tmp_path / "ft", tmp_path / "cache", steps=2, structure_shift_hu=40))
    assert load_model(out).metadata["training"]["structure_shift_hu"] == 40


def test_a_segmentation_model_with_the_same_labels_is_continued_head_included(cohort, tmp_path, seg_model):
    events = []
    more = finetune(**seg_options(cohort, tmp_path / "more", tmp_path / "cache", init=str(seg_model), steps=2,
                                  lr=1e-9, warmup_steps=0, network=None), progress=events.append)
    first, second = load_model(seg_model), load_model(more)
    for name, value in first.network.state_dict().items():  # a vanishing learning rate: the weights stay
        torch.testing.assert_close(second.network.state_dict()[name], value, atol=1e-5, rtol=0)
    assert second.metadata["init"]["transfer"] == "continued"
    lineage = second.metadata["lineage"]
    assert [entry["steps"] for entry in lineage] == [250, 2] and lineage[1]["continued"] is True
    assert lineage[1]["init"] == str(seg_model.resolve()) and lineage[1]["cases"] == ["phantom_000", "phantom_001"]
    assert any("head included" in e.get("message", "") for e in events)


@pytest.mark.slow
def test_a_segmentation_model_with_other_labels_gives_its_backbone_and_says_so(cohort, tmp_path, seg_model):
    events = []
    other = finetune(**seg_options(cohort, tmp_path / "other", tmp_path / "cache", init=str(seg_model), steps=1,
                                   label_names=tuple(f"structure {i}" for i in range(1, 6)), network=None),
                      progress=events.append)
    model = load_model(other)
    assert model.metadata["init"]["transfer"] == "whole" and model.label_table["1"]["name"] == "structure 1"
    assert any("new head is trained" in e.get("message", "") for e in events)


@pytest.mark.slow
def test_stopping_early_keeps_a_usable_model_and_resume_finishes_it(cohort, tmp_path):
    """A GUI's Stop (here SIGINT at step 5) keeps the weights so far as a model that segments; --resume goes on."""
    import os
    import signal

    from pgl_engine.errors import TrainingInterrupted
    from pgl_engine.models.store import read_metadata

    events = []

    def stop_at_step_5(event):
        events.append(event)
        if event.get("event") == "progress" and event.get("step") == 5:
            os.kill(os.getpid(), signal.SIGINT)

    options = seg_options(cohort, tmp_path / "model", tmp_path / "cache", steps=30)
    with pytest.raises(TrainingInterrupted, match="model at step 5 is kept"):
        finetune(progress=stop_at_step_5, **options)
    metadata = read_metadata(tmp_path / "model")
    assert metadata["stopped_early"] == {"step": 5, "of": 30} and metadata["training"]["steps"] == 5
    assert [e for e in events if e.get("event") == "cancelled"][0]["model_dir"] == str(tmp_path / "model")
    labels = segment(tmp_path / "model", cohort / "images" / "phantom_002.nii.gz", tmp_path / "pred.nii.gz")[0]
    assert labels.is_file()
    finetune(resume=True, **options)
    metadata = read_metadata(tmp_path / "model")
    assert "stopped_early" not in metadata and metadata["training"]["steps"] == 30


def test_a_structure_below_the_hu_window_is_named_before_training(cohort, tmp_path):
    """Under a window above the organs' intensities (as a soft-tissue window is above lung) the structures look like
    air: the warning names them and the window to use; under the default window nothing is said."""
    from pgl_engine.finetuning.data import read_finetune_data

    def warnings(hu_window=None):  # None: the default window
        events = []
        window = {"hu_window": hu_window} if hu_window else {}
        config = FinetuneConfig(**seg_options(cohort, tmp_path / "unused", tmp_path / "cache", **window))
        read_finetune_data(config, events.append)
        return [e["message"] for e in events if e["event"] == "warning" and "HU window" in e["message"]]

    assert warnings((-1024.0, 325.0)) == [] == warnings()
    [message] = warnings((300.0, 600.0))
    assert message.startswith("liver, spleen") and "(300 HU)" in message and "--hu-window -1024 600" in message
