"""Bad input as a hostile but fair user gives it, through the `pgl` command line.

For every case: the exit code, no traceback, the file, folder or option named in what the user reads, and every
file the user had unchanged (SHA-256 before and after). Cases that still succeed (a scan with NaN padding, a
truncated scan among good ones, ...) must say what they did about it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import pytest
import torch
from cli_args import finetune_args, pretrain_args

from pgl_engine.cli import main


@dataclass
class Place:
    """One case's own folder, beside the shared, read-only inputs."""

    root: Path
    cohort: Path
    cache: Path
    seg_model: Path
    mounts: list = field(default_factory=list)  # small file systems to unmount after the case

    @property
    def images(self) -> Path:
        return self.cohort / "images"

    @property
    def labels(self) -> Path:
        return self.cohort / "labels"

    def scan(self, i: int = 0) -> Path:
        return self.images / f"phantom_{i:03d}.nii.gz"

    def label(self, i: int = 0) -> Path:
        return self.labels / f"phantom_{i:03d}.nii.gz"

    def folder(self, name: str, *scans: Path) -> Path:
        """A new folder under the case's root holding copies of `scans`."""
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        for scan in scans:
            shutil.copy(scan, folder / scan.name)
        return folder

    def write(self, path: Path, array: np.ndarray, like: Path | None = None) -> Path:
        affine = nib.load(str(like)).affine if like else np.diag([4.0, 4.0, 4.0, 1.0])
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(array, affine), str(path))
        return path

    def scan_array(self, i: int = 0) -> np.ndarray:
        return np.asarray(nib.load(str(self.scan(i))).dataobj, dtype=np.float32)

    def label_array(self, i: int = 0) -> np.ndarray:
        return np.asarray(nib.load(str(self.label(i))).dataobj).astype(np.int16)


@dataclass
class Case:
    id: str
    argv: Callable[[Place], list[str]]  # may prepare files under place.root first
    code: int  # expected exit code
    named: Callable[[Place], str]  # must appear in the output
    says: str = ""  # and this (lower-case substring)
    check: Callable[[Place], None] | None = None  # further checks after the run
    needs: tuple[str, ...] = field(default_factory=tuple)  # "tmpfs", "no-cuda"
    may_change: str = ""  # a folder under the case's root that the command is asked to change (a resumed run)


