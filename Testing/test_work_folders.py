"""Where the modules put the scans they hand to the engine, and that nothing is left there: Slicer's temporary
folder, uncompressed files, removed whatever the job's outcome, by the engine when Slicer quits mid-job, and at
the next start when a crash left them — never a folder of a job that still runs."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from cli_args import finetune_args
from conftest import ROOT

from PGLCommon.engine_runs import EngineError, start_engine, wait_for
from PGLCommon.work_folders import USERS_FILE, new_work_folder, remove_stale_work_folders, work_root


@pytest.fixture
def slicer_temporary(tmp_path, monkeypatch):
    """slicer.app.temporaryPath, as Slicer has it (slicer-core has no application)."""
    import slicer

    folder = tmp_path / "Slicer-user"
    monkeypatch.setattr(slicer, "app", SimpleNamespace(temporaryPath=str(folder)), raising=False)
    return folder


def test_outside_slicer_work_folders_go_to_the_system_temporary_folder(monkeypatch):
    import tempfile

    import slicer

    monkeypatch.delattr(slicer, "app", raising=False)
    assert work_root() == Path(tempfile.gettempdir())


@pytest.mark.slow
@pytest.mark.parametrize("outcome", ["done", "failed", "cancelled"])
def test_a_jobs_folder_is_in_slicers_temporary_folder_and_goes_whatever_the_outcome(slicer_temporary, tmp_path,
                                                                                    outcome):
    (tmp_path / "scans").mkdir()
    command, args = {"done": ("scan-list", ["--images", tmp_path / "scans"]),
                     "failed": ("pretrain", ["--images", tmp_path / "missing", "--out", tmp_path / "out"]),
                     "cancelled": ("scan-list", ["--images", tmp_path / "scans"])}[outcome]
    job = start_engine(command, args, "cpu")
    assert job.work.parent == slicer_temporary and job.work.name.startswith("pgl_job_scan-list_" if command ==
                                                                            "scan-list" else "pgl_job_pretrain_")
    if outcome == "cancelled":
        job.cancel()
    if outcome == "done":
        assert wait_for(job, timeout=120)["event"] == "done"
    else:
        with pytest.raises(EngineError):
            wait_for(job, timeout=120)
    assert not job.work.exists() and not list(slicer_temporary.iterdir())


def test_scans_for_the_engine_are_written_uncompressed(mrml, cohort, tmp_path, slicer_temporary):
    """gzip on the GUI thread held Slicer for seconds on a full-size CT."""
    from PGLSegmentationLib import PGLSegmentationLogic

    from PGLCommon.nodes import load_segmentation, read_label_table

    volume = mrml.load_volume(cohort / "images" / "phantom_000.nii.gz", "CT")
    table = read_label_table(cohort / "labels" / "phantom_000.labels.json")
    segmentation = load_segmentation(cohort / "labels" / "phantom_000.nii.gz", table, "Seg", volume)
    logic = PGLSegmentationLogic()
    logic.export_training_data([volume], [segmentation], ["liver"], tmp_path / "data")
    model = tmp_path / "model"
    model.mkdir()
    (model / "pgl_model.json").write_text(json.dumps({"format": "pgl-model", "kind": "segmentation"}))

    class Recorded:  # the job the logic would start, not started
        def __init__(self, work):
            self.work = work

        @classmethod
        def for_engine(cls, command, args, env=None, work=None):
            return cls(work)

        def start(self):
            return self

    logic.job_class = Recorded
    job = logic.start_segment(volume, str(model), device="cpu")
    while job.preparing:  # the volume is written a slab at a time as the job is polled
        job.poll()
    work = job.work
    written = [tmp_path / "data" / "images" / "CT.nii", tmp_path / "data" / "labels" / "CT.nii", work / "input.nii"]
    dims = volume.GetImageData().GetDimensions()
    for path in written:
        with open(path, "rb") as f:
            assert f.read(2) != b"\x1f\x8b", f"{path.name} is gzip-compressed"
        assert path.stat().st_size >= dims[0] * dims[1] * dims[2]  # raw voxels: at least one byte each
    assert work.parent == slicer_temporary


def record(folder: Path, pids: list[int], host: str | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / USERS_FILE).write_text(json.dumps({"host": host or socket.gethostname(), "pids": pids}))
    (folder / "input.nii").write_bytes(b"patient data")
    return folder


def test_only_folders_whose_processes_have_all_ended_are_removed_at_the_next_start(tmp_path):
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    other_slicer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        root = tmp_path / "Slicer-user"
        crashed = record(root / "pgl_job_finetune_a", [ended.pid])
        running_elsewhere = record(root / "pgl_job_segment_b", [other_slicer.pid])  # a second Slicer's job
        engine_outlives_slicer = record(root / "pgl_job_finetune_c", [ended.pid, other_slicer.pid])
        other_host = record(root / "pgl_job_segment_d", [ended.pid], host="elsewhere.example")
        unreadable = root / "pgl_job_check_e"
        unreadable.mkdir()  # no record (yet): never ours to judge
        not_ours = record(root / "someone_elses", [ended.pid])
        mine = new_work_folder("segment", root)
        assert remove_stale_work_folders(root) == [crashed]
        assert not crashed.exists()
        assert all(f.exists() for f in (running_elsewhere, engine_outlives_slicer, other_host, unreadable, not_ours,
                                        mine))
    finally:
        other_slicer.kill()
        other_slicer.wait()


SLICER_QUITS = """
import json, os, shutil, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from PGLCommon.engine_runs import start_engine
from PGLCommon.work_folders import new_work_folder

