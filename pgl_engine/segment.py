"""`pgl segment`: apply a segmentation model; the label map comes back on exactly the input's grid.

Memory stays bounded: the input's voxels are dropped after preprocessing; class logits exist only at the
model's (coarser) spacing; going back to the input grid resamples one class at a time into a running
maximum (float32) and arg-maximum (uint8).
"""
from __future__ import annotations

import time
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

from .errors import PGLError
from .imaging import (
    SCAN_SUFFIXES,
    image_affine_ras,
    image_ras_corners,
    is_scan_file,
    list_scans,
    non_finite_note,
    normalise_hu,
    ras_grid_covering,
    ras_image,
    read_scan,
    resample,
    scan_name,
    write_image_like,
    write_nifti,
)
from .inference import predict_logits
from .labels import sidecar_writer, write_sidecar
from .model_store import LoadedModel, load_model, require_kind
from .progress import ProgressCallback, emit
from .training import resolve_device

WRITER = "pgl segment"  # in the sidecar of every label map written here: the files a later run may replace


def geometry_reference(image: sitk.Image) -> sitk.Image:
    """A uint8 image with the input's geometry, so the input's voxels can be freed."""
    reference = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    reference.CopyInformation(image)
    return reference


def _slab(reference: sitk.Image, z0: int, depth: int) -> sitk.Image:
    """Slices z0 .. z0+depth-1 of the reference grid, as a geometry-only image."""
    size = reference.GetSize()
    part = sitk.Image((size[0], size[1], depth), sitk.sitkUInt8)
    part.SetSpacing(reference.GetSpacing())
    part.SetDirection(reference.GetDirection())
    part.SetOrigin(reference.TransformIndexToPhysicalPoint((0, 0, z0)))
    return part


