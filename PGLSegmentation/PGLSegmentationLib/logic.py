"""PGL Segmentation logic: fine-tune from segmentations in the scene, segment volumes (MRML only, no Qt).

Console use (the GUI keeps running while these wait):
    logic = PGLSegmentationLogic()
    modelDir = logic.finetune([volume], [segmentation], "/models/liver", init="/models/pgl", wait=True)
    segmentationNode = logic.segment(volume, modelDir)
    # correct segmentationNode in the Segment Editor, then teach the model from the correction:
    refinedDir = logic.refine(volume, segmentationNode, modelDir, wait=True)  # the engine's refine budget (30 s)
    logic.segment(volume, refinedDir, into=segmentationNode)
    # share: the model as a MONAI Bundle, the labelled pairs as an nnU-Net v2 raw dataset
    logic.exportModel(refinedDir, "/exports/liver bundle", wait=True)
    logic.exportForNNUNet([volume], [segmentationNode], "/data/nnUNet_raw", name="Liver", wait=True)

The panel's workflows take one SegmentationParameters (its fields) and return the job it shows: start_finetune,
start_check, start_apply (its result: a SegmentationResult) and start_refine (train, segment again, Dice: one job).
User mistakes raise UserError (PGLCommon.errors; PGLCommon.nodes.NodeError is the same type), engine failures EngineError.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Sequence

from PGLCommon.engine_runs import start_engine, wait_for
from PGLCommon.jobs import EngineJob
from PGLCommon.model_info import label_names, next_free_folder, read_model_metadata
from PGLCommon.errors import UserError
from PGLCommon.output_folders import is_model_folder, same_folder
from PGLCommon.nodes import (export_labels_steps, label_table_path, place_segments, read_label_table,
                             read_result_steps, write_volume_steps)
from PGLCommon.sample_data import load_sample_case, write_sample_data
from PGLCommon.staged_job import StagedJob
from PGLCommon.steps import StepGenerator, run_all
from PGLCommon.work_folders import new_work_folder

from .parameters import REFINE_SECONDS, SegmentationParameters, SegmentationResult  # noqa: F401  (REFINE_SECONDS)
from .refine import RefineJob

NNUNET_NAME = re.compile(r"^[A-Za-z0-9_-]+$")  # nnU-Net's DatasetNNN_NAME folder
NNUNET_FIRST_ID = 500  # nnU-Net asks for your own datasets' IDs from 500 up (pretrained models use those below)


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


def dataset_ids(folder: str) -> dict[int, str]:
    """The nnU-Net datasets in `folder` (an nnUNet_raw folder): ID -> folder name."""
    path = Path(folder)
    found = [(re.match(r"Dataset(\d{3})_", p.name), p.name) for p in (path.iterdir() if path.is_dir() else [])]
    return {int(m.group(1)): name for m, name in found if m}


def next_dataset_id(folder: str) -> int:
    """The first nnU-Net dataset ID from NNUNET_FIRST_ID up (then from 1) that no DatasetNNN_* in `folder` uses."""
    taken = dataset_ids(folder)
    free = [i for i in [*range(NNUNET_FIRST_ID, 1000), *range(1, NNUNET_FIRST_ID)] if i not in taken]
    if not free:
        raise UserError(f"{folder}: every nnU-Net dataset ID (1-999) is taken there; choose another folder.")
    return free[0]


def check_new_folder(folder: str, what: str) -> None:
    """An export goes into a new or empty folder: nothing of the user's is replaced."""
    path = Path(folder) if folder else None
    if path is None:
        raise UserError(f"Choose a new or empty folder for {what}.")
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UserError(f"{folder}: already holds files; choose a new or empty folder for {what} (nothing was "
                        f"written).")


def check_pairs(volumes: Sequence, segmentations: Sequence) -> None:
    if not volumes or len(volumes) != len(segmentations):
        raise UserError("Select one or more (volume, segmentation) pairs to fine-tune on.")
    for i, (volume, segmentation) in enumerate(zip(volumes, segmentations)):
        if volume is None or segmentation is None:
            raise UserError(f"pair {i + 1}: choose both a volume and a segmentation.")


def without_notes(steps: StepGenerator) -> StepGenerator:
    yield from steps
    return []


def largest_component_choice(largestComponent) -> str:
    """`pgl segment --largest-component`: the panel's checkbox (True: each segment that was one piece in every case
    the model learnt from keeps only its largest piece; False: every piece kept), or the engine's own word."""
    if isinstance(largestComponent, str):
        return largestComponent
    return "auto" if largestComponent else "none"