cohort, temporary = Path(sys.argv[1]), Path(sys.argv[2])
work = new_work_folder("finetune", temporary)
for part in ("images", "labels"):  # the scans the module exports
    shutil.copytree(cohort / part, work / part)
command, *args = [a.replace("@WORK", str(work)) for a in json.loads(sys.argv[3])]
job = start_engine(command, args, "cpu", work=work)
deadline = time.monotonic() + 120
while not any(e.get("stage") == "finetune" and e["step"] >= 2 for e in job.poll()):
    assert time.monotonic() < deadline and job.running
    time.sleep(0.05)
print(json.dumps({{"work": str(work), "engine": job.process.pid}}), flush=True)
job.cancel()  # the panel's shutdown on application exit; then Slicer is gone: its pipes close, nothing else runs
os._exit(0)
"""


def process_gone(pid: int) -> bool:
    """Ended (a zombie counts: its parent, Slicer, is gone)."""
    try:
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True


@pytest.mark.slow
def test_when_slicer_quits_mid_run_the_engine_keeps_its_model_and_removes_the_exported_scans(cohort, tmp_path):
    from pgl_engine.training.checkpoint import load_checkpoint

    args = finetune_args(Path("@WORK/images"), Path("@WORK/labels"), tmp_path / "model", tmp_path / "cache",
                         "--steps", "100000", "--checkpoint-every", "100000")
    slicer = subprocess.run([sys.executable, "-c", SLICER_QUITS.format(root=str(ROOT)), str(cohort),
                             str(tmp_path / "Slicer-user"), json.dumps(args)], capture_output=True, text=True,
                            timeout=180)
    assert slicer.returncode == 0, slicer.stderr
    started = json.loads(slicer.stdout.strip().splitlines()[-1])
    deadline = time.monotonic() + 120
    while not process_gone(started["engine"]):
        assert time.monotonic() < deadline, "the engine kept running after Slicer quit"
        time.sleep(0.1)
    assert load_checkpoint(tmp_path / "model")["step"] >= 2
    assert json.loads((tmp_path / "model" / "pgl_model.json").read_text())["stopped_early"]["step"] >= 2
    assert not Path(started["work"]).exists(), "the exported scans outlived the job"
    assert os.listdir(tmp_path / "Slicer-user") == []