def truncated(place: Place, name="truncated.nii.gz") -> Path:
    data = place.scan().read_bytes()
    target = place.root / "scans" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data[: len(data) // 2])
    return target


def nan_scan(place: Place, value=np.nan) -> Path:
    array = place.scan_array()
    array[:, :, : array.shape[2] // 5] = value  # padding outside the field of view
    return place.write(place.root / "scans" / "padded.nii.gz", array, place.scan())


def two_d(place: Place) -> Path:
    return place.write(place.root / "scans" / "slice.nii.gz", np.zeros((32, 32), np.int16))


def four_d(place: Place) -> Path:
    return place.write(place.root / "scans" / "series.nii.gz", np.zeros((16, 16, 16, 3), np.int16))


def scan_with_label_map(place: Place, name: str, label: np.ndarray, dtype=np.int16) -> tuple[Path, Path]:
    """images/ with phantom 0 and labels/ with `label` (on its grid) under the case's root."""
    images = place.folder(f"{name}/images", place.scan())
    labels = place.root / name / "labels"
    place.write(labels / place.scan().name, label.astype(dtype), place.scan())
    return images, labels


def run_of(place: Place, name="run", *extra) -> Path:
    """A finished tiny pretraining run (with checkpoints) under the case's root."""
    out = place.root / name
    assert main(pretrain_args(place.images, out, place.cache, "--checkpoint-every", "1", *extra)) == 0
    return out


def stopped_early(place: Place) -> Path:
    out = place.root / "stopped"
    out.mkdir()
    (out / "train_log.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n")
    return out


def bad_checkpoint(place: Place, content: bytes | None = None) -> Path:
    out = run_of(place)
    if content is None:
        class Payload:
            def __reduce__(self):
                return (os.system, ("echo this should never run",))
        torch.save({"step": 1, "model": Payload()}, out / "checkpoints" / "latest.pt")
    else:
        (out / "checkpoints" / "latest.pt").write_bytes(content)
    return out


def pretrained_model(place: Place) -> Path:
    return run_of(place, "pretrained")


def tampered_model(place: Place) -> Path:
    model = place.folder("tampered")
    for f in place.seg_model.iterdir():
        if f.is_file():
            shutil.copy(f, model / f.name)
    weights = model / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-16:] = bytes(16)
    weights.write_bytes(bytes(data))
    return model


def small_disk(place: Place, free: int = 20_000) -> Path:
    """A real, nearly full file system (tmpfs, needs root) with about `free` bytes left."""
    mount = place.root / "small_disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if result.returncode:
        pytest.skip(f"cannot mount a small tmpfs here ({result.stderr.decode().strip()})")
    place.mounts.append(mount)
    (mount / "filler.bin").write_bytes(bytes(shutil.disk_usage(mount).free - free))
    return mount


def renamed_scan(place: Place) -> Path:
    folder = place.folder("renamed")
    shutil.copy(place.scan(0), folder / "patient_x.nii.gz")
    return folder


def segmented(place: Place) -> Path:
    out = place.root / "segmented"
    assert main(["segment", "--model", str(place.seg_model), "--input", str(place.images), "--output", str(out),
                 "--device", "cpu"]) == 0
    return out


def has_foreground(path: Path) -> None:
    assert np.asarray(nib.load(str(path)).dataobj).max() > 0, f"{path} is all background"


def dataset_json(place: Place, content: str) -> Path:
    path = place.root / "dataset.json"
    path.write_text(content)
    return path


CASES = [
    # --- pretrain: the scans
    Case("pretrain-images-missing", lambda p: pretrain_args(p.root / "nowhere", p.root / "out", p.cache), 1,
         lambda p: str(p.root / "nowhere"), "no such folder"),
    Case("pretrain-images-empty", lambda p: pretrain_args(p.folder("empty"), p.root / "out", p.cache), 1,
         lambda p: str(p.root / "empty"), "holds no scans"),
    Case("pretrain-images-only-text", lambda p: (p.folder("texts").joinpath("notes.txt").write_text("x"),
                                                 pretrain_args(p.root / "texts", p.root / "out", p.cache))[1], 1,
         lambda p: str(p.root / "texts"), "holds no scans"),
    Case("pretrain-only-truncated", lambda p: pretrain_args(truncated(p).parent, p.root / "out", p.cache), 1,
         lambda p: "truncated.nii.gz", "corrupt or truncated"),
    Case("pretrain-truncated-among-good", lambda p: pretrain_args(
        (truncated(p), p.folder("scans", p.scan(0), p.scan(1)))[1], p.root / "out", p.cache), 0,
         lambda p: "truncated.nii.gz", "skipped 1 unreadable"),
    Case("pretrain-2d-image", lambda p: pretrain_args(two_d(p).parent, p.root / "out", p.cache), 1,
         lambda p: "slice.nii.gz", "3d"),
    Case("pretrain-4d-image", lambda p: pretrain_args(four_d(p).parent, p.root / "out", p.cache), 1,
         lambda p: "series.nii.gz", "single-channel 3d"),
    Case("pretrain-nan-padding", lambda p: pretrain_args(
        (nan_scan(p), p.folder("scans", p.scan(1)))[1], p.root / "out", p.cache), 0,
         lambda p: "padded.nii.gz", "nan or infinite"),
    Case("pretrain-inf-voxels", lambda p: pretrain_args(
        (nan_scan(p, np.inf), p.folder("scans", p.scan(1)))[1], p.root / "out", p.cache), 0,
         lambda p: "padded.nii.gz", "nan or infinite"),
    Case("pretrain-constant-scan", lambda p: pretrain_args(
        (p.write(p.root / "scans" / "blank.nii.gz", np.full((40, 40, 30), -1024, np.int16)),
         p.folder("scans", p.scan(1)))[1], p.root / "out", p.cache), 0,
         lambda p: "blank.nii.gz", "same value"),
    # --- pretrain: the output folder and resuming
    Case("pretrain-out-is-file", lambda p: pretrain_args(p.images, (p.folder("f") / "model.txt", (
        p.root / "f" / "model.txt").write_text("mine"))[0], p.cache), 1,
         lambda p: str(p.root / "f" / "model.txt"), "is a file"),
    Case("pretrain-out-foreign", lambda p: pretrain_args(p.images, (p.folder("thesis"), (
        p.root / "thesis" / "chapter1.docx").write_text("precious"))[0], p.cache), 1,
         lambda p: str(p.root / "thesis"), "other files"),
    Case("pretrain-out-finished-run", lambda p: pretrain_args(p.images, run_of(p), p.cache), 1,
         lambda p: str(p.root / "run"), "--resume"),
    Case("pretrain-resume-missing", lambda p: pretrain_args(p.images, p.root / "never", p.cache, "--resume"), 1,
         lambda p: str(p.root / "never"), "no such folder"),
    Case("pretrain-resume-empty", lambda p: pretrain_args(p.images, p.folder("blank"), p.cache, "--resume"), 1,
         lambda p: str(p.root / "blank"), "nothing to resume"),
    Case("pretrain-resume-stopped-early", lambda p: pretrain_args(p.images, stopped_early(p), p.cache, "--resume"),
         1, lambda p: str(p.root / "stopped"), "--overwrite instead of --resume"),
    Case("pretrain-restart-stopped-early", lambda p: pretrain_args(p.images, stopped_early(p), p.cache), 1,
         lambda p: str(p.root / "stopped"), "add --overwrite"),
    Case("pretrain-resume-pickled-payload", lambda p: pretrain_args(p.images, bad_checkpoint(p), p.cache, "--resume"),
         1, lambda p: "latest.pt", "may contain code"),
    Case("pretrain-resume-random-bytes", lambda p: pretrain_args(
        p.images, bad_checkpoint(p, np.random.default_rng(7).bytes(4000)), p.cache, "--resume"), 1,
         lambda p: "latest.pt", "not a pgl checkpoint"),
    Case("pretrain-resume-zip-header-then-garbage", lambda p: pretrain_args(
        p.images, bad_checkpoint(p, b"PK\x03\x04" + np.random.default_rng(8).bytes(4000)), p.cache, "--resume"), 1,
         lambda p: "latest.pt", "damaged or truncated"),
    Case("pretrain-resume-truncated-checkpoint", lambda p: pretrain_args(
        p.images, bad_checkpoint(p, b"PK\x03\x04" + bytes(200)), p.cache, "--resume"), 1,
         lambda p: "latest.pt", "damaged or truncated"),
    Case("pretrain-resume-changed-options", lambda p: pretrain_args(
        p.images, run_of(p), p.cache, "--resume", "--steps", "3", "--lr", "0.01"), 0,
         lambda p: "lr=0.01", "ignored", may_change="run"),
    Case("pretrain-out-locked", lambda p: pretrain_args(p.images, locked(p), p.cache, "--overwrite"), 1,
         lambda p: f"pid {os.getpid()}", "in use by another run"),
    Case("pretrain-disk-full", lambda p: pretrain_args(p.images, small_disk(p) / "run", p.cache), 1,
         lambda p: str(p.root / "small_disk"), "disk is full", needs=("tmpfs",)),
    # --- pretrain: options
    Case("pretrain-steps-zero", lambda p: pretrain_args(p.images, p.root / "out", p.cache, "--steps", "0"), 1,
         lambda p: "--steps", ">= 1"),
    Case("pretrain-patch-not-multiple", lambda p: pretrain_args(
        p.images, p.root / "out", p.cache, "--patch-size", "15", "16", "16"), 1, lambda p: "--patch-size",
         "multiple of 4"),
    Case("pretrain-hu-window-reversed", lambda p: pretrain_args(
        p.images, p.root / "out", p.cache, "--hu-window", "300", "-100"), 1, lambda p: "--hu-window", "lo < hi"),
    Case("pretrain-no-such-method", lambda p: pretrain_args(p.images, p.root / "out", p.cache, "--method", "simclr"),
         2, lambda p: "--method", "invalid choice"),
    Case("pretrain-cuda-without-gpu", lambda p: pretrain_args(p.images, p.root / "out", p.cache, "--device", "cuda"),
         1, lambda p: "--device cuda", "no cuda gpu", needs=("no-cuda",)),
    # --- finetune
    Case("finetune-labels-missing", lambda p: finetune_args(p.images, p.root / "nolabels", p.root / "out", p.cache),
         1, lambda p: str(p.root / "nolabels"), "no such folder"),
    Case("finetune-no-pairs", lambda p: finetune_args(renamed_scan(p), p.labels, p.root / "out", p.cache), 1,
         lambda p: str(p.root / "renamed"), "same file name"),
    Case("finetune-label-other-grid", lambda p: finetune_args(*scan_with_label_map(
        p, "grid", np.ones((10, 10, 10))), p.root / "out", p.cache), 1, lambda p: "grid/labels/phantom_000.nii.gz",
         "another grid"),
    Case("finetune-label-empty", lambda p: finetune_args(*scan_with_label_map(
        p, "empty", np.zeros_like(p.label_array())), p.root / "out", p.cache), 1,
         lambda p: "empty/labels/phantom_000.nii.gz", "only background"),
    Case("finetune-label-fractional", lambda p: finetune_args(*scan_with_label_map(
        p, "frac", p.label_array() * 0.5, np.float32), p.root / "out", p.cache), 1,
         lambda p: "frac/labels/phantom_000.nii.gz", "0.5"),
    Case("finetune-label-above-255", lambda p: finetune_args(*scan_with_label_map(
        p, "big", np.where(p.label_array() == 1, 300, p.label_array())), p.root / "out", p.cache), 1,
         lambda p: "big/labels/phantom_000.nii.gz", "300"),
    Case("finetune-label-negative", lambda p: finetune_args(*scan_with_label_map(
        p, "neg", -p.label_array()), p.root / "out", p.cache), 1,
         lambda p: "neg/labels/phantom_000.nii.gz", "-1"),
    Case("finetune-label-unnamed-value", lambda p: finetune_args(
        p.images, p.labels, p.root / "out", p.cache, "--label-names", "liver"), 1, lambda p: "phantom_000.nii.gz",
         "not among the named labels"),
    Case("finetune-scan-without-label", lambda p: finetune_args(
        p.folder("scans", p.scan(0), p.scan(1), p.scan(2)), p.folder("some_labels", p.label(0), p.label(1)),
        p.root / "out", p.cache), 0, lambda p: "phantom_002", "no label map"),
    Case("finetune-init-missing", lambda p: finetune_args(
        p.images, p.labels, p.root / "out", p.cache, "--init", str(p.root / "nomodel"), network=False), 1,
         lambda p: str(p.root / "nomodel"), "no such model folder"),
    Case("finetune-init-pickle-file", lambda p: finetune_args(p.images, p.labels, p.root / "out", p.cache, "--init", (
        torch.save({"w": torch.zeros(2)}, p.root / "weights.pt"), str(p.root / "weights.pt"))[1], network=False), 1,
         lambda p: "weights.pt", "never loaded"),
    Case("finetune-init-tampered-weights", lambda p: finetune_args(
        p.images, p.labels, p.root / "out", p.cache, "--init", str(tampered_model(p)), network=False), 1,
         lambda p: "model.safetensors", "hash differs"),
    Case("finetune-init-other-network", lambda p: finetune_args(
        p.images, p.labels, p.root / "out", p.cache, "--init", str(p.seg_model), "--feature-channels", "4",
        network=False), 1, lambda p: str(p.seg_model), "another network"),
    Case("finetune-init-segmentation-model", lambda p: finetune_args(
        p.images, p.labels, p.root / "out", p.cache, "--init", str(p.seg_model), network=False), 0,
         lambda p: str(p.seg_model), "segmentation model for other labels"),
    Case("finetune-dataset-json-invalid", lambda p: ["finetune", "--dataset", str(dataset_json(p, "{oops")), "--out",
                                                     str(p.root / "out")], 1, lambda p: "dataset.json", "cannot be read"),
    Case("finetune-dataset-json-missing-files", lambda p: ["finetune", "--dataset", str(dataset_json(p, json.dumps(
        {"labels": {"0": "background", "1": "liver"}, "training": [{"image": "a.nii.gz", "label": "b.nii.gz"}]}))),
        "--out", str(p.root / "out")], 1, lambda p: "a.nii.gz", "do not exist"),
    Case("finetune-val-count-too-large", lambda p: finetune_args(
        p.images, p.labels, p.root / "out", p.cache, "--val-count", "3"), 1, lambda p: "--val-count", "no scan"),
    # --- segment
    Case("segment-model-missing", lambda p: ["segment", "--model", str(p.root / "m"), "--input", str(p.images),
                                             "--output", str(p.root / "o")], 1, lambda p: str(p.root / "m"),
         "no such model folder"),
    Case("segment-model-pretrained", lambda p: ["segment", "--model", str(pretrained_model(p)), "--input",
                                                str(p.images), "--output", str(p.root / "o")], 1,
         lambda p: str(p.root / "pretrained"), "fine-tune it first"),
    Case("segment-input-missing", lambda p: ["segment", "--model", str(p.seg_model), "--input", str(p.root / "x.nii"),
                                             "--output", str(p.root / "o")], 1, lambda p: str(p.root / "x.nii"),
         "no such scan"),
    Case("segment-output-is-input", lambda p: ["segment", "--model", str(p.seg_model), "--input", str(
        p.folder("in", p.scan(0)) / p.scan(0).name), "--output", str(p.root / "in" / p.scan(0).name)], 1,
         lambda p: "phantom_000.nii.gz", "overwrite the input"),
    Case("segment-output-over-references", lambda p: ["segment", "--model", str(p.seg_model), "--input", str(
        p.folder("in", p.scan(0))), "--output", str(p.folder("refs", p.label(0)))], 1,
         lambda p: str(p.root / "refs" / "phantom_000.nii.gz"), "did not write"),
    Case("segment-overlap-out-of-range", lambda p: ["segment", "--model", str(p.seg_model), "--input", str(p.images),
                                                    "--output", str(p.root / "o"), "--overlap", "1.5"], 1,
         lambda p: "--overlap", "< 1"),
    Case("segment-output-bad-suffix", lambda p: ["segment", "--model", str(p.seg_model), "--input", str(p.scan(0)),
                                                 "--output", str(p.root / "result.png")], 1,
         lambda p: "result.png", "ending in"),
    Case("segment-nan-padding", lambda p: ["segment", "--model", str(p.seg_model), "--input", str(nan_scan(p)),
                                           "--output", str(p.root / "seg.nii.gz"), "--device", "cpu"], 0,
         lambda p: "padded.nii.gz", "nan or infinite", check=lambda p: has_foreground(p.root / "seg.nii.gz")),
    Case("segment-disk-full", lambda p: ["segment", "--model", str(p.seg_model), "--input", str(p.scan(0)),
                                         "--output", str(small_disk(p, 2000) / "seg.nii.gz"), "--device", "cpu"], 1,
         lambda p: str(p.root / "small_disk"), "disk is full", needs=("tmpfs",)),
    # --- evaluate
    Case("evaluate-pred-missing", lambda p: ["evaluate", "--pred", str(p.root / "preds"), "--labels", str(p.labels)],
         1, lambda p: str(p.root / "preds"), "no such folder of predicted"),
    Case("evaluate-labels-empty", lambda p: ["evaluate", "--pred", str(segmented(p)), "--labels",
                                             str(p.folder("nothing"))], 1, lambda p: str(p.root / "nothing"),
         "holds no label maps"),
    Case("evaluate-no-matching-names", lambda p: ["evaluate", "--pred", str(p.folder("pred", p.label(0))), "--labels",
                                                  str(p.folder("refs", p.label(1)))], 1, lambda p: "phantom_001",
         "same file name"),
    Case("evaluate-other-grid", lambda p: ["evaluate", "--pred",
                                           str(scan_with_label_map(p, "g", np.ones((8, 8, 8)))[1]),
                                           "--labels", str(p.labels)], 1, lambda p: "phantom_000.nii.gz",
         "another grid"),
    Case("evaluate-csv-is-folder", lambda p: ["evaluate", "--pred", str(segmented(p)), "--labels", str(p.labels),
                                              "--csv", str(p.folder("csvdir"))], 1, lambda p: str(p.root / "csvdir"),
         "is a folder"),
    Case("evaluate-csv-is-a-reference", lambda p: ["evaluate", "--pred", str(segmented(p)), "--labels",
                                                   str(p.labels), "--csv", str(p.label(0))], 1,
         lambda p: str(p.label(0)), "being evaluated"),
    Case("evaluate-csv-missing-parent", lambda p: ["evaluate", "--pred", str(segmented(p)), "--labels",
                                                   str(p.labels), "--csv", str(p.root / "a" / "b.csv")], 1,
         lambda p: str(p.root / "a"), "no such folder"),
    # --- scan-list
    Case("scan-list-missing", lambda p: ["scan-list", "--images", str(p.root / "archive")], 1,
         lambda p: str(p.root / "archive"), "no such folder"),
]


def locked(place: Place) -> Path:
    """A run folder whose lock is held by a live process on this host (this test's own process)."""
    from pgl_engine.training.run_lock import LOCK_FILE

    out = run_of(place, "busy")
    (out / LOCK_FILE).write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename,
                                             "command": "pgl pretrain", "token": "x", "started": "now"}))
    return out


