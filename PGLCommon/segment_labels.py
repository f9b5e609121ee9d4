"""Segments <-> label arrays on a volume's grid, a piece at a time (see steps.py), with cost scaling with the
segments' boxes rather than the whole volume where the geometry allows.

Needs only MRML (slicer-core is enough). Arrays are indexed (k, j, i) as slicer.util.arrayFromVolume gives them.
"""
from __future__ import annotations

import numpy as np
import slicer
import vtk
from vtk.util.numpy_support import vtk_to_numpy

from .steps import StepGenerator, slabs

BINARY_LABELMAP = "Binary labelmap"  # vtkSegmentationConverter::GetBinaryLabelmapRepresentationName()


class ExportError(ValueError):
    """A segment could not be put on the reference volume's grid."""


def ijk_to_ras(volume_node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def volume_shape(volume_node) -> tuple[int, int, int]:
    return tuple(reversed(volume_node.GetImageData().GetDimensions()))


def same_grid(a: np.ndarray, b: np.ndarray) -> bool:
    """Two IJK-to-RAS matrices name the same voxels (to a thousandth of a mm: files keep float32)."""
    return bool(np.allclose(a, b, rtol=1e-5, atol=1e-3))


def _image_array(image) -> np.ndarray | None:
    """The (k, j, i) voxels of a vtkOrientedImageData (a view), None when it has none."""
    scalars = image.GetPointData().GetScalars() if image is not None else None
    if scalars is None or image.IsEmpty():
        return None
    ni, nj, nk = image.GetDimensions()
    return vtk_to_numpy(scalars).reshape(nk, nj, ni)


def _image_matrix(image) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _paste(out: np.ndarray, source: np.ndarray, origin: tuple[int, int, int], match, value: int) -> StepGenerator:
    """out[origin + index] = value where match(source) holds, clipped to out, a slab per step."""
    lo = [max(0, o) for o in origin]
    hi = [min(n, o + s) for n, o, s in zip(out.shape, origin, source.shape)]
    if any(h <= low for low, h in zip(lo, hi)):
        return
    (k0, j0, i0), (k1, j1, i1) = lo, hi
    for a, b in slabs(k1 - k0, (j1 - j0) * (i1 - i0)):
        piece = source[k0 + a - origin[0]:k0 + b - origin[0], j0 - origin[1]:j1 - origin[1],
                       i0 - origin[2]:i1 - origin[2]]
        out[k0 + a:k0 + b, j0:j1, i0:i1][match(piece)] = value
        yield


def labels_from_segments(segmentation_node, segment_ids: list[str | None], reference_volume,
                         out: np.ndarray) -> StepGenerator:
    """Paint segment_ids[i] (None: absent) as value i+1 into `out`, the reference volume's (k, j, i) grid; a later
    segment wins where they overlap (as ExportSegmentsToLabelmapNode merges).

    A binary labelmap already on the volume's lattice, under the same parent transform, is copied a slab at a
    time; any other segment goes through ExportSegmentsToLabelmapNode (which resamples), one segment per step."""
    segmentation = segmentation_node.GetSegmentation()
    reference = ijk_to_ras(reference_volume)
    direct = (segmentation_node.GetTransformNodeID() == reference_volume.GetTransformNodeID()
              and segmentation.GetSourceRepresentationName() == BINARY_LABELMAP)
    for value, segment_id in enumerate(segment_ids, start=1):
        if segment_id is None:
            continue
        segment = segmentation.GetSegment(segment_id)
        image = segment.GetRepresentation(BINARY_LABELMAP) if direct else None
        if image is not None and same_grid(_image_matrix(image), reference):
            voxels = _image_array(image)
            if voxels is not None:
                extent = image.GetExtent()
                label = segment.GetLabelValue()
                yield from _paste(out, voxels, (extent[4], extent[2], extent[0]), lambda v: v == label, value)
            continue
        exported, origin = _export_one(segmentation_node, segment_id, reference_volume, reference)
        yield
        if exported is not None:
            yield from _paste(out, exported, origin, lambda v: v != 0, value)


def _export_one(segmentation_node, segment_id: str, reference_volume, reference: np.ndarray):
    """One segment through Slicer's export onto the reference volume's grid: (its voxels, their (k, j, i) origin
    there), or (None, None) when empty. The helper nodes are gone before the next step runs."""
    from .nodes import scratch_nodes, segmentations_logic

    scene = segmentation_node.GetScene()
    with scratch_nodes(scene):
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__pgl_export__")
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segment_id)
        if not segmentations_logic().ExportSegmentsToLabelmapNode(segmentation_node, ids, labelmap,
                                                                   reference_volume):
            raise ExportError(f"{segmentation_node.GetName()}: its segment "
                              f"'{segmentation_node.GetSegmentation().GetSegment(segment_id).GetName()}' could not be "
                              f"exported onto {reference_volume.GetName()}'s grid.")
        if labelmap.GetImageData() is None:
            return None, None
        voxels = slicer.util.arrayFromVolume(labelmap).copy()
        corner = np.linalg.solve(reference, ijk_to_ras(labelmap)[:, 3])[:3]
    origin = np.rint(corner).astype(int)
    return voxels, (int(origin[2]), int(origin[1]), int(origin[0]))