def _covering_block(part: sitk.Image, affine: np.ndarray, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """Index ranges of the RAS grid (affine, shape) that a slab's extent needs, with a one-voxel margin."""
    corners = image_ras_corners(part)
    index = (corners - affine[:3, 3]) / np.diag(affine)[:3]
    lo = np.clip(np.floor(index.min(0)).astype(int) - 1, 0, np.array(shape) - 1)
    hi = np.clip(np.ceil(index.max(0)).astype(int) + 2, 1, np.array(shape))
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def labels_on_grid(logits: torch.Tensor, affine: np.ndarray, reference: sitk.Image, depth: int = 16) -> np.ndarray:
    """Arg-max over classes of the logits resampled (linear) onto the reference grid; (z, y, x) uint8.

    Works slab by slab (`depth` slices of the reference) and only on the block of logits each slab needs,
    so no full-size float volume is ever held.
    """
    size = reference.GetSize()
    out = np.empty((size[2], size[1], size[0]), dtype=np.uint8)
    fills = [float(logits[k].min()) for k in range(logits.shape[0])]
    for z0 in range(0, size[2], depth):
        part = _slab(reference, z0, min(depth, size[2] - z0))
        block = _covering_block(part, affine, tuple(logits.shape[1:]))
        block_affine = affine.copy()
        block_affine[:3, 3] += np.diag(affine)[:3] * np.array([b.start for b in block])
        best_value = best_label = None
        for k in range(logits.shape[0]):
            channel = ras_image(logits[k][block].numpy(), block_affine)
            resampled = sitk.GetArrayFromImage(
                sitk.Resample(channel, part, sitk.Transform(), sitk.sitkLinear, fills[k], sitk.sitkFloat32))
            if best_value is None:
                best_value, best_label = resampled, np.zeros(resampled.shape, dtype=np.uint8)
                continue
            best_label[resampled > best_value] = k
            np.maximum(best_value, resampled, out=best_value)
        out[z0:z0 + part.GetSize()[2]] = best_label
    return out


def keep_largest_components(labels: np.ndarray) -> np.ndarray:
    """Per label, keep only its largest 26-connected component."""
    for value in np.unique(labels):
        if value == 0:
            continue
        mask = labels == value
        components, count = ndimage.label(mask, structure=np.ones((3, 3, 3)))
        if count > 1:
            sizes = np.bincount(components.ravel())
            sizes[0] = 0
            labels[mask & (components != sizes.argmax())] = 0
    return labels


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


def segment_file(model: LoadedModel, source, output: Path, device: torch.device, tta: bool = False,
                 largest_component: bool = False, overlap: float = 0.5, sw_batch_size: int = 4,
                 progress: ProgressCallback | None = None) -> dict[str, float]:
    """Segment one scan and write its label map plus `<name>.labels.json` (names and colours); returns the
    seconds spent per phase (read, preprocess, inference, resample back, write)."""
    meta = model.metadata
    clock = PhaseClock()
    image, non_finite = read_scan(source, meta["hu_window"][0])
    if non_finite:
        emit(progress, "warning", message=non_finite_note(source, non_finite, meta["hu_window"][0]))
    clock.lap("read")
    affine, size = ras_grid_covering(image, tuple(meta["spacing"]))
    volume = normalise_hu(resample(image, affine, size, fill=meta["hu_window"][0]), tuple(meta["hu_window"]))
    reference = geometry_reference(image)
    del image
    clock.lap("preprocess")
    flip_axes = tuple(meta.get("training", {}).get("flip_axes", ())) if tta else ()
    try:
        logits = predict_logits(model.network.to(device), volume, tuple(meta["patch_size"]), device, overlap,
                                sw_batch_size, flip_axes)
    except torch.OutOfMemoryError as e:
        raise PGLError(f"{source}: out of memory on {device}; use --device cpu or a smaller --sw-batch-size.") from e
    del volume
    clock.lap("inference")
    class_values = np.array([0] + sorted(int(k) for k in model.label_table), dtype=np.uint8)
    labels = class_values[labels_on_grid(logits, affine, reference)]
    del logits
    if largest_component:
        labels = keep_largest_components(labels)
    clock.lap("resample_back")
    write_label_map(labels, reference, source, output)
    write_sidecar(output, model.label_table, written_by=WRITER)
    clock.lap("write")
    return clock.seconds


class PhaseClock:
    """Seconds between successive laps, by phase name."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = now - self.last
        self.last = now


def output_paths(inputs: list, input_arg: Path, output: Path) -> list[Path]:
    """One output per input: same file names in an output folder (`<series name>.nii.gz` for a DICOM series), or
    the given file for a single input."""
    as_file = output.name.lower().endswith(SCAN_SUFFIXES) and not output.is_dir() and len(inputs) == 1
    if not as_file and (input_arg.is_dir() or output.is_dir() or str(output).endswith(("/", "\\"))):
        output.mkdir(parents=True, exist_ok=True)
        return [output / (p.name if isinstance(p, Path) else f"{scan_name(p)}.nii.gz") for p in inputs]
    if not output.name.lower().endswith(SCAN_SUFFIXES):
        raise PGLError(f"{output}: give an output file ending in {', '.join(SCAN_SUFFIXES)}, or a folder.")
    return [output]


def segment(model: str | Path | LoadedModel, input: str | Path, output: str | Path, tta: bool = False,
            largest_component: bool = False, device: str = "auto", overlap: float = 0.5, sw_batch_size: int = 4,
            progress: ProgressCallback | None = None, modalities: tuple[str, ...] = ("CT",),
            overwrite: bool = False) -> list[Path]:
    """Segment a scan, or every scan and DICOM series in a folder tree; returns the written label maps.

    An existing file is replaced only when it is a previous output of ours (its `<name>.labels.json` says
    `"written_by": "pgl segment"`) or with overwrite=True."""
    model = model if isinstance(model, LoadedModel) else load_model(model)
    require_kind(model, "segmentation", "fine-tune it first (`pgl finetune --init MODEL ...`).")
    if not 0 <= overlap < 1:
        raise PGLError(f"--overlap must be >= 0 and < 1, got {overlap}.")
    if tta and not model.metadata.get("training", {}).get("flip_axes"):
        emit(progress, "warning", message=f"{model.path}: was trained without flip augmentation, so flipped "
                                          f"predictions would be wrong; --tta is ignored.")
    input, output = Path(input), Path(output)
    if input.is_dir():
        inputs = list_scans(input, modalities, exclude=(output,))
    elif is_scan_file(input):
        inputs = [input]
    else:
        raise PGLError(f"{input}: no such scan or folder ({', '.join(SCAN_SUFFIXES)}).")
    outputs = output_paths(inputs, input, output)
    clash = [str(o) for i, o in zip(inputs, outputs) if isinstance(i, Path) and o.resolve() == i.resolve()]
    if clash:
        raise PGLError(f"{clash[0]}: the output would overwrite the input scan; choose another --output.")
    foreign = [str(o) for o in outputs if o.exists() and sidecar_writer(o) != WRITER]
    if foreign and not overwrite:
        more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        raise PGLError(f"{output}: {len(foreign)} file(s) there would be replaced that pgl segment did not write: "
                       f"{', '.join(foreign[:5])}{more}. Choose another --output, or add --overwrite to replace them.")
    torch_device = resolve_device(device)
    for i, (source, target) in enumerate(zip(inputs, outputs)):
        seconds = segment_file(model, source, target, torch_device, tta, largest_component, overlap, sw_batch_size,
                               progress)
        emit(progress, "progress", stage="segment", step=i + 1, total=len(inputs), file=source.name,
             output=str(target), seconds=seconds)
    emit(progress, "done", outputs=[str(o) for o in outputs], labels=model.label_table)
    return outputs
