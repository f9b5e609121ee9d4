"""`pgl segment`: apply a segmentation model; the label map comes back on exactly the input's grid.

Memory stays bounded: the input's voxels are dropped after preprocessing; class logits exist only at the
model's (coarser) spacing; going back to the input grid works a slab at a time (labels_back). In folder mode
the next scan is read and preprocessed while the network runs on the current one.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch

from ..data.imaging import (SCAN_SUFFIXES, SEGMENTATION_SUFFIX, image_affine_ras, is_scan_file, is_segmentation_file,
                            list_scans, non_finite_note, normalise_hu, ras_grid_covering, read_scan, resample,
                            scan_name, write_image_like, write_nifti)
from ..data.components import keep_largest_components
from ..data.labels import sidecar_writer, write_sidecar
from ..data.seg_nrrd import write_seg_nrrd
from ..errors import PGLError
from ..models.store import LoadedModel, load_model, require_kind
from ..progress import ProgressCallback, emit
from ..training.loop import resolve_device
from ..training.precision import inference_dtype
from .labels_back import labels_on_grid
from .sliding_window import predict_logits

WRITER = "pgl segment"  # in the sidecar of every label map written here: the files a later run may replace
FORMATS = ("label-map", "seg.nrrd")  # a label map in the output's (or the input's) file type; Slicer's segmentation


def geometry_reference(image: sitk.Image) -> sitk.Image:
    """A uint8 image with the input's geometry, so the input's voxels can be freed."""
    reference = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    reference.CopyInformation(image)
    return reference


LARGEST_COMPONENT_CHOICES = ("auto", "all", "none")


def largest_component_values(model: LoadedModel, choice) -> list[int] | None:
    """The label values whose largest component alone is kept: "auto" those the model's training labels showed
    as one piece (none for a model that does not record them), "all" (or True) every label, "none" (or False)
    none. None stands for every label."""
    choice = {True: "all", False: "none"}.get(choice, choice)
    if choice not in LARGEST_COMPONENT_CHOICES:
        raise PGLError(f"--largest-component must be one of {', '.join(LARGEST_COMPONENT_CHOICES)}, got {choice!r}.")
    if choice == "all":
        return None
    return [int(v) for v in model.metadata.get("one_piece_labels", [])] if choice == "auto" else []


def write_label_map(labels_zyx: np.ndarray, reference: sitk.Image, source, output: Path) -> None:
    """NIfTI outputs keep a NIfTI input's exact affine and codes; other formats copy the ITK geometry."""
    if output.name.lower().endswith((".nii", ".nii.gz")):
        like = nib.load(str(source)) if isinstance(source, Path) and source.name.lower().endswith((".nii", ".nii.gz")) \
            else None
        affine = like.affine if like is not None else image_affine_ras(reference)
        # the transposed view is Fortran-ordered, the order NIfTI stores: nibabel writes it without reordering
        write_nifti(labels_zyx.transpose(2, 1, 0), affine, output, like)
    else:
        write_image_like(labels_zyx, reference, output)


@dataclass(frozen=True)
class InferenceOptions:
    """How the network is applied (`pgl segment`'s options of the same names)."""

    tta: bool = False
    overlap: float = 0.5  # sliding window
    sw_batch_size: int = 4
    precision: str = "auto"  # auto: bf16 on CPUs with native bf16, fp16 on CUDA; fp32 turns it off
    memory_mb: float = 0.0  # one-pass activation budget (0: a default for the device)
    one_pass: bool = False  # the whole volume at once (window-independent models only), not the sliding window


@dataclass
class PreparedScan:
    """A scan read and resampled onto the model's grid, with what writing its label map back needs."""

    source: object
    volume: np.ndarray
    affine: np.ndarray
    reference: sitk.Image
    seconds: dict[str, float]
    warnings: list[str]


def prepare_scan(model: LoadedModel, source) -> PreparedScan:
    """Read (non-finite voxels set to the window's low end) and preprocess onto the model's grid."""
    meta = model.metadata
    clock = PhaseClock()
    image, non_finite = read_scan(source, meta["hu_window"][0])
    warnings = [non_finite_note(source, non_finite, meta["hu_window"][0])] if non_finite else []
    clock.lap("read")
    affine, size = ras_grid_covering(image, tuple(meta["spacing"]))
    volume = normalise_hu(resample(image, affine, size, fill=meta["hu_window"][0]), tuple(meta["hu_window"]))
    reference = geometry_reference(image)
    del image
    clock.lap("preprocess")
    return PreparedScan(source, volume, affine, reference, clock.seconds, warnings)