def present_values(labels: np.ndarray) -> StepGenerator:
    """The non-zero values of an integer array, a slab per step."""
    found: set[int] = set()
    for a, b in slabs(labels.shape[0], labels.shape[1] * labels.shape[2]):
        slab = labels[a:b]
        small = slab.dtype.kind == "u" and slab.dtype.itemsize <= 2
        found.update(int(v) for v in (np.flatnonzero(np.bincount(slab.ravel())) if small else np.unique(slab)))
        yield
    found.discard(0)
    return found


def _boxes(labels: np.ndarray) -> StepGenerator:
    """{value: [k0, k1, j0, j1, i0, i1]} (stops exclusive) of each non-zero value, a slab (or value) per step."""
    boxes: dict[int, list[int]] = {}
    for a, b in slabs(labels.shape[0], labels.shape[1] * labels.shape[2]):
        slab = labels[a:b]
        small = slab.dtype.kind == "u" and slab.dtype.itemsize <= 2
        values = np.flatnonzero(np.bincount(slab.ravel())) if small else np.unique(slab)
        yield
        for value in (int(v) for v in values if v != 0):
            mask = slab == value
            ks, js, is_ = (np.flatnonzero(mask.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1)))
            box = [a + ks[0], a + ks[-1] + 1, js[0], js[-1] + 1, is_[0], is_[-1] + 1]
            old = boxes.setdefault(value, box)
            boxes[value] = [min(old[0], box[0]), max(old[1], box[1]), min(old[2], box[2]), max(old[3], box[3]),
                            min(old[4], box[4]), max(old[5], box[5])]
            yield
    return boxes


def segments_from_labels(labels: np.ndarray, matrix: np.ndarray, table: dict[str, dict]) -> StepGenerator:
    """A vtkSegment per non-zero value (ascending) of a (k, j, i) label array on the grid `matrix` (IJK to RAS):
    its binary labelmap cropped to the value's box, named and coloured from `table` ({"1": {"name", "color"}}).
    Returns the segments, not yet in any node."""
    boxes = yield from _boxes(labels)
    world = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            world.SetElement(r, c, float(matrix[r, c]))
    segments = []
    for value in sorted(boxes):
        k0, k1, j0, j1, i0, i1 = boxes[value]
        image = slicer.vtkOrientedImageData()
        image.SetExtent(i0, i1 - 1, j0, j1 - 1, k0, k1 - 1)
        image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        image.SetImageToWorldMatrix(world)
        voxels = _image_array(image)
        for a, b in slabs(k1 - k0, (j1 - j0) * (i1 - i0)):
            voxels[a:b] = labels[k0 + a:k0 + b, j0:j1, i0:i1] == value
            yield
        entry = table.get(str(value)) or {"name": f"Label_{value}", "color": [128, 128, 128]}
        segment = slicer.vtkSegment()
        segment.SetName(entry["name"])
        segment.SetNameAutoGenerated(False)  # a terminology chosen later must not rename it: names match labels
        segment.SetColor(*[c / 255.0 for c in entry["color"]])
        segment.SetLabelValue(1)
        segment.AddRepresentation(BINARY_LABELMAP, image)
        segments.append(segment)
    return segments


def install_segments(segmentation_node, segments: list) -> None:
    """Replace the node's segments with `segments` (binary labelmaps become its source representation)."""
    if segmentation_node.GetDisplayNode() is None:
        segmentation_node.CreateDefaultDisplayNodes()
    segmentation = segmentation_node.GetSegmentation()
    segmentation.RemoveAllSegments()
    if segmentation.GetSourceRepresentationName() != BINARY_LABELMAP:
        segmentation.SetSourceRepresentationName(BINARY_LABELMAP)
    for segment in segments:
        segmentation.AddSegment(segment)
