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

from pgl_engine.contract import LABEL_TABLE_SUFFIX

from . import nifti_slabs
from .errors import UserError
from .segment_labels import (ExportError, ijk_to_ras, install_segments, labels_from_segments, present_values,
                             same_grid, segments_from_labels, volume_shape)
from .steps import StepGenerator, run_all
from .terminology import apply_terminology


NodeError = UserError  # a node the user picked cannot be used: the name console scripts have caught so far


def in_scene(node) -> bool:
    """The node is still in its scene (not removed, not gone with a scene close)."""
    scene = node.GetScene() if node is not None else None
    return scene is not None and bool(scene.IsNodePresent(node))


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
    """Write a scalar or label-map volume node (uncompressed NIfTI as `.nii`, else by suffix) with its geometry."""
    if Path(path).name.lower().endswith(".nii"):
        run_all(write_volume_steps(node, Path(path)))
        return path
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(False)  # gzip on the GUI thread would hold Slicer for seconds on a full-size CT
    if not storage.WriteData(node):
        raise NodeError(f"{node.GetName()}: could not be written to {path}.")
    return path


def _volume_array(node) -> np.ndarray:
    image = node.GetImageData() if node is not None else None
    if image is None or image.GetPointData().GetScalars() is None:
        raise NodeError(f"{getattr(node, 'GetName', lambda: 'the volume')()}: holds no voxels; load the volume again.")
    array = slicer.util.arrayFromVolume(node)
    if array.ndim != 3:
        raise NodeError(f"{node.GetName()}: is not a single-channel 3D volume (voxels of shape {array.shape}).")
    return array


def write_volume_steps(node, path: Path) -> StepGenerator:
    """write_volume of a `.nii` file, a slab of slices per step (the voxels and IJK-to-RAS matrix as they are)."""
    array = _volume_array(node)
    try:
        yield from nifti_slabs.write_steps(path, array, ijk_to_ras(node))
    except (nifti_slabs.NiftiError, OSError) as e:
        raise NodeError(f"{node.GetName()}: could not be written to {path} ({e}).") from e
    return path


def _segment_ids(segmentation_node, names: list[str]) -> list[str | None]:
    """The ID of the segment named names[i], None where there is none."""
    segmentation = segmentation_node.GetSegmentation()
    by_name: dict[str, str] = {}
    for i in range(segmentation.GetNumberOfSegments()):
        by_name[segmentation.GetNthSegment(i).GetName()] = segmentation.GetNthSegmentID(i)  # the last of a name
    return [by_name.get(n) for n in names]


def label_array_steps(segmentation_node, names: list[str], reference_volume) -> StepGenerator:
    """label_array a piece per step."""
    shape = volume_shape(reference_volume)
    values = np.zeros(shape, np.uint8 if len(names) < 256 else np.uint16)
    try:
        yield from labels_from_segments(segmentation_node, _segment_ids(segmentation_node, names), reference_volume,
                                        values)
    except ExportError as e:
        raise NodeError(str(e)) from e
    present = yield from present_values(values)
    return values, [n for i, n in enumerate(names) if i + 1 not in present]


def label_array(segmentation_node, names: list[str], reference_volume) -> tuple[np.ndarray, list[str]]:
    """The named segments as one label array on the reference volume's grid (value i+1 for names[i], array
    indexed k, j, i as slicer.util.arrayFromVolume); also the names that are missing or empty there.

    A segment the node lacks counts as empty (a model's result has no segment for a structure it did not find).
    Overlaps: where segments overlap, the later name in the list wins."""
    return run_all(label_array_steps(segmentation_node, names, reference_volume))


def export_labels_steps(segmentation_node, names: list[str], reference_volume, path: Path) -> StepGenerator:
    """export_labels a piece per step; returns (path, unlabelled names, the label array written)."""
    values, unlabelled = yield from label_array_steps(segmentation_node, names, reference_volume)
    if len(unlabelled) == len(names):
        raise NodeError(f"{segmentation_node.GetName()}: none of the chosen segments ({', '.join(names)}) is "
                        f"drawn on {reference_volume.GetName()}; draw at least one on this volume or leave "
                        f"the pair out.")
    try:
        yield from nifti_slabs.write_steps(path, values, ijk_to_ras(reference_volume))
    except (nifti_slabs.NiftiError, OSError) as e:
        raise NodeError(f"{segmentation_node.GetName()}: its label map could not be written to {path} ({e}).") from e
    colours = _segment_colours(segmentation_node)
    table = {str(i + 1): {"name": n, "color": colours.get(n, [128, 128, 128])}
             for i, n in enumerate(names) if n not in unlabelled}
    write_label_table(label_table_path(path), table)
    return path, unlabelled, values


