"""MRML <-> files for the engine: volumes and label maps written on the volume's exact grid, results read back.

Needs only MRML (slicer-core is enough): storage nodes do the RAS/LPS conversions, the segmentations logic
exports segments onto a reference volume's grid whatever grid they were drawn on.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import slicer
import vtk


class NodeError(ValueError):
    """A node the user picked cannot be used; the message names it and says what to do."""


def segmentations_logic():
    return slicer.modules.segmentations.logic()


@contextmanager
def scratch_nodes(scene):
    """Every node added inside the block is removed at its end (a label map export also adds a display node and a
    `<name>_ColorTable` node), except the nodes appended to the yielded list, their display nodes and singletons."""
    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    keep: list = []
    try:
        yield keep
    finally:
        kept = set()
        for node in keep:
            kept.add(node.GetID())
            kept.update(node.GetNthDisplayNodeID(i) for i in range(node.GetNumberOfDisplayNodes()))
        added = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
        for node in added:
            if node.GetID() not in before and node.GetID() not in kept and not node.GetSingletonTag():
                scene.RemoveNode(node)


def write_volume(node, path: Path) -> Path:
    """Write a scalar or label-map volume node (NIfTI/NRRD by suffix) with its geometry."""
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(True)
    if not storage.WriteData(node):
        raise NodeError(f"{node.GetName()}: could not be written to {path}.")
    return path


def segment_ids_by_name(segmentation_node, names: list[str]) -> list[str]:
    """The segment IDs of `names` in that order; NodeError naming the node and the missing segment."""
    segmentation = segmentation_node.GetSegmentation()
    if segmentation.GetNumberOfSegments() == 0:
        raise NodeError(f"{segmentation_node.GetName()}: has no segments; draw them in the Segment Editor first.")
    by_name = {segmentation.GetNthSegment(i).GetName(): segmentation.GetNthSegmentID(i)
               for i in range(segmentation.GetNumberOfSegments())}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise NodeError(f"{segmentation_node.GetName()}: has no segment named {', '.join(missing)} "
                        f"(it has {', '.join(by_name)}).")
    return [by_name[n] for n in names]


def label_array(segmentation_node, names: list[str], reference_volume) -> tuple[np.ndarray, list[str]]:
    """The named segments as one label array on the reference volume's grid (value i+1 for names[i], array
    indexed k, j, i as slicer.util.arrayFromVolume); also the names that are missing or empty there.

    A segment the node lacks counts as empty (a model's result has no segment for a structure it did not find).
    Overlaps: where segments overlap, the later name in the list wins."""
    segmentation = segmentation_node.GetSegmentation()
    have = {segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())}
    present = [n for n in names if n in have]
    shape = tuple(reversed(reference_volume.GetImageData().GetDimensions()))
    if not present:
        return np.zeros(shape, np.uint8), list(names)
    with scratch_nodes(segmentation_node.GetScene()):
        labelmap = _export_labelmap(segmentation_node, segment_ids_by_name(segmentation_node, present),
                                    reference_volume)
        exported = slicer.util.arrayFromVolume(labelmap)
        to_value = np.array([0] + [names.index(n) + 1 for n in present], dtype=np.uint8)
        values = to_value[exported]
    found = set(np.unique(values).tolist())
    return values, [n for i, n in enumerate(names) if i + 1 not in found]


def _export_labelmap(segmentation_node, ids: list[str], reference_volume):
    labelmap = segmentation_node.GetScene().AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__pgl_export__")
    id_array = vtk.vtkStringArray()
    for segment_id in ids:
        id_array.InsertNextValue(segment_id)
    if not segmentations_logic().ExportSegmentsToLabelmapNode(segmentation_node, id_array, labelmap,
                                                               reference_volume):
        raise NodeError(f"{segmentation_node.GetName()}: its segments could not be exported onto "
                        f"{reference_volume.GetName()}'s grid.")
    return labelmap


def export_labels(segmentation_node, names: list[str], reference_volume, path: Path) -> tuple[Path, list[str]]:
    """Label map file of the named segments on the reference volume's grid: value i+1 for names[i] (the later
    name wins where segments overlap). Returns the path and the names of segments empty on this volume (they
    are simply absent from this case)."""
    ids = segment_ids_by_name(segmentation_node, names)
    with scratch_nodes(segmentation_node.GetScene()):
        labelmap = _export_labelmap(segmentation_node, ids, reference_volume)
        present = set(np.unique(slicer.util.arrayFromVolume(labelmap)).tolist())
        empty = [n for i, n in enumerate(names) if i + 1 not in present]
        if len(empty) == len(names):
            raise NodeError(f"{segmentation_node.GetName()}: every chosen segment is empty on "
                            f"{reference_volume.GetName()}; draw them on this volume or leave the pair out.")
        write_volume(labelmap, path)
        return path, empty


def load_segmentation(path: Path, label_table: dict[str, dict], name: str, reference_volume, into=None):
    """A segmentation node from an engine label map: segments named and coloured from the model, under the
    reference volume's parent transform (the label map is on the volume's own grid). With `into`, that node's
    segments are replaced instead of a new node being added."""
    scene = reference_volume.GetScene()
    with scratch_nodes(scene) as keep:
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__pgl_result__")
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        storage.SetFileName(str(path))
        if not storage.ReadData(labelmap):
            raise NodeError(f"{path}: the engine's result could not be read.")
        if into is not None:
            segmentation_node = into
            segmentation_node.GetSegmentation().RemoveAllSegments()
        else:
            segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
        if not segmentations_logic().ImportLabelmapToSegmentationNode(labelmap, segmentation_node):
            raise NodeError(f"{path}: could not be turned into segments.")
        keep.append(segmentation_node)
    segmentation_node.SetAndObserveTransformNodeID(reference_volume.GetTransformNodeID())
    segmentation = segmentation_node.GetSegmentation()
    for i in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(i)
        entry = label_table.get(str(segment.GetLabelValue()))
        if entry:
            segment.SetName(entry["name"])
            segment.SetColor(*[c / 255.0 for c in entry["color"]])
    place_beside(segmentation_node, reference_volume)
    return segmentation_node


def place_beside(node, reference) -> None:
    """Put `node` in the subject hierarchy folder (study) that holds `reference`."""
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(reference.GetScene())
    if sh is None:
        return
    parent = sh.GetItemParent(sh.GetItemByDataNode(reference))
    item = sh.GetItemByDataNode(node)
    if parent and item:
        sh.SetItemParent(item, parent)


def read_label_table(sidecar: Path) -> dict[str, dict]:
    return json.loads(Path(sidecar).read_text())["labels"]
