"""Slicer segmentation files (`.seg.nrrd`), read and written with slicerio.

A `.seg.nrrd` holds segments, each with an ID, a name, a colour, a terminology entry and a (layer, label value)
in the voxel array; segments that overlap lie in different layers (a 4D array). Here a file becomes a label map
by a segment -> label value table; where segments overlap, the voxel takes the segment listed later in the
file, as Slicer's "Export to label map" does.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..atomic import atomic_write
from ..errors import PGLError
from .structures import Structure, find_structure

CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"  # Slicer's default terminology
REGION_CONTEXT = "Anatomic codes - DICOM master list"  # what Slicer's own default entry names (no region set)
# Slicer gives a new segment the type "Tissue" until someone picks one: it says nothing about which structure
GENERIC_TYPE = ("SCT", "85756007")


@dataclass(frozen=True)
class Segment:
    """One segment's metadata: where it lies in the voxel array and what it is."""

    id: str
    name: str
    colour: tuple[int, int, int] | None
    code: tuple[str, ...] | None  # identifying terminology (see terminology_key), None if none or generic
    code_text: str  # the code for messages: "SCT 64033007 Kidney, Left"
    layer: int
    label_value: int


def _slicerio():
    try:
        import slicerio
    except ImportError as e:  # a dependency of the engine; missing only in a hand-made environment
        raise PGLError("Reading and writing Slicer segmentations (.seg.nrrd) needs the slicerio package: "
                       "pip install slicerio.") from e
    return slicerio


def read_segmentation(path: Path, voxels: bool = True) -> dict:
    """slicerio's segmentation dict (voxels indexed i, j, k; with layers first where segments overlap)."""
    try:
        segmentation = _slicerio().read_segmentation(str(path), skip_voxels=not voxels)
    except PGLError:
        raise
    except Exception as e:  # nrrd, OS and format errors alike mean "not a readable segmentation"
        detail = (str(e).strip().splitlines() or [type(e).__name__])[-1]
        raise PGLError(f"{path}: cannot be read as a Slicer segmentation ({detail[:200]}). Save it again from "
                       f"Slicer (Data module: right-click the segmentation > Export/Save), or export it as a label "
                       f"map.") from e
    array = segmentation.get("voxels")
    if array is not None and array.ndim not in (3, 4):
        raise PGLError(f"{path}: has a {array.ndim}D voxel array; a Slicer segmentation is 3D (4D with layers).")
    return segmentation


def terminology_key(terminology: dict | None) -> tuple[str, ...] | None:
    """What identifies a structure in a terminology entry: the type code (scheme, value), its modifier (side) and
    the anatomic region with its modifier; None without a type or for Slicer's default generic "Tissue"."""
    if not terminology:
        return None
    kind = list(terminology.get("type") or [])[:2]
    if len(kind) < 2 or not kind[1] or tuple(kind) == GENERIC_TYPE:
        return None
    parts = [kind[0], kind[1]]
    for field in ("typeModifier", "anatomicRegion", "anatomicRegionModifier"):
        code = list(terminology.get(field) or ["", ""])
        parts += [code[0] if len(code) > 0 else "", code[1] if len(code) > 1 else ""]
    return tuple(parts)


def _code_text(terminology: dict | None) -> str:
    if not terminology:
        return ""
    kind = list(terminology.get("type") or ["", "", ""]) + ["", "", ""]
    modifier = list(terminology.get("typeModifier") or []) + ["", "", ""]
    return f"{kind[0]} {kind[1]} {kind[2]}".strip() + (f", {modifier[2]}" if modifier[2] else "")


def structure_key(name: str) -> tuple[str, ...] | None:
    """The terminology key a label name stands for when it is a known structure (structures.py), else None."""
    structure = find_structure(name)
    return terminology_key(structure_terminology(structure)) if structure else None


def segments_of(segmentation: dict) -> list[Segment]:
    """The segments of a segmentation dict, in the file's order."""
    voxels = segmentation.get("voxels")
    # files of Slicer before 4.11 store segment i in layer i, without Layer or LabelValue fields
    one_per_layer = voxels is not None and voxels.ndim == 4
    segments = []
    for i, raw in enumerate(segmentation.get("segments") or []):
        colour = raw.get("color")
        segments.append(Segment(
            id=str(raw.get("id", f"Segment_{i}")), name=str(raw.get("name") or raw.get("id") or f"Segment_{i}"),
            colour=tuple(int(round(255 * min(max(float(c), 0.0), 1.0))) for c in colour[:3]) if colour else None,
            code=terminology_key(raw.get("terminology")), code_text=_code_text(raw.get("terminology")),
            layer=int(raw.get("layer", i if one_per_layer else 0)), label_value=int(raw.get("labelValue", 1))))
    return segments


def segment_mask(segmentation: dict, segment: Segment) -> np.ndarray:
    """The segment's voxels, (i, j, k) bool."""
    voxels = segmentation["voxels"]
    layer = voxels[segment.layer] if voxels.ndim == 4 else voxels
    return layer == segment.label_value


