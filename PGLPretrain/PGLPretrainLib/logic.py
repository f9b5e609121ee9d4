"""PGL Pretrain logic: start self-supervised pretraining on a folder of scans (no GUI, no Qt). A user's mistake
raises UserError (PGLCommon.errors), as in PGL Segmentation; engine failures EngineError."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from PGLCommon.engine_runs import start_engine, wait_for
from PGLCommon.errors import UserError
from PGLCommon.jobs import EngineJob

# the engine's defaults, which the panel shows too
from pgl_engine.contract import (BATCH_SIZE, DEVICE, PRETRAIN_METHOD, PRETRAIN_PATCH_SIZE, PRETRAIN_SPACING_MM,
                                 PRETRAIN_STEPS)


def check_scan_folder(folder: str) -> None:
    if not folder or not Path(folder).is_dir():
        raise UserError(f"Choose the folder of scans to pretrain on (got {folder!r}).")


class PGLPretrainLogic:
    """Console use: `PGLPretrainLogic().pretrain("/data/ct", "/models/pgl", steps=300, wait=True)` (the GUI keeps
    running while it waits)."""

    def __init__(self, job_class: type = EngineJob):
        self.job_class = job_class

    @staticmethod
    def arguments(folder: str, outputDir: str, method: str = PRETRAIN_METHOD, steps: int = PRETRAIN_STEPS,
                  patchSize: Sequence[int] = PRETRAIN_PATCH_SIZE, spacing: Sequence[float] = PRETRAIN_SPACING_MM,
                  device: str = DEVICE, resume: bool = False, batchSize: int = BATCH_SIZE, overwrite: bool = False,
                  extraArgs: Sequence[str] = ()) -> list[str]:
        check_scan_folder(folder)
        if not outputDir:
            raise UserError("Choose an output model folder.")
        args = ["--images", folder, "--out", outputDir, "--method", method, "--steps", steps,
                "--batch-size", batchSize, "--patch-size", *patchSize, "--spacing", *spacing, "--device", device]
        if resume:
            args.append("--resume")
        elif overwrite:
            args.append("--overwrite")
        return [str(a) for a in [*args, *extraArgs]]

    def pretrain(self, folder: str, outputDir: str, method: str = PRETRAIN_METHOD, steps: int = PRETRAIN_STEPS,
                 patchSize: Sequence[int] = PRETRAIN_PATCH_SIZE, spacing: Sequence[float] = PRETRAIN_SPACING_MM,
                 device: str = DEVICE, resume: bool = False, batchSize: int = BATCH_SIZE, overwrite: bool = False,
                 extraArgs: Sequence[str] = (), wait: bool = False, onEvent: Callable[[dict], None] | None = None):
        """Start pretraining. A folder holding a run is continued with resume=True, replaced with overwrite=True,
        and refused otherwise. wait=True blocks, GUI alive, and returns the model folder (EngineError on
        failure); wait=False returns the running EngineJob (poll() its events, cancel() it)."""
        args = self.arguments(folder, outputDir, method, steps, patchSize, spacing, device, resume, batchSize,
                              overwrite, extraArgs)
        job = start_engine("pretrain", args, device, self.job_class)
        if not wait:
            return job
        return wait_for(job, onEvent, then=lambda done: done.get("model_dir", outputDir))

    def scan_list(self, folder: str, wait: bool = False, onEvent: Callable[[dict], None] | None = None):
        """What pretraining would use from `folder` (scan files and DICOM series, searched recursively) and what
        it skips, why: wait=True returns the engine's listing (dict with counts, scans, skipped), else the job."""
        check_scan_folder(folder)
        job = start_engine("scan-list", ["--images", folder], "cpu", self.job_class)
        return wait_for(job, onEvent) if wait else job


def describe_listing(listing: dict) -> str:
    """'12 scan(s) will be used (2 files, 10 DICOM series); 3 skipped: ...' for the panel."""
    counts = listing.get("counts", {})
    text = (f"{counts.get('scans', 0)} scan(s) will be used ({counts.get('files', 0)} file(s), "
            f"{counts.get('series', 0)} DICOM series); {counts.get('skipped', 0)} skipped")
    skipped = listing.get("skipped", [])
    if skipped:
        text += ":\n" + "\n".join(f"  {s['what']}: {s['reason']}" for s in skipped[:5])
        text += f"\n  ... and {len(skipped) - 5} more" if len(skipped) > 5 else ""
    return text

