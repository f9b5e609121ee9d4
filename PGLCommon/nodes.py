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

from .terminology import apply_terminology


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
    storage.SetUseCompression(False)  # gzip on the GUI thread would hold Slicer for seconds on a full-size CT
    if not storage.WriteData(node):
        raise NodeError(f"{node.GetName()}: could not be written to {path}.")
    return path


def label_array(segmentation_node, names: list[str], reference_volume) -> tuple[np.ndarray, list[str]]:
    """The named segments as one label array on the reference volume's grid (value i+1 for names[i], array
    indexed k, j, i as slicer.util.arrayFromVolume); also the names that are missing or empty there.

    A segment the node lacks counts as empty (a model's result has no segment for a structure it did not find).
    Overlaps: where segments overlap, the later name in the list wins."""
    with _exported_labelmap(segmentation_node, names, reference_volume) as labelmap:
        if labelmap is None:
            shape = tuple(reversed(reference_volume.GetImageData().GetDimensions()))
            return np.zeros(shape, np.uint8), list(names)
        values = slicer.util.arrayFromVolume(labelmap).copy()
    return values, _not_found(values, names)


def _not_found(values: np.ndarray, names: list[str]) -> list[str]:
    found = set(np.unique(values).tolist())
    return [n for i, n in enumerate(names) if i + 1 not in found]


@contextmanager
def _exported_labelmap(segmentation_node, names: list[str], reference_volume):
    """A scratch label-map node of the named segments the node has, on the reference volume's grid, holding value
    i+1 for names[i]; None when it has none of them. Removed at the end of the block."""
    segmentation = segmentation_node.GetSegmentation()
    by_name = {segmentation.GetNthSegment(i).GetName(): segmentation.GetNthSegmentID(i)
               for i in range(segmentation.GetNumberOfSegments())}
    present = [n for n in names if n in by_name]
    with scratch_nodes(segmentation_node.GetScene()):
        if not present:
            yield None
            return
        labelmap = segmentation_node.GetScene().AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__pgl_export__")
        id_array = vtk.vtkStringArray()
        for name in present:
            id_array.InsertNextValue(by_name[name])
        if not segmentations_logic().ExportSegmentsToLabelmapNode(segmentation_node, id_array, labelmap,
                                                                   reference_volume):
            raise NodeError(f"{segmentation_node.GetName()}: its segments could not be exported onto "
                            f"{reference_volume.GetName()}'s grid.")
        if present != list(names):  # exported as value j+1 for present[j]: renumber (a full-volume pass)
            exported = slicer.util.arrayFromVolume(labelmap)
            to_value = np.array([0] + [names.index(n) + 1 for n in present], dtype=exported.dtype)
            exported[:] = to_value[exported]
            slicer.util.arrayFromVolumeModified(labelmap)
        yield labelmap


def export_labels(segmentation_node, names: list[str], reference_volume, path: Path) -> tuple[Path, list[str]]:
    """Label map file of the named segments on the reference volume's grid (value i+1 for names[i]; the later
    name wins where segments overlap), with its label table beside it (`<case>.labels.json`, the engine's
    sidecar). The table lists the structures this case labels: those whose segment is present and non-empty on
    the volume. A structure left out is not labelled here, so fine-tuning does not teach it as background in this
    case (partial labels). Returns the path and the names this case does not label."""
    with _exported_labelmap(segmentation_node, names, reference_volume) as labelmap:
        unlabelled = list(names) if labelmap is None else _not_found(slicer.util.arrayFromVolume(labelmap), names)
        if len(unlabelled) == len(names):
            raise NodeError(f"{segmentation_node.GetName()}: none of the chosen segments ({', '.join(names)}) is "
                            f"drawn on {reference_volume.GetName()}; draw at least one on this volume or leave "
                            f"the pair out.")
        write_volume(labelmap, path)
    colours = _segment_colours(segmentation_node)
    table = {str(i + 1): {"name": n, "color": colours.get(n, [128, 128, 128])}
             for i, n in enumerate(names) if n not in unlabelled}
    write_label_table(label_table_path(path), table)
    return path, unlabelled


def _segment_colours(segmentation_node) -> dict[str, list[int]]:
    segmentation = segmentation_node.GetSegmentation()
    segments = [segmentation.GetNthSegment(i) for i in range(segmentation.GetNumberOfSegments())]
    return {s.GetName(): [int(round(255 * c)) for c in s.GetColor()] for s in segments}


def label_table_path(label_map: Path) -> Path:
    """The engine's sidecar of a label map: `<name>.labels.json` beside it (`.nii`, `.nii.gz`, `.nrrd` stripped)."""
    name = label_map.name
    stem = next((name[: -len(s)] for s in (".nii.gz", ".nii", ".nrrd", ".mha") if name.lower().endswith(s)), name)
    return label_map.with_name(stem + ".labels.json")


def write_label_table(path: Path, table: dict[str, dict]) -> None:
    path.write_text(json.dumps({"labels": table}, indent=2))


def load_segmentation(path: Path, label_table: dict[str, dict], name: str, reference_volume, into=None):
    """A segmentation node from an engine label map: segments named and coloured from the model, under the
    reference volume's parent transform (the label map is on the volume's own grid). With `into`, that node's
    segments are replaced instead of a new node being added."""
    scene = reference_volume.GetScene()
    parent_transform = reference_volume.GetTransformNodeID()
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
        # All three under the volume's transform first: Slicer moves the reference geometry and resamples the
        # import whenever the parents differ, which would shift the segments by the transform.
        labelmap.SetAndObserveTransformNodeID(parent_transform)
        segmentation_node.SetAndObserveTransformNodeID(parent_transform)
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
        if not segmentations_logic().ImportLabelmapToSegmentationNode(labelmap, segmentation_node):
            raise NodeError(f"{path}: could not be turned into segments.")
        keep.append(segmentation_node)
    segmentation = segmentation_node.GetSegmentation()
    for i in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(i)
        entry = label_table.get(str(segment.GetLabelValue()))
        if entry:
            segment.SetName(entry["name"])
            segment.SetNameAutoGenerated(False)  # a terminology chosen later must not rename it: names match labels
            segment.SetColor(*[c / 255.0 for c in entry["color"]])
    apply_terminology(segmentation_node)
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