def checksums(*folders: Path) -> dict[str, str]:
    sums = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                sums[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return sums


@pytest.fixture(scope="module")
def shared(cohort, seg_model, tmp_path_factory):
    return cohort, seg_model, tmp_path_factory.mktemp("bad_input_cache")


# the cases that train, segment or (finetune --dataset without --steps) choose a configuration first: more than a
# few seconds each, so outside the fast tier (docs/tests.md)
SLOW_CASES = {"pretrain-inf-voxels", "pretrain-resume-changed-options", "pretrain-out-locked", "pretrain-disk-full",
              "finetune-init-segmentation-model", "finetune-dataset-json-invalid",
              "finetune-dataset-json-missing-files", "segment-model-pretrained", "segment-nan-padding",
              "segment-disk-full", "evaluate-labels-empty", "evaluate-csv-is-folder", "evaluate-csv-is-a-reference",
              "evaluate-csv-missing-parent"}


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.id in SLOW_CASES else [])
                                  for c in CASES])
def test_bad_input(case: Case, shared, tmp_path, capsys):
    cohort, seg_model, cache = shared
    if "no-cuda" in case.needs and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    place = Place(tmp_path, cohort, cache, seg_model)
    try:
        argv = case.argv(place)
        capsys.readouterr()
        before = checksums(tmp_path, cohort, seg_model)
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's own errors (usage line, exit code 2)
            code = e.code
        out = capsys.readouterr()
        text = out.out + out.err
        after = checksums(tmp_path, cohort, seg_model)
        if case.check:
            case.check(place)
    finally:
        for mount in place.mounts:
            subprocess.run(["umount", "-l", str(mount)], check=False)
    assert "Traceback" not in text, text
    assert code == case.code, text
    assert case.named(place) in text, text
    assert case.says.lower() in text.lower(), text
    allowed = str(tmp_path / case.may_change) if case.may_change else None
    changed = [p for p in before if after.get(p) != before[p] and not (allowed and p.startswith(allowed + os.sep))]
    assert not changed, f"user files changed or lost: {changed}"
