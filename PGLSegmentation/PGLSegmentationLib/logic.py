"""PGL Segmentation logic: fine-tune from segmentations in the scene, segment volumes (MRML only, no Qt).

Console use:
    logic = PGLSegmentationLogic()
    modelDir = logic.finetune([volume], [segmentation], "/models/liver", init="/models/pgl", wait=True)
    segmentationNode = logic.segment(volume, modelDir)
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from PGLCommon.engine_runs import EngineError, start_engine, wait_for
from PGLCommon.jobs import EngineJob
from PGLCommon.nodes import NodeError, export_labels, load_segmentation, read_label_table, write_volume


def segment_names(segmentation_node) -> list[str]:
    segmentation = segmentation_node.GetSegmentation()
    return [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]


def is_model_folder(path: str) -> bool:
    """A PGL model folder (pgl_model.json of our format) of any kind."""
    try:
        return json.loads((Path(path) / "pgl_model.json").read_text()).get("format") == "pgl-model"
    except (OSError, ValueError, AttributeError):
        return False


class PGLSegmentationLogic:
    def __init__(self, job_class: type = EngineJob):
        self.job_class = job_class
        self.models: list[str] = []  # fine-tuned model folders, newest last

    # --- fine-tuning ---------------------------------------------------------------------------------
    def export_training_data(self, volumes: Sequence, segmentations: Sequence, names: Sequence[str] | None,
                             folder: Path) -> tuple[list[str], list[str]]:
        """Write each (volume, segmentation) pair as images/case_i + labels/case_i on the volume's grid.

        Returns the label names (value i+1 = names[i]) and warnings about segments empty on a volume.
        """
        if not volumes or len(volumes) != len(segmentations):
            raise NodeError("Select one or more (volume, segmentation) pairs to fine-tune on.")
        names = list(names) if names else list(dict.fromkeys(n for s in segmentations for n in segment_names(s)))
        if not names:
            raise NodeError(f"{segmentations[0].GetName()}: has no segments; draw them in the Segment Editor.")
        (folder / "images").mkdir(parents=True)
        (folder / "labels").mkdir()
        warnings = []
        for i, (volume, segmentation) in enumerate(zip(volumes, segmentations)):
            if volume is None or segmentation is None:
                raise NodeError(f"pair {i + 1}: choose both a volume and a segmentation.")
            write_volume(volume, folder / "images" / f"case_{i:03d}.nii.gz")
            _, empty = export_labels(segmentation, names, volume, folder / "labels" / f"case_{i:03d}.nii.gz")
            warnings += [f"{segmentation.GetName()}: segment {n} is empty on {volume.GetName()}" for n in empty]
        return names, warnings

    def finetune(self, volumes: Sequence, segmentations: Sequence, outputDir: str,
                 segmentNames: Sequence[str] | None = None, init: str = "none", steps: int = 300,
                 device: str = "auto", patchSize: Sequence[int] | None = None, spacing: Sequence[float] | None = None,
                 extraArgs: Sequence[str] = (), wait: bool = False, onEvent: Callable[[dict], None] | None = None):
        """Fine-tune a model from the chosen segments. wait=True returns the model folder (raises EngineError or
        NodeError); wait=False returns the running EngineJob (its temporary data is removed when it ends)."""
        if not outputDir:
            raise NodeError("Choose an output model folder.")
        if init and init != "none" and not is_model_folder(init):
            raise NodeError(f"{init}: is not a PGL model folder; choose the folder PGL Pretrain wrote, or none.")
        work = Path(tempfile.mkdtemp(prefix="pgl_finetune_"))
        try:
            names, warnings = self.export_training_data(volumes, segmentations, segmentNames, work)
        except Exception:
            shutil.rmtree(work, ignore_errors=True)
            raise
        for message in warnings:
            if onEvent:
                onEvent({"event": "warning", "message": message})
        args = ["--images", work / "images", "--labels", work / "labels", "--out", outputDir, "--init", init or "none",
                "--steps", steps, "--device", device, "--label-names", *names, "--overwrite"]
        if patchSize:
            args += ["--patch-size", *patchSize]
        if spacing:
            args += ["--spacing", *spacing]
        job = start_engine("finetune", [*args, *extraArgs], device, self.job_class)
        job.cleanup = work
        if not wait:
            return job
        try:
            result = wait_for(job, onEvent)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        self.remember(result.get("model_dir", outputDir))
        return result.get("model_dir", outputDir)

    def remember(self, modelDir: str) -> None:
        if modelDir in self.models:
            self.models.remove(modelDir)
        self.models.append(str(modelDir))

    # --- segmentation -------------------------------------------------------------------------------------
    def start_segment(self, volumeNode, modelDir: str, largestComponent: bool = False, device: str = "auto"):
        """Start segmenting; returns (job, work folder). Finish with `segment_result`."""
        if volumeNode is None:
            raise NodeError("Choose an input volume.")
        if not is_model_folder(modelDir):
            raise NodeError(f"{modelDir}: is not a PGL model folder; fine-tune a model first or choose its folder.")
        work = Path(tempfile.mkdtemp(prefix="pgl_segment_"))
        source = write_volume(volumeNode, work / "input.nii.gz")
        args = ["--model", modelDir, "--input", source, "--output", work / "output.nii.gz", "--device", device]
        if largestComponent:
            args.append("--largest-component")
        return start_engine("segment", args, device, self.job_class), work

    def segment_result(self, volumeNode, work: Path, name: str | None = None):
        """The new segmentation node from a finished segmentation job's files (then removes them)."""
        try:
            table = read_label_table(work / "output.labels.json")
            return load_segmentation(work / "output.nii.gz", table, name or f"{volumeNode.GetName()} PGL",
                                     volumeNode)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def segment(self, volumeNode, modelDir: str, largestComponent: bool = False, device: str = "auto",
                onEvent: Callable[[dict], None] | None = None):
        """Segment a volume node and return the new vtkMRMLSegmentationNode (blocks; EngineError on failure)."""
        job, work = self.start_segment(volumeNode, modelDir, largestComponent, device)
        try:
            wait_for(job, onEvent)
        except EngineError:
            shutil.rmtree(work, ignore_errors=True)
            raise
        return self.segment_result(volumeNode, work)

    # --- sample data --------------------------------------------------------------------------------------
    def sample_data(self, folder: str, count: int = 4, wait: bool = True,
                    onEvent: Callable[[dict], None] | None = None):
        """Write a small phantom cohort (images, labels, dataset.json) into `folder` with the engine."""
        job = start_engine("phantom", ["--out", folder, "--count", count, "--labels", "--spacing-scale", 2],
                           "cpu", self.job_class)
        if not wait:
            return job
        wait_for(job, onEvent)
        return Path(folder)

    @staticmethod
    def load_sample_case(folder: str, scene, index: int = 0):
        """Load phantom `index` of a sample cohort as a volume and its segmentation; returns both nodes."""
        import slicer

        folder = Path(folder)
        name = f"phantom_{index:03d}"
        volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        storage.SetFileName(str(folder / "images" / f"{name}.nii.gz"))
        if not storage.ReadData(volume):
            raise NodeError(f"{folder}: holds no {name}; generate the sample data first.")
        table = read_label_table(folder / "labels" / f"{name}.labels.json")  # names and colours from the engine
        segmentation = load_segmentation(folder / "labels" / f"{name}.nii.gz", table, f"{name} labels", volume)
        return volume, segmentation