def voxel_counts(segmentation: dict, segments: list[Segment]) -> dict[str, int]:
    return {s.id: int(np.count_nonzero(segment_mask(segmentation, s))) for s in segments}


def overlaps(segmentation: dict, segments: list[Segment]) -> list[tuple[Segment, Segment, int]]:
    """(earlier, later, voxels) for each pair of the segments that share voxels (only layered files can)."""
    if segmentation["voxels"].ndim == 3 or len(segments) < 2:
        return []
    cover = np.zeros(segmentation["voxels"].shape[1:], dtype=np.uint8)
    for s in segments:
        cover += segment_mask(segmentation, s)
    shared = cover > 1
    if not shared.any():
        return []
    involved = [s for s in segments if np.any(segment_mask(segmentation, s) & shared)]
    pairs = []
    for i, a in enumerate(involved):
        mask_a = segment_mask(segmentation, a) & shared
        for b in involved[i + 1:]:
            count = int(np.count_nonzero(mask_a & segment_mask(segmentation, b)))
            if count:
                pairs.append((a, b, count))
    return pairs


def geometry(segmentation: dict) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """(spacing, direction, origin) in ITK's LPS terms from the file's ijkToLPS matrix."""
    matrix = np.asarray(segmentation["ijkToLPS"], dtype=float)
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    direction = matrix[:3, :3] / spacing
    return tuple(spacing), tuple(direction.ravel()), tuple(matrix[:3, 3])


def label_image(segmentation: dict, values: dict[str, int]) -> sitk.Image:
    """A uint8 label map on the file's own grid: segment ID -> label value for the segments in `values` (others
    left out); where segments overlap, the one later in the file wins, as in Slicer's Export to label map."""
    voxels = segmentation["voxels"]
    labels = np.zeros(voxels.shape[-3:], dtype=np.uint8)
    for segment in segments_of(segmentation):
        if segment.id in values:
            labels[segment_mask(segmentation, segment)] = values[segment.id]
    image = sitk.GetImageFromArray(np.ascontiguousarray(labels.transpose(2, 1, 0)))
    spacing, direction, origin = geometry(segmentation)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    image.SetOrigin(origin)
    return image


def structure_terminology(structure: Structure) -> dict:
    """A known structure as a slicerio terminology entry of Slicer's default terminology (no anatomic region)."""
    entry = {"contextName": CONTEXT, "category": [*_code(structure.category)], "type": [*_code(structure.type)],
             "anatomicContextName": REGION_CONTEXT}
    if structure.modifier is not None:
        entry["typeModifier"] = [*_code(structure.modifier)]
    return entry


def _code(code) -> tuple[str, str, str]:
    return code.scheme, code.value, code.meaning


def write_seg_nrrd(labels_zyx: np.ndarray, reference: sitk.Image, path: Path, table: dict[str, dict]) -> None:
    """Write a label map (ITK order z, y, x, on the reference's grid) as a Slicer segmentation, atomically: one
    segment per label of `table` ({"1": {"name", "color"}}), named and coloured, with the standard terminology
    entry where the name is a known structure. Labels do not overlap, so there is one layer."""
    slicerio = _slicerio()
    voxels = labels_zyx.transpose(2, 1, 0)  # i, j, k; a view, written in NRRD's (Fortran) order without a copy
    matrix = np.eye(4)
    matrix[:3, :3] = np.array(reference.GetDirection()).reshape(3, 3) @ np.diag(reference.GetSpacing())
    matrix[:3, 3] = reference.GetOrigin()
    boxes = ndimage.find_objects(labels_zyx)  # per value v at index v - 1: (z, y, x) slices, None if absent
    segments = []
    for value, entry in sorted(table.items(), key=lambda item: int(item[0])):
        value = int(value)
        box = boxes[value - 1] if value - 1 < len(boxes) else None
        extent = [0, -1, 0, -1, 0, -1] if box is None else \
            [v for axis in reversed(box) for v in (axis.start, axis.stop - 1)]
        segment = {"id": f"Segment_{value}", "name": entry["name"], "color": [c / 255 for c in entry["color"]],
                   "colorAutoGenerated": False, "nameAutoGenerated": False, "labelValue": value, "layer": 0,
                   "extent": extent}
        structure = find_structure(entry["name"])
        if structure is not None:
            segment["terminology"] = structure_terminology(structure)
        segments.append(segment)
    segmentation = {"voxels": voxels, "ijkToLPS": matrix, "segments": segments,
                    "containedRepresentationNames": ["Binary labelmap"], "masterRepresentation": "Binary labelmap",
                    "referenceImageExtentOffset": [0, 0, 0]}
    # gzip level 1: label maps are mostly zeros and shrink nearly as well as at 9, several times faster
    atomic_write(path, lambda tmp: slicerio.write_segmentation(str(tmp), segmentation, compression_level=1),
                 size_hint=labels_zyx.nbytes)

