"""PGL Segmentation logic: fine-tune from segmentations in the scene, segment volumes (MRML only, no Qt).

Console use (the GUI keeps running while these wait):
    logic = PGLSegmentationLogic()
    modelDir = logic.finetune([volume], [segmentation], "/models/liver", init="/models/pgl", wait=True)
    segmentationNode = logic.segment(volume, modelDir)
    # correct segmentationNode in the Segment Editor, then teach the model from the correction:
    refinedDir = logic.refine(volume, segmentationNode, modelDir, steps=100, wait=True)
    logic.segment(volume, refinedDir, into=segmentationNode)
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Callable, Sequence

from PGLCommon.engine_runs import start_engine, wait_for
from PGLCommon.jobs import EngineJob
from PGLCommon.model_info import label_names, next_free_folder, read_model_metadata
from PGLCommon.output_folders import is_model_folder, same_folder
from PGLCommon.nodes import NodeError, export_labels, load_segmentation, read_label_table, write_volume
from PGLCommon.sample_data import load_sample_case, write_sample_data
from PGLCommon.work_folders import new_work_folder


def segment_names(segmentation_node) -> list[str]:
    segmentation = segmentation_node.GetSegmentation()
    return [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]


def case_names(volumes: Sequence) -> list[str]:
    """File-name-safe, unique names after the volume nodes: `CT 1` -> `CT_1`, a second `CT_1` -> `CT_1_2`."""
    names, used = [], set()
    for volume in volumes:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", volume.GetName()).strip("._") or "case"
        name, n = base, 2
        while name.lower() in used:
            name, n = f"{base}_{n}", n + 1
        used.add(name.lower())
        names.append(name)
    return names


def describe_partial_case(volume, segmentation, names: Sequence[str], unlabelled: Sequence[str]) -> str:
    labelled = [n for n in names if n not in unlabelled]
    return (f"{volume.GetName()} labels {', '.join(labelled)}, not {', '.join(unlabelled)} (absent or empty in "
            f"{segmentation.GetName()}): there, {'it is' if len(unlabelled) == 1 else 'they are'} left unlabelled, "
            f"not taught as background")


def check_pairs(volumes: Sequence, segmentations: Sequence) -> None:
    if not volumes or len(volumes) != len(segmentations):
        raise NodeError("Select one or more (volume, segmentation) pairs to fine-tune on.")
    for i, (volume, segmentation) in enumerate(zip(volumes, segmentations)):
        if volume is None or segmentation is None:
            raise NodeError(f"pair {i + 1}: choose both a volume and a segmentation.")


class PGLSegmentationLogic:
    def __init__(self, job_class: type = EngineJob):
        self.job_class = job_class
        self.models: list[str] = []  # fine-tuned model folders, newest last

    # --- fine-tuning ---------------------------------------------------------------------------------
    def export_training_data(self, volumes: Sequence, segmentations: Sequence, names: Sequence[str] | None,
                             folder: Path) -> tuple[list[str], list[str]]:
        """Write each (volume, segmentation) pair as images/case_i + labels/case_i on the volume's grid.

        Returns the label names (value i+1 = names[i]) and a note for each case that leaves a chosen segment out
        (absent or empty: partial labels). Files are named after the volumes (so the model's record of its cases
        reads like the scene).
        """
        check_pairs(volumes, segmentations)
        if names is not None and not list(names):
            raise NodeError("No segment is chosen: check at least one segment to train on.")
        names = list(names) if names else list(dict.fromkeys(n for s in segmentations for n in segment_names(s)))
        if not names:
            raise NodeError(f"{segmentations[0].GetName()}: has no segments; draw them in the Segment Editor.")
        (folder / "images").mkdir(parents=True)
        (folder / "labels").mkdir()
        warnings = []
        for case, volume, segmentation in zip(case_names(volumes), volumes, segmentations):
            write_volume(volume, folder / "images" / f"{case}.nii")
            _, unlabelled = export_labels(segmentation, names, volume, folder / "labels" / f"{case}.nii")
            if unlabelled:
                warnings.append(describe_partial_case(volume, segmentation, names, unlabelled))
        return names, warnings

    def export_to_temporary_folder(self, volumes: Sequence, segmentations: Sequence, names: Sequence[str] | None,
                                   purpose: str) -> tuple[Path, list[str], list[str]]:
        """export_training_data into a new temporary folder (removed again if the export fails); the folder goes
        to the job that uses it."""
        work = new_work_folder(purpose)
        try:
            return (work, *self.export_training_data(volumes, segmentations, names, work))
        except Exception:
            shutil.rmtree(work, ignore_errors=True)
            raise

    def finetune(self, volumes: Sequence, segmentations: Sequence, outputDir: str,
                 segmentNames: Sequence[str] | None = None, init: str = "none", steps: int | None = None,
                 minutes: float | None = None, device: str = "auto", patchSize: Sequence[int] | None = None,
                 spacing: Sequence[float] | None = None,
                 overwrite: bool = False, extraArgs: Sequence[str] = (), wait: bool = False,
                 onEvent: Callable[[dict], None] | None = None):
        """Fine-tune a model from the chosen segments (segmentNames=None: all; an empty list is refused) for
        `steps` steps, or for about `minutes` minutes (the engine sets the step count from the first steps' time);
        with neither, for the engine's default time (about 10 minutes, like the panel).

        An output folder that holds a model is replaced only with overwrite=True, and never when it is the
        `init` model. wait=True returns the model folder (raises EngineError or NodeError); wait=False returns
        the running EngineJob, which owns the exported training data until it is released."""
        check_pairs(volumes, segmentations)
        if not outputDir:
            raise NodeError("Choose an output model folder.")
        if init and init != "none" and not is_model_folder(init):
            raise NodeError(f"{init}: is not a PGL model folder; choose the folder PGL Pretrain wrote, or none.")
        if init and init != "none" and same_folder(init, outputDir):
            raise NodeError(f"{outputDir}: is the initial model; choose another output folder so it is kept.")
        work, names, warnings = self.export_to_temporary_folder(volumes, segmentations, segmentNames, "finetune")
        args = ["--images", work / "images", "--labels", work / "labels", "--out", outputDir, "--init", init or "none",
                "--device", device, "--label-names", *names]
        if steps:
            args += ["--steps", steps]
        if minutes:
            args += ["--minutes", minutes]
        if overwrite:
            args.append("--overwrite")
        if patchSize:
            args += ["--patch-size", *patchSize]
        if spacing:
            args += ["--spacing", *spacing]
        job = start_engine("finetune", [*args, *extraArgs], device, self.job_class, work=work)
        for message in warnings:  # shown with the engine's own warnings, in order
            job.events.put({"event": "warning", "message": message})
        if not wait:
            return job
        modelDir = wait_for(job, onEvent, then=lambda done: done.get("model_dir", outputDir))
        self.remember(modelDir)
        return modelDir

    def refine(self, volume, correctedSegmentation, model: str, steps: int = 100, earlierPairs: Sequence = (),
               outputDir: str | None = None, device: str = "auto", extraArgs: Sequence[str] = (), wait: bool = False,
               onEvent: Callable[[dict], None] | None = None):
        """Teach `model` from a corrected segmentation of `volume` (beside `earlierPairs` of (volume,
        segmentation)): a short fine-tuning that continues the model, head included, into a new folder
        (`<model> refined N` unless outputDir is given; the model is never replaced). Returns the new model folder
        (wait=True) or the running job."""
        names = label_names(read_model_metadata(model))
        if not names:
            raise NodeError(f"{model}: is not a PGL segmentation model; fine-tune one first.")
        pairs = [(v, s) for v, s in earlierPairs if v is not volume or s is not correctedSegmentation]
        return self.finetune([*(v for v, _ in pairs), volume], [*(s for _, s in pairs), correctedSegmentation],
                             outputDir or next_free_folder(model), segmentNames=names, init=model, steps=steps,
                             device=device, extraArgs=extraArgs, wait=wait, onEvent=onEvent)

    def check_pretraining(self, volumes: Sequence, segmentations: Sequence, init: str,
                          segmentNames: Sequence[str] | None = None, steps: int = 100, seeds: int = 2,
                          device: str = "auto", extraArgs: Sequence[str] = (), wait: bool = False,
                          onEvent: Callable[[dict], None] | None = None):
        """Did the pretrained model `init` help on these pairs? Random vs `init` fine-tuning, leave-one-case-out,
        `seeds` paired seeds. wait=True returns the summary (its `difference` has `mean`, `ci95`, `n`); else the
        job."""
        check_pairs(volumes, segmentations)
        if len(volumes) < 2:
            raise NodeError("Add at least two (volume, segmentation) pairs: each is held out once while the others "
                            "train.")
        if read_model_metadata(init).get("kind") != "pretrained":
            raise NodeError(f"{init or 'no model'}: choose the pretrained model (from PGL Pretrain) to check.")
        work, names, _ = self.export_to_temporary_folder(volumes, segmentations, segmentNames, "check")
        args = ["--images", work / "images", "--labels", work / "labels", "--init", init, "--out", work / "check",
                "--steps", steps, "--seeds", seeds, "--device", device, "--label-names", *names]
        job = start_engine("check-pretraining", [*args, *extraArgs], device, self.job_class, work=work)
        return wait_for(job, onEvent) if wait else job

    def remember(self, modelDir: str) -> None:
        if modelDir in self.models:
            self.models.remove(modelDir)
        self.models.append(str(modelDir))

    # --- segmentation -------------------------------------------------------------------------------------
    def start_segment(self, volumeNode, modelDir: str, largestComponent: bool = False, device: str = "auto"):
        """Start segmenting; returns the job (it owns its work folder). Read the result with `segment_result`
        before the job is released."""
        if volumeNode is None:
            raise NodeError("Choose an input volume.")
        if not is_model_folder(modelDir):
            raise NodeError(f"{modelDir}: is not a PGL model folder; fine-tune a model first or choose its folder.")
        work = new_work_folder("segment")
        try:
            source = write_volume(volumeNode, work / "input.nii")
        except Exception:
            shutil.rmtree(work, ignore_errors=True)
            raise
        args = ["--model", modelDir, "--input", source, "--output", work / "output.nii", "--device", device]
        if largestComponent:
            args.append("--largest-component")
        job = start_engine("segment", args, device, self.job_class, work=work)
        job.work = work
        return job

    @staticmethod
    def segment_result(volumeNode, job, name: str | None = None, into=None):
        """The segmentation node from a finished segmentation job's files: a new one, or `into` with its segments
        replaced."""
        table = read_label_table(job.work / "output.labels.json")
        return load_segmentation(job.work / "output.nii", table, name or f"{volumeNode.GetName()} PGL", volumeNode,
                                 into=into)

    def segment(self, volumeNode, modelDir: str, largestComponent: bool = False, device: str = "auto",
                onEvent: Callable[[dict], None] | None = None, into=None):
        """Segment a volume node and return the vtkMRMLSegmentationNode (new, or `into` with its segments
        replaced); blocks with the GUI alive; EngineError on failure."""
        job = self.start_segment(volumeNode, modelDir, largestComponent, device)
        return wait_for(job, onEvent, then=lambda done: self.segment_result(volumeNode, job, into=into))

    # --- sample data --------------------------------------------------------------------------------------
    def sample_data(self, folder: str, count: int = 4, wait: bool = True,
                    onEvent: Callable[[dict], None] | None = None):
        """Write a small phantom cohort (images, labels, dataset.json) into `folder` with the engine."""
        return write_sample_data(folder, count, wait, onEvent, self.job_class)

    load_sample_case = staticmethod(load_sample_case)