def export_labels(segmentation_node, names: list[str], reference_volume, path: Path) -> tuple[Path, list[str]]:
    """Label map file (`.nii`) of the named segments on the reference volume's grid (value i+1 for names[i]; the
    later name wins where segments overlap), with its label table beside it (`<case>.labels.json`, the engine's
    sidecar). The table lists the structures this case labels: those whose segment is present and non-empty on
    the volume. A structure left out is not labelled here, so fine-tuning does not teach it as background in this
    case (partial labels). Returns the path and the names this case does not label."""
    path, unlabelled, _ = run_all(export_labels_steps(segmentation_node, names, reference_volume, path))
    return path, unlabelled


def _segment_colours(segmentation_node) -> dict[str, list[int]]:
    segmentation = segmentation_node.GetSegmentation()
    segments = [segmentation.GetNthSegment(i) for i in range(segmentation.GetNumberOfSegments())]
    return {s.GetName(): [int(round(255 * c)) for c in s.GetColor()] for s in segments}


def label_table_path(label_map: Path) -> Path:
    """The engine's sidecar of a label map: `<name>.labels.json` beside it (`.nii`, `.nii.gz`, `.nrrd` stripped)."""
    name = label_map.name
    stem = next((name[: -len(s)] for s in (".nii.gz", ".nii", ".nrrd", ".mha") if name.lower().endswith(s)), name)
    return label_map.with_name(stem + LABEL_TABLE_SUFFIX)


def write_label_table(path: Path, table: dict[str, dict]) -> None:
    path.write_text(json.dumps({"labels": table}, indent=2))


def load_segmentation(path: Path, label_table: dict[str, dict], name: str, reference_volume, into=None):
    """A segmentation node from a label map file (any format Slicer reads): segments named and coloured from the
    table, under the reference volume's parent transform (the file is in the volume's frame; its grid may differ).
    With `into`, that node's segments are replaced instead of a new node being added."""
    with scratch_nodes(reference_volume.GetScene()):
        labelmap = reference_volume.GetScene().AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__pgl_result__")
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        storage.SetFileName(str(path))
        if not storage.ReadData(labelmap):
            raise NodeError(f"{path}: the engine's result could not be read.")
        segments = run_all(segments_from_labels(slicer.util.arrayFromVolume(labelmap), ijk_to_ras(labelmap),
                                                label_table))
    return place_segments(segments, name, reference_volume, into)


def read_result_steps(path: Path, label_table: dict[str, dict], reference_volume) -> StepGenerator:
    """The engine's label map (uncompressed NIfTI on the volume's own grid), a slab or a segment per step.
    Returns (the (k, j, i) label array, its segments, not yet in a node: see place_segments)."""
    matrix = ijk_to_ras(reference_volume)
    try:
        head = nifti_slabs.Header(path)
        if head.shape != volume_shape(reference_volume) or not same_grid(head.ijk_to_ras, matrix):
            raise NodeError(f"{path}: the engine's result is not on {reference_volume.GetName()}'s grid "
                            f"({head.shape[::-1]} voxels); run the segmentation again.")
        labels = np.zeros(head.shape, head.dtype.newbyteorder("=") if head.dtype.kind in "iu" else np.int32)
        yield from nifti_slabs.read_steps(path, head, labels)
    except (nifti_slabs.NiftiError, OSError) as e:
        raise NodeError(f"{path}: the engine's result could not be read ({e}).") from e
    segments = yield from segments_from_labels(labels, matrix, label_table)
    return labels, segments


def place_segments(segments: list, name: str, reference_volume, into=None):
    """Put result segments (segments_from_labels) into `into` (its segments replaced) or a new node named `name`,
    under the reference volume's parent transform, beside it in the subject hierarchy."""
    scene = reference_volume.GetScene()
    parent_transform = reference_volume.GetTransformNodeID()
    node = into if into is not None else scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    # The node under the volume's transform first: Slicer moves the reference geometry whenever the parents differ,
    # and the segments are on the volume's own grid.
    node.SetAndObserveTransformNodeID(parent_transform)
    node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
    install_segments(node, segments)
    apply_terminology(node)
    place_beside(node, reference_volume)
    return node


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