def finish_scan(model: LoadedModel, scan: PreparedScan, output: Path, device: torch.device,
                options: InferenceOptions, largest_component="auto") -> dict[str, float]:
    """Network, labels back on the input's grid, write; returns the seconds per phase, preparation's included."""
    meta = model.metadata
    clock = PhaseClock()
    flip_axes = tuple(meta.get("training", {}).get("flip_axes", ())) if options.tta else ()
    try:
        logits = predict_logits(model.network.to(device), scan.volume, tuple(meta["patch_size"]), device,
                                options.overlap, options.sw_batch_size, flip_axes, options.precision,
                                options.memory_mb, options.one_pass)
    except torch.OutOfMemoryError as e:
        raise PGLError(f"{scan.source}: out of memory on {device}; use --device cpu, a smaller --memory-mb or "
                       f"--sw-batch-size.") from e
    clock.lap("inference")
    class_values = np.array([0] + sorted(int(k) for k in model.label_table), dtype=np.uint8)
    labels = class_values[labels_on_grid(logits, scan.affine, scan.reference)]
    del logits
    keep = largest_component_values(model, largest_component)
    if keep is None or keep:
        labels = keep_largest_components(labels, keep)
    clock.lap("resample_back")
    if is_segmentation_file(output):
        write_seg_nrrd(labels, scan.reference, output, model.label_table)
    else:
        write_label_map(labels, scan.reference, scan.source, output)
    write_sidecar(output, model.label_table, written_by=WRITER)
    clock.lap("write")
    return {**scan.seconds, **clock.seconds}


