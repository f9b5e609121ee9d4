"""Slicer segmentation files (.seg.nrrd) for tests, written with slicerio as Slicer lays them out: one segment per
structure, terminology entries, layers where segments overlap, optionally a grid other than the scan's."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicerio

CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
REGION_CONTEXT = "Anatomic codes - DICOM master list"
TISSUE = ["SCT", "85756007", "Tissue"]  # Slicer's default entry for a new segment
CODES = {"liver": ["SCT", "10200004", "Liver"], "spleen": ["SCT", "78961009", "Spleen"],
         "kidney": ["SCT", "64033007", "Kidney"]}
SIDES = {"right": ["SCT", "24028007", "Right"], "left": ["SCT", "7771000", "Left"]}


def terminology(code: str | None, side: str | None = None) -> dict:
    """A terminology entry as Slicer writes it; code None: Slicer's default (Tissue), which names nothing."""
    if code is None:
        return {"contextName": CONTEXT, "category": TISSUE, "type": TISSUE, "anatomicContextName": REGION_CONTEXT}
    entry = {"contextName": CONTEXT, "category": ["SCT", "123037004", "Anatomical Structure"], "type": CODES[code],
             "anatomicContextName": REGION_CONTEXT}
    if side:
        entry["typeModifier"] = SIDES[side]
    return entry


def lps_matrix(image: sitk.Image) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    matrix[:3, 3] = image.GetOrigin()
    return matrix


def write_seg(path: Path, reference: sitk.Image, masks: list[tuple[np.ndarray, dict]], crop: bool = False) -> Path:
    """masks: (bool array in ITK order z, y, x on the reference's grid, segment fields: name, color, terminology,
    ...), in file order. Overlapping masks go to new layers (slicerio.add_segment). crop: store only the
    bounding box of all segments (Slicer's "crop to minimum extent"), so the file's grid differs from the scan's."""
    arrays = [m.transpose(2, 1, 0) for m, _ in masks]  # i, j, k as slicerio indexes voxels
    matrix = lps_matrix(reference)
    if crop:
        union = np.any(arrays, axis=0)
        lo = np.argwhere(union).min(0)
        hi = np.argwhere(union).max(0) + 1
        arrays = [a[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] for a in arrays]
        matrix[:3, 3] = matrix[:3, :3] @ lo + matrix[:3, 3]
    segmentation = slicerio.create_segmentation(arrays[0].shape, matrix)
    for i, (array, (_, fields)) in enumerate(zip(arrays, masks)):
        slicerio.add_segment(segmentation, array, {"id": f"Segment_{i + 1}", **fields})
    slicerio.write_segmentation(str(path), segmentation)
    return path


def phantom_masks(label_path: Path) -> tuple[sitk.Image, np.ndarray]:
    """The phantom label map (liver 1, spleen 2, right kidney 3, left kidney 4, tumour 5) as an ITK-order array."""
    image = sitk.ReadImage(str(label_path))
    return image, sitk.GetArrayFromImage(image)
