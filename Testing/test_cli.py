"""The `pgl` command line: bad input gives a message naming the file and a non-zero exit, never a traceback;
JSON progress events; Ctrl-C / SIGTERM save a checkpoint and exit cleanly (real subprocesses)."""
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pgl_engine.cli import main
from pgl_engine.errors import PGLError
from pgl_engine.training.checkpoint import load_checkpoint

COMMON = ["--steps", "3", "--batch-size", "1", "--patch-size", "16", "--spacing", "8", "--workers", "0",
          "--feature-channels", "8", "--channels", "4", "8", "16", "--strides", "2", "2", "--device", "cpu"]
PRETRAIN_ARGS = COMMON + ["--grid-size", "4", "--projector-hidden", "8", "--predictor-hidden", "8",
                          "--projector-dim", "8"]


def pgl(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def folder_with(tmp_path, cohort, *bad):
    """A scan folder with one good phantom and the named bad files."""
    folder = tmp_path / "scans"
    folder.mkdir(exist_ok=True)
    if "good" in bad:
        shutil.copy(sorted((cohort / "images").iterdir())[0], folder / "good.nii.gz")
    if "corrupt" in bad:
        (folder / "corrupt.nii.gz").write_bytes(b"\x1f\x8b garbage")
    if "2d" in bad:
        nib.save(nib.Nifti1Image(np.zeros((30, 30), np.int16), np.eye(4)), str(folder / "slice.nii.gz"))
    if "4d" in bad:
        nib.save(nib.Nifti1Image(np.zeros((9, 9, 9, 4), np.int16), np.eye(4)), str(folder / "series.nii.gz"))
    return folder


@pytest.mark.parametrize("bad, expected", [
    ((), "holds no scans"),
    (("corrupt",), "corrupt.nii.gz: cannot be read"),
    (("2d",), "slice.nii.gz: is a 2D image"),
    (("4d",), "series.nii.gz: is a 4D image"),
])
def test_unusable_folders_fail_with_a_message(capsys, tmp_path, cohort, bad, expected):
    folder = folder_with(tmp_path, cohort, *bad)
    code, out, err = pgl(capsys, "pretrain", "--images", folder, "--out", tmp_path / "out",
                         "--cache-dir", tmp_path / "cache", *PRETRAIN_ARGS)
    assert code != 0
    assert expected in err
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_missing_folder_and_bad_options(capsys, tmp_path):
    code, _, err = pgl(capsys, "pretrain", "--images", tmp_path / "nope", "--out", tmp_path / "out", *PRETRAIN_ARGS)
    assert code != 0 and "nope: no such folder" in err
    code, _, err = pgl(capsys, "pretrain", "--images", tmp_path, "--out", tmp_path / "out", *PRETRAIN_ARGS,
                       "--patch-size", "18")
    assert code != 0 and "--patch-size must be a multiple of 4" in err


def test_bad_files_among_good_ones_are_skipped_and_listed(capsys, tmp_path, cohort):
    folder = folder_with(tmp_path, cohort, "good", "corrupt", "2d")
    code, out, err = pgl(capsys, "pretrain", "--images", folder, "--out", tmp_path / "out",
                         "--cache-dir", tmp_path / "cache", "--progress", "json", *PRETRAIN_ARGS)
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    warning = next(e for e in events if e["event"] == "warning")
    assert "skipped 2" in warning["message"]
    assert any("corrupt.nii.gz" in s for s in warning["skipped"]) and any("slice.nii.gz" in s for s in warning["skipped"])
    assert events[-1]["event"] == "done"
    steps = [e for e in events if e["event"] == "progress" and e["stage"] == "pretrain"]
    assert [e["step"] for e in steps] == [1, 2, 3]
    assert all({"loss", "eta_s", "total"} <= set(e) for e in steps)
    assert [e["step"] for e in steps if "effective_rank" in e] == [1, 3]  # the first, every 10th, the last


def test_output_folder_with_other_files_is_left_alone(capsys, tmp_path, cohort):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, stdout, err = pgl(capsys, "pretrain", "--images", cohort / "images", "--out", out,
                            "--cache-dir", tmp_path / "cache", "--progress", "json", *PRETRAIN_ARGS)
    last = json.loads(stdout.splitlines()[-1])
    assert code != 0 and last["event"] == "error" and "already holds other files" in last["message"]
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_phantom_command_writes_images_and_labels(capsys, tmp_path):
    code, _, err = pgl(capsys, "phantom", "--out", tmp_path / "ph", "--count", "2", "--labels",
                       "--spacing-scale", "5")
    assert code == 0, err
    images = sorted((tmp_path / "ph" / "images").iterdir())
    labels = sorted((tmp_path / "ph" / "labels").glob("*.nii.gz"))
    assert [p.name for p in images] == [p.name for p in labels] == ["phantom_000.nii.gz", "phantom_001.nii.gz"]
    image, label = nib.load(images[0]), nib.load(labels[0])
    assert image.shape == label.shape and np.allclose(image.affine, label.affine)
    assert set(np.unique(np.asarray(label.dataobj))) >= {0, 1, 2, 3, 4}
    sidecar = json.loads((tmp_path / "ph" / "labels" / "phantom_000.labels.json").read_text())
    assert sidecar["labels"]["1"]["name"] == "liver"
    dataset = json.loads((tmp_path / "ph" / "dataset.json").read_text())
    assert dataset["numTraining"] == 2 and dataset["labels"]["4"] == "left kidney"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_a_checkpoint_and_exits_cleanly(tmp_path, cohort, sig):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "pgl_engine", "pretrain", "--images", str(cohort / "images"), "--out", str(out),
            "--cache-dir", str(tmp_path / "cache"), "--progress", "json", *PRETRAIN_ARGS, "--steps", "100000"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    events = []
    for line in proc.stdout:
        events.append(json.loads(line))
        if events[-1].get("stage") == "pretrain" and events[-1]["step"] >= 3:
            proc.send_signal(sig)
            break
    rest, err = proc.communicate(timeout=300)
    events += [json.loads(line) for line in rest.splitlines()]
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    cancelled = events[-1]
    assert cancelled["event"] == "cancelled"
    state = load_checkpoint(out)
    assert state["step"] == cancelled["step"] >= 3
    code = subprocess.run(args[:-1] + [str(state["step"] + 2), "--resume"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert code.returncode == 0, code.stderr
    assert load_checkpoint(out)["step"] == state["step"] + 2


def test_finetune_and_segment_errors_exit_cleanly(capsys, tmp_path, cohort):
    labels = tmp_path / "labels"
    labels.mkdir()
    nib.save(nib.Nifti1Image(np.ones((5, 5, 5), np.uint8), np.eye(4)), str(labels / "phantom_000.nii.gz"))
    code, _, err = pgl(capsys, "finetune", "--images", cohort / "images", "--labels", labels, "--out",
                       tmp_path / "ft", "--cache-dir", tmp_path / "cache", *COMMON)
    assert code == 1 and "phantom_000.nii.gz: has another grid than its scan" in err
    code, _, err = pgl(capsys, "finetune", "--out", tmp_path / "ft2", *COMMON)
    assert code == 1 and "give --images and --labels, or --dataset" in err
    code, _, err = pgl(capsys, "segment", "--model", tmp_path, "--input", cohort / "images", "--output",
                       tmp_path / "pred")
    assert code == 1 and "is not a PGL model folder" in err


def test_variable_length_options_take_no_values_or_several():
    from pgl_engine.cli import build_parser
    from pgl_engine.cli_options import dataclass_from_args
    from pgl_engine.config import PretrainConfig

    parser = build_parser()
    args = parser.parse_args(["pretrain", "--images", "i", "--out", "o", "--flip-axes"])
    assert dataclass_from_args(PretrainConfig, args).flip_axes == ()
    args = parser.parse_args(["pretrain", "--images", "i", "--out", "o", "--flip-axes", "0", "2"])
    assert dataclass_from_args(PretrainConfig, args).flip_axes == (0, 2)
    with pytest.raises(PGLError, match="--flip-axes takes 0, 1, 2"):
        PretrainConfig(images="i", out="o", flip_axes=(3,))


def test_with_json_progress_an_error_is_reported_once(capsys, tmp_path):
    code, out, err = pgl(capsys, "segment", "--model", tmp_path / "nope", "--input", tmp_path, "--output",
                         tmp_path / "out", "--progress", "json")
    errors = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert code != 0 and [e["event"] for e in errors] == ["error"]
    assert "nope: no such model folder" in errors[0]["message"]
    assert "no such model folder" not in err  # the GUI reads both streams: the same message would show twice


def test_the_engine_imports_monai_only_for_the_commands_that_use_it():
    """`pgl scan-list`, `pgl phantom` and the parser start without MONAI (about half of the start-up time)."""
    probe = "import sys, pgl_engine, pgl_engine.cli; pgl_engine.cli.build_parser(); print('monai' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr


def test_segmenting_loads_no_training_module_and_the_package_names_stay_functions():
    """`pgl segment` imports what it needs only; `pgl_engine.segment` etc. are the functions, whatever came first."""
    probe = ("import sys, json, pgl_engine.inference.segmentation, pgl_engine.cli; "
             "loaded = sorted(m for m in sys.modules if m.startswith('pgl_engine.')); "
             "import pgl_engine.finetuning.trainer; from pgl_engine import segment, finetune, "
             "PGLError; print(json.dumps([loaded, [callable(segment), callable(finetune), "
             "callable(pgl_engine.pretrain), segment.__module__, PGLError.__module__]]))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    loaded, names = json.loads(result.stdout)
    assert "pgl_engine.inference.segmentation" in loaded and "pgl_engine.models.store" in loaded
    not_needed = {"pgl_engine.comparison.experiment", "pgl_engine.phantoms.tuning", "pgl_engine.finetuning.trainer",
                  "pgl_engine.pretraining.trainer", "pgl_engine.data.augment", "pgl_engine.comparison.stats"}
    assert not not_needed & set(loaded), loaded
    assert names == [True, True, True, "pgl_engine.inference.segmentation", "pgl_engine.errors"]