class PhaseClock:
    """Seconds between successive laps, by phase name."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = now - self.last
        self.last = now


def output_paths(inputs: list, input_arg: Path, output: str | Path, output_format: str = "label-map") -> list[Path]:
    """One output per input: same file names in an output folder (`<series name>.nii.gz` for a DICOM series;
    `<scan name>.seg.nrrd` in the seg.nrrd format, where any name without a file suffix is a folder), or the given
    file for a single input."""
    said_folder = str(output).endswith(("/", "\\")) or (  # Path() drops a trailing slash: look before
        output_format == "seg.nrrd" and not str(output).lower().endswith(SCAN_SUFFIXES))
    output = Path(output)
    as_file = output.name.lower().endswith(SCAN_SUFFIXES) and not output.is_dir() and len(inputs) == 1
    if not as_file and (input_arg.is_dir() or output.is_dir() or said_folder):
        output.mkdir(parents=True, exist_ok=True)
        if output_format == "seg.nrrd":
            return [output / f"{scan_name(p)}{SEGMENTATION_SUFFIX}" for p in inputs]
        return [output / (p.name if isinstance(p, Path) else f"{scan_name(p)}.nii.gz") for p in inputs]
    if output_format == "seg.nrrd" and not is_segmentation_file(output):
        raise PGLError(f"{output}: --format seg.nrrd writes Slicer segmentations; give an output file ending in "
                       f"{SEGMENTATION_SUFFIX}, or a folder.")
    if not output.name.lower().endswith(SCAN_SUFFIXES):
        raise PGLError(f"{output}: give an output file ending in {', '.join(SCAN_SUFFIXES)}, or a folder.")
    return [output]


def segment(model: str | Path | LoadedModel, input: str | Path, output: str | Path, tta: bool = False,
            largest_component: str | bool = "auto", device: str = "auto", overlap: float = 0.5, sw_batch_size: int = 4,
            progress: ProgressCallback | None = None, modalities: tuple[str, ...] = ("CT",),
            overwrite: bool = False, precision: str = "auto", memory_mb: float = 0.0,
            one_pass: bool = False, output_format: str = "label-map") -> list[Path]:
    """Segment a scan, or every scan and DICOM series in a folder tree; returns the written label maps.

    output_format "seg.nrrd" writes Slicer segmentations (`<name>.seg.nrrd`: segments named and coloured as the
    model's labels, with the standard terminology of known structures); an output file ending in .seg.nrrd is
    one whatever the format.

    largest_component: "auto" keeps only the largest piece of each label that was one piece in every case the model
    learnt from (the model's "one_piece_labels"), "all" of every label, "none" keeps every piece.

    An existing file is replaced only when it is a previous output of ours (its `<name>.labels.json` says
    `"written_by": "pgl segment"`) or with overwrite=True."""
    model = model if isinstance(model, LoadedModel) else load_model(model)
    require_kind(model, "segmentation", "fine-tune it first (`pgl finetune --init MODEL ...`).")
    if not 0 <= overlap < 1:
        raise PGLError(f"--overlap must be >= 0 and < 1, got {overlap}.")
    if memory_mb < 0 or sw_batch_size < 1:
        raise PGLError(f"--memory-mb must be >= 0 and --sw-batch-size >= 1, got {memory_mb} and {sw_batch_size}.")
    inference_dtype(torch.device("cpu"), precision)  # names a wrong --precision before any work
    largest_component_values(model, largest_component)  # ... and a wrong --largest-component
    if output_format not in FORMATS:
        raise PGLError(f"--format must be one of {', '.join(FORMATS)}, got {output_format!r}.")
    if one_pass and not model.network.window_independent:
        raise PGLError(f"{model.path}: --one-pass needs a model whose output does not depend on the window "
                       f"(trained with --norm batch, channel or none); this one is instance-normalised, so it is "
                       f"segmented in sliding windows: leave --one-pass out.")
    if tta and not model.metadata.get("training", {}).get("flip_axes"):
        emit(progress, "warning", message=f"{model.path}: was trained without flip augmentation, so flipped "
                                          f"predictions would be wrong; --tta is ignored.")
    input, output_arg, output = Path(input), output, Path(output)
    if input.is_dir():
        inputs = list_scans(input, modalities, exclude=(output,))
    elif is_scan_file(input):
        inputs = [input]
    elif is_segmentation_file(input):
        raise PGLError(f"{input}: is a Slicer segmentation (.seg.nrrd), not a scan; give the scan it was drawn on.")
    else:
        raise PGLError(f"{input}: no such scan or folder ({', '.join(SCAN_SUFFIXES)}).")
    outputs = output_paths(inputs, input, output_arg, output_format)
    clash = [str(o) for i, o in zip(inputs, outputs) if isinstance(i, Path) and o.resolve() == i.resolve()]
    if clash:
        raise PGLError(f"{clash[0]}: the output would overwrite the input scan; choose another --output.")
    foreign = [str(o) for o in outputs if o.exists() and sidecar_writer(o) != WRITER]
    if foreign and not overwrite:
        more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        raise PGLError(f"{output}: {len(foreign)} file(s) there would be replaced that pgl segment did not write: "
                       f"{', '.join(foreign[:5])}{more}. Choose another --output, or add --overwrite to replace them.")
    torch_device = resolve_device(device)
    options = InferenceOptions(tta, overlap, sw_batch_size, precision, memory_mb, one_pass)
    for i, (source, target, scan) in enumerate(prepared_in_turn(model, inputs, outputs)):
        for message in scan.warnings:
            emit(progress, "warning", message=message)
        seconds = finish_scan(model, scan, target, torch_device, options, largest_component)
        emit(progress, "progress", stage="segment", step=i + 1, total=len(inputs), file=source.name,
             output=str(target), seconds=seconds)
    emit(progress, "done", outputs=[str(o) for o in outputs], labels=model.label_table)
    return outputs


def prepared_in_turn(model: LoadedModel, inputs: list, outputs: list[Path]):
    """(source, output, PreparedScan) per input; the next scan is read and preprocessed in a thread while the
    caller runs the network on the current one (SimpleITK and PyTorch release the GIL)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pgl-prepare") as pool:
        pending = pool.submit(prepare_scan, model, inputs[0]) if inputs else None
        for i, (source, target) in enumerate(zip(inputs, outputs)):
            scan = pending.result()
            pending = pool.submit(prepare_scan, model, inputs[i + 1]) if i + 1 < len(inputs) else None
            try:
                yield source, target, scan
            except GeneratorExit:
                if pending is not None:
                    pending.cancel()
                raise
            del scan