class PGLSegmentationLogic:
    def __init__(self, job_class: type = EngineJob):
        self.job_class = job_class
        self.models: list[str] = []  # fine-tuned model folders, newest last

    # --- fine-tuning ---------------------------------------------------------------------------------
    @staticmethod
    def training_names(segmentations: Sequence, names: Sequence[str] | None) -> list[str]:
        """The label names to train (names=None: every segment name of the segmentations; an empty list is
        refused)."""
        if names is not None and not list(names):
            raise UserError("No segment is chosen: check at least one segment to train on.")
        names = list(names) if names else list(dict.fromkeys(n for s in segmentations for n in segment_names(s)))
        if not names:
            raise UserError(f"{segmentations[0].GetName()}: has no segments; draw them in the Segment Editor.")
        return names

    def export_training_steps(self, volumes: Sequence, segmentations: Sequence, names: list[str], folder: Path,
                              onLabels: Callable[[int, object], None] | None = None) -> StepGenerator:
        """export_training_data a slab or a segment per step (the GUI keeps running); returns the partial-label
        notes. onLabels(i, array) receives case i's label array as written."""
        (folder / "images").mkdir(parents=True)
        (folder / "labels").mkdir()
        warnings = []
        for index, (case, volume, segmentation) in enumerate(zip(case_names(volumes), volumes, segmentations)):
            yield from write_volume_steps(volume, folder / "images" / f"{case}.nii")
            _, unlabelled, labels = yield from export_labels_steps(segmentation, names, volume,
                                                                   folder / "labels" / f"{case}.nii")
            if onLabels:
                onLabels(index, labels)
            if unlabelled:
                warnings.append(describe_partial_case(volume, segmentation, names, unlabelled))
        return warnings

    def export_training_data(self, volumes: Sequence, segmentations: Sequence, names: Sequence[str] | None,
                             folder: Path) -> tuple[list[str], list[str]]:
        """Write each (volume, segmentation) pair as images/case_i + labels/case_i on the volume's grid.

        Returns the label names (value i+1 = names[i]) and a note for each case that leaves a chosen segment out
        (absent or empty: partial labels). Files are named after the volumes (so the model's record of its cases
        reads like the scene).
        """
        check_pairs(volumes, segmentations)
        names = self.training_names(segmentations, names)
        return names, run_all(self.export_training_steps(volumes, segmentations, names, folder))

    def staged_export(self, volumes: Sequence, segmentations: Sequence, names: Sequence[str] | None, purpose: str,
                      start: Callable[[Path, list[str]], object],
                      onLabels: Callable[[int, object], None] | None = None, partialNotes: bool = True) -> StagedJob:
        """A job that exports the pairs into a new work folder a piece at a time, then runs start(folder, names)
        (which starts the engine job that owns the folder). The folder goes if the export fails or is cancelled.
        partialNotes=False leaves out the fine-tuning notes on partially labelled pairs (the engine speaks)."""
        check_pairs(volumes, segmentations)
        names = self.training_names(segmentations, names)
        work = new_work_folder(purpose)
        steps = self.export_training_steps(volumes, segmentations, names, work, onLabels)
        if not partialNotes:
            steps = without_notes(steps)
        return StagedJob(steps, lambda: start(work, names), work=work)

    def finetune(self, volumes: Sequence, segmentations: Sequence, outputDir: str,
                 segmentNames: Sequence[str] | None = None, init: str = "none", steps: int | None = None,
                 minutes: float | None = None, device: str = "auto", patchSize: Sequence[int] | None = None,
                 spacing: Sequence[float] | None = None,
                 overwrite: bool = False, extraArgs: Sequence[str] = (), wait: bool = False,
                 onEvent: Callable[[dict], None] | None = None, onLabels: Callable[[int, object], None] | None = None):
        """Fine-tune a model from the chosen segments (segmentNames=None: all; an empty list is refused) for
        `steps` steps, or for about `minutes` minutes of wall clock from start to saved model (the engine chooses
        spacing, patch size and width for this machine where they are not given, and the step count from the first
        steps' time); with neither, for the engine's default time (5 minutes, like the panel; 30 s when `init` is a
        segmentation model: a refine round).

        An output folder that holds a model is replaced only with overwrite=True, and never when it is the
        `init` model. wait=True returns the model folder (raises EngineError or UserError); wait=False returns
        the job (a StagedJob: it exports the pairs a piece at a time as it is polled, then runs the engine, which
        owns the exported training data until it is released). onLabels(i, array): pair i's label array."""
        check_pairs(volumes, segmentations)
        if not outputDir:
            raise UserError("Choose an output model folder.")
        if init and init != "none" and not is_model_folder(init):
            raise UserError(f"{init}: is not a PGL model folder; choose the folder PGL Pretrain wrote, or none.")
        if init and init != "none" and same_folder(init, outputDir):
            raise UserError(f"{outputDir}: is the initial model; choose another output folder so it is kept.")
        def start(work: Path, names: list[str]):
            args = ["--images", work / "images", "--labels", work / "labels", "--out", outputDir, "--init",
                    init or "none", "--device", device, "--label-names", *names]
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
            return start_engine("finetune", [*args, *extraArgs], device, self.job_class, work=work)

        job = self.staged_export(volumes, segmentations, segmentNames, "finetune", start, onLabels)
        if not wait:
            return job
        modelDir = wait_for(job, onEvent, then=lambda done: done.get("model_dir", outputDir))
        self.remember(modelDir)
        return modelDir

    def refine(self, volume, correctedSegmentation, model: str, steps: int | None = None,
               seconds: float | None = None, earlierPairs: Sequence = (), outputDir: str | None = None,
               device: str = "auto", extraArgs: Sequence[str] = (), wait: bool = False,
               onEvent: Callable[[dict], None] | None = None,
               onCorrectedLabels: Callable[[object], None] | None = None):
        """Teach `model` from a corrected segmentation of `volume` (beside `earlierPairs` of (volume,
        segmentation)): a short fine-tuning that continues the model, head included, into a new folder
        (`<model> refined N` unless outputDir is given; the model is never replaced). It trains for `steps` steps,
        or about `seconds` of wall clock from start to saved model, or, with neither, for the engine's refine
        budget (REFINE_SECONDS: 30 s), so that a round with the segmentation after it stays conversational.
        Returns the new model folder (wait=True) or the running job. onCorrectedLabels(array): the correction as
        exported (value i+1 for the model's label i), e.g. for a Dice against the result."""
        if seconds is not None and seconds <= 0:
            raise UserError(f"seconds must be > 0, got {seconds}.")
        names = label_names(read_model_metadata(model))
        if not names:
            raise UserError(f"{model}: is not a PGL segmentation model; fine-tune one first.")
        pairs = [(v, s) for v, s in earlierPairs if v is not volume or s is not correctedSegmentation]
        corrected = len(pairs)  # the corrected pair comes last

        def on_labels(index, labels):
            if index == corrected and onCorrectedLabels:
                onCorrectedLabels(labels)

        return self.finetune([*(v for v, _ in pairs), volume], [*(s for _, s in pairs), correctedSegmentation],
                             outputDir or next_free_folder(model), segmentNames=names, init=model, steps=steps,
                             minutes=seconds / 60 if seconds else None, device=device, extraArgs=extraArgs,
                             wait=wait, onEvent=onEvent, onLabels=on_labels)

    def check_pretraining(self, volumes: Sequence, segmentations: Sequence, init: str,
                          segmentNames: Sequence[str] | None = None, steps: int = 100, seeds: int = 2,
                          device: str = "auto", extraArgs: Sequence[str] = (), wait: bool = False,
                          onEvent: Callable[[dict], None] | None = None):
        """Did the pretrained model `init` help on these pairs? Random vs `init` fine-tuning, leave-one-case-out,
        `seeds` paired seeds. wait=True returns the summary (its `difference` has `mean`, `ci95`, `n`); else the
        job."""
        check_pairs(volumes, segmentations)
        if len(volumes) < 2:
            raise UserError("Add at least two (volume, segmentation) pairs: each is held out once while the others "
                            "train.")
        if read_model_metadata(init).get("kind") != "pretrained":
            raise UserError(f"{init or 'no model'}: choose the pretrained model (from PGL Pretrain) to check.")
        def start(work: Path, names: list[str]):
            args = ["--images", work / "images", "--labels", work / "labels", "--init", init, "--out",
                    work / "check", "--steps", steps, "--seeds", seeds, "--device", device, "--label-names", *names]
            return start_engine("check-pretraining", [*args, *extraArgs], device, self.job_class, work=work)

        job = self.staged_export(volumes, segmentations, segmentNames, "check", start)
        return wait_for(job, onEvent) if wait else job

    # --- export -------------------------------------------------------------------------------------------
    def exportModel(self, model: str, outputDir: str, keepCaseNames: bool = False, wait: bool = False,
                    onEvent: Callable[[dict], None] | None = None):
        """Write the segmentation model `model` as a MONAI Bundle into `outputDir`, a new or empty folder
        (configs/metadata.json, configs/inference.json, models/model.pt, docs/README.md; docs/formats.md says how
        to run and serve it). The cases it learnt from are named case_001, ... unless keepCaseNames. wait=True
        returns the bundle folder (raises EngineError or UserError); wait=False the running job."""
        if not model:
            raise UserError("Choose the segmentation model to export (the model list under Segment).")
        if not is_model_folder(model):
            raise UserError(f"{model}: is not a PGL model folder; fine-tune a model first or choose its folder.")
        if read_model_metadata(model).get("kind") != "segmentation":
            raise UserError(f"{model}: is a pretrained model; a MONAI Bundle holds a segmentation model. Fine-tune "
                            f"one from it and export that.")
        check_new_folder(outputDir, "the MONAI Bundle")
        args = ["--model", model, "--format", "monai-bundle", "--out", outputDir]
        if keepCaseNames:
            args.append("--keep-case-names")
        job = start_engine("export", args, "cpu", self.job_class)
        return wait_for(job, onEvent, then=lambda done: done.get("out", outputDir)) if wait else job

    def exportForNNUNet(self, volumes: Sequence, segmentations: Sequence, outputDir: str, name: str = "PGL",
                        datasetId: int | None = None, segmentNames: Sequence[str] | None = None,
                        keepCaseNames: bool = False, wait: bool = False,
                        onEvent: Callable[[dict], None] | None = None):
        """Write the (volume, segmentation) pairs, exported as for fine-tuning (a piece at a time; the chosen
        segments, all when segmentNames=None), as the nnU-Net v2 raw dataset `outputDir/DatasetNNN_NAME`
        (imagesTr, labelsTr, dataset.json with the segment names as labels). nnU-Net learns every unlabelled voxel
        as background, so a pair that lacks a chosen segment is left out and listed (a warning). datasetId=None:
        the first ID from 500 up that `outputDir` does not use yet. Cases are named NAME_001, ... unless
        keepCaseNames (then after the volumes). wait=True returns the dataset folder; else the job."""
        check_pairs(volumes, segmentations)
        if not outputDir:
            raise UserError("Choose the folder the nnU-Net dataset goes into (your nnUNet_raw folder).")
        name = name or "PGL"
        if not NNUNET_NAME.match(name):
            raise UserError(f"The dataset name may hold letters, digits, '_' and '-' only (it becomes the folder "
                            f"DatasetNNN_NAME), got {name!r}.")
        datasetId = datasetId or next_dataset_id(outputDir)
        if not 1 <= int(datasetId) <= 999:
            raise UserError(f"The nnU-Net dataset ID must be from 1 to 999, got {datasetId}.")
        folder = f"Dataset{int(datasetId):03d}_{name}"
        other = dataset_ids(outputDir).get(int(datasetId), folder)
        if other != folder:
            raise UserError(f"{outputDir}: already holds {other} with the ID {datasetId}; nnU-Net finds datasets by "
                            f"ID, so choose another ID (or leave it to the panel: the next free one).")
        check_new_folder(str(Path(outputDir) / folder), "the nnU-Net dataset")

        def start(work: Path, names: list[str]):
            args = ["--images", work / "images", "--labels", work / "labels", "--label-names", *names, "--format",
                    "nnunet", "--out", outputDir, "--name", name, "--id", int(datasetId)]
            if keepCaseNames:
                args.append("--keep-case-names")
            return start_engine("export-dataset", args, "cpu", self.job_class, work=work)

        job = self.staged_export(volumes, segmentations, segmentNames, "nnunet", start, partialNotes=False)
        return wait_for(job, onEvent, then=lambda done: done.get("out")) if wait else job

    def remember(self, modelDir: str) -> None:
        if modelDir in self.models:
            self.models.remove(modelDir)
        self.models.append(str(modelDir))

    # --- segmentation -------------------------------------------------------------------------------------
    def start_segment(self, volumeNode, modelDir: str, largestComponent: bool | str = True, device: str = "auto",
                      into=None, name: str | None = None) -> StagedJob:
        """Start segmenting; returns the job (a StagedJob: as it is polled it writes the volume a slab at a time,
        runs the engine, then reads the result into segments). Its `result` is then (the segmentation node: new,
        or `into` with its segments replaced, the (k, j, i) label array, the label table)."""
        return self._segment_job(volumeNode, modelDir, largestComponent, device, into, name)

    def _segment_job(self, volumeNode, modelDir: str, largestComponent: bool | str, device: str, into,
                     name: str | None, keep: Callable | None = None) -> StagedJob:
        """start_segment; keep(node, labels, table) makes the job's result when given."""
        if volumeNode is None:
            raise UserError("Choose an input volume.")
        if not is_model_folder(modelDir):
            raise UserError(f"{modelDir}: is not a PGL model folder; fine-tune a model first or choose its folder.")
        work = new_work_folder("segment")
        args = ["--model", modelDir, "--input", work / "input.nii", "--output", work / "output.nii", "--device",
                device]
        args += ["--largest-component", largest_component_choice(largestComponent)]

        def write() -> StepGenerator:
            yield from write_volume_steps(volumeNode, work / "input.nii")

        def start():
            job = start_engine("segment", args, device, self.job_class, work=work)
            job.work = work
            return job

        def finish(job) -> StepGenerator:
            outcome = yield from self.segment_result_steps(volumeNode, job, name, into)
            return keep(*outcome) if keep else outcome

        return StagedJob(write(), start, finish, work=work)

    @staticmethod
    def segment_result_steps(volumeNode, job, name: str | None = None, into=None) -> StepGenerator:
        """segment_result a slab or a segment per step; returns (node, label array, label table). Nothing changes
        in the scene until the last step."""
        table = read_label_table(label_table_path(job.work / "output.nii"))
        labels, segments = yield from read_result_steps(job.work / "output.nii", table, volumeNode)
        node = place_segments(segments, name or f"{volumeNode.GetName()} PGL", volumeNode, into)
        return node, labels, table

    @staticmethod
    def segment_result(volumeNode, job, name: str | None = None, into=None):
        """The segmentation node from a finished segmentation job's files: a new one, or `into` with its segments
        replaced."""
        return run_all(PGLSegmentationLogic.segment_result_steps(volumeNode, job, name, into))[0]

    def segment(self, volumeNode, modelDir: str, largestComponent: bool | str = True, device: str = "auto",
                onEvent: Callable[[dict], None] | None = None, into=None):
        """Segment a volume node and return the vtkMRMLSegmentationNode (new, or `into` with its segments
        replaced); blocks with the GUI alive; EngineError on failure."""
        job = self.start_segment(volumeNode, modelDir, largestComponent, device, into=into)
        return wait_for(job, onEvent, then=lambda done: job.result[0])

    # --- the panel's workflows: one SegmentationParameters in, the job to show out -------------------------
    def start_finetune(self, parameters: SegmentationParameters):
        """Fine-tune on the listed pairs (else the selected pair) for parameters.finetuneMinutes."""
        p = parameters
        volumes, segmentations = p.training_pairs()
        return self.finetune(volumes, segmentations, p.outputDir, segmentNames=p.segmentNames,
                             init=p.initModel or "none", minutes=p.finetuneMinutes, device=p.device,
                             overwrite=p.overwrite, wait=False)

    def start_check(self, parameters: SegmentationParameters):
        """Check the pretraining (random vs parameters.initModel) on the listed pairs."""
        p = parameters
        volumes, segmentations = p.listed_pairs()
        return self.check_pretraining(volumes, segmentations, p.initModel, segmentNames=p.segmentNames,
                                      steps=p.checkSteps, device=p.device, wait=False)

    def start_apply(self, parameters: SegmentationParameters, volume=None, model: str | None = None,
                    into=None) -> StagedJob:
        """Segment parameters.inputVolume (or `volume`) with parameters.model (or `model`); the job's `result` is
        then a SegmentationResult, which start_refine takes once the user corrected it."""
        volume = parameters.inputVolume if volume is None else volume
        model = model or parameters.model

        def keep(node, labels, table) -> SegmentationResult:
            return SegmentationResult.made(volume, node, labels, table, model, label_names(read_model_metadata(model)))

        return self._segment_job(volume, model, parameters.largestComponent, parameters.device, into, None, keep)

    def start_refine(self, result: SegmentationResult | None, parameters: SegmentationParameters) -> RefineJob:
        """Learn from the user's correction of `result` (beside the listed pairs), segment its volume again with
        the new model, then score both results against the correction: one job; see RefineJob."""
        return RefineJob(self, result, parameters)

    def sample_case(self, folder: str, scene):
        """The first case of the sample cohort in `folder` (written first when the folder holds none) as (volume,
        segmentation) nodes."""
        if not (Path(folder) / "dataset.json").is_file():
            self.sample_data(folder, count=4)
        return self.load_sample_case(folder, scene, 0)

    # --- sample data --------------------------------------------------------------------------------------
    def sample_data(self, folder: str, count: int = 4, wait: bool = True,
                    onEvent: Callable[[dict], None] | None = None):
        """Write a small phantom cohort (images, labels, dataset.json) into `folder` with the engine."""
        return write_sample_data(folder, count, wait, onEvent, self.job_class)

    load_sample_case = staticmethod(load_sample_case)
