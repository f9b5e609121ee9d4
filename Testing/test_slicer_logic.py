"""Module logics on a real MRML scene (slicer-core): fine-tune through the logic, segment, check the node."""
import json
from pathlib import Path

import numpy as np
import pytest
import vtk
from conftest import ORGANS
from panel_helpers import replace_segments
from PGLSegmentationLib import PGLSegmentationLogic

from pgl_engine.inference.evaluation import dice_per_label
from PGLCommon.engine_runs import EngineError
from PGLCommon.nodes import NodeError, load_segmentation, read_label_table

FINETUNE_ARGS = ["--feature-channels", "8", "--channels", "8", "16", "32", "--strides", "2", "2", "--workers", "0",
                 "--lr", "3e-3", "--batch-size", "2"]


def phantom_pair(mrml, cohort, index):
    volume = mrml.load_volume(cohort / "images" / f"phantom_{index:03d}.nii.gz", f"CT {index}")
    table = read_label_table(cohort / "labels" / f"phantom_{index:03d}.labels.json")
    segmentation = load_segmentation(cohort / "labels" / f"phantom_{index:03d}.nii.gz", table, f"Seg {index}", volume)
    return volume, segmentation


def labels_on_volume(mrml, segmentation, volume, names):
    """The segmentation as a label array on the volume's grid (value i+1 = names[i])."""
    import slicer

    ids = vtk.vtkStringArray()
    seg = segmentation.GetSegmentation()
    by_name = {seg.GetNthSegment(i).GetName(): seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())}
    for name in names:
        ids.InsertNextValue(by_name[name])
    labelmap = mrml.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    assert mrml.segmentations_logic.ExportSegmentsToLabelmapNode(segmentation, ids, labelmap, volume)
    array = slicer.util.arrayFromVolume(labelmap).copy()
    mrml.scene.RemoveNode(labelmap)
    return array


def matrix(node):
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(i, j) for j in range(4)] for i in range(4)])


@pytest.mark.slow
def test_finetune_and_segment_through_the_logic(mrml, cohort, tmp_path):
    pairs = [phantom_pair(mrml, cohort, i) for i in (0, 1)]
    test_volume, test_truth = phantom_pair(mrml, cohort, 2)
    names = ["liver", "spleen", "right kidney", "left kidney"]
    logic = PGLSegmentationLogic()
    model = logic.finetune([v for v, _ in pairs], [s for _, s in pairs], str(tmp_path / "model"), segmentNames=names,
                           steps=250, device="cpu", patchSize=(32, 32, 16), spacing=(6.0, 6.0, 8.0),
                           extraArgs=[*FINETUNE_ARGS, "--cache-dir", str(tmp_path / "cache")], wait=True)
    assert logic.models == [model]
    nodes_before = mrml.scene.GetNumberOfNodes()
    result = logic.segment(test_volume, model, device="cpu")
    assert mrml.scene.GetNumberOfNodes() == nodes_before + 2  # the segmentation node and its display node
    assert result.IsA("vtkMRMLSegmentationNode") and result.GetName() == "CT 2 PGL"
    segmentation = result.GetSegmentation()
    got = {segmentation.GetNthSegment(i).GetName(): segmentation.GetNthSegment(i).GetColor()
           for i in range(segmentation.GetNumberOfSegments())}
    assert set(got) <= set(names) and {"liver", "right kidney", "left kidney"} <= set(got)
    assert got["liver"] == pytest.approx((221 / 255, 130 / 255, 101 / 255))
    # the reference geometry is the input volume's grid
    expected = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    expected.SetReferenceImageGeometryParameterFromVolumeNode(test_volume)
    key = "Reference image geometry"
    assert segmentation.GetConversionParameter(key) == expected.GetSegmentation().GetConversionParameter(key)
    mrml.scene.RemoveNode(expected)
    predicted = labels_on_volume(mrml, result, test_volume, [n for n in names if n in got])
    truth = labels_on_volume(mrml, test_truth, test_volume, names)
    value_of = {n: i + 1 for i, n in enumerate(n for n in names if n in got)}
    dice = dice_per_label(np.select([predicted == value_of[n] for n in value_of], [names.index(n) + 1 for n in value_of], 0),
                          truth, {v: str(v) for v in ORGANS})
    assert dice[1] > 0.5 and dice[3] > 0.3 and dice[4] > 0.3, dice


def test_segmentation_drawn_on_another_grid_is_exported_on_the_volume(mrml, cohort, tmp_path):
    import nibabel as nib
    import SimpleITK as sitk

    volume = mrml.load_volume(cohort / "images" / "phantom_000.nii.gz", "CT")
    # the labels drawn on a grid twice as coarse and shifted by half a voxel
    labels = sitk.ReadImage(str(cohort / "labels" / "phantom_000.nii.gz"))
    coarse = sitk.Resample(labels, [s // 2 for s in labels.GetSize()], sitk.Transform(), sitk.sitkNearestNeighbor,
                           [o + sp / 2 for o, sp in zip(labels.GetOrigin(), labels.GetSpacing())],
                           [2 * s for s in labels.GetSpacing()], labels.GetDirection(), 0)
    sitk.WriteImage(coarse, str(tmp_path / "coarse.nii.gz"))
    table = read_label_table(cohort / "labels" / "phantom_000.labels.json")
    segmentation = load_segmentation(tmp_path / "coarse.nii.gz", table, "coarse seg", volume)
    names, warnings = PGLSegmentationLogic().export_training_data([volume], [segmentation], ["liver", "spleen"],
                                                                  tmp_path / "data")
    image, label = nib.load(tmp_path / "data/images/CT.nii"), nib.load(tmp_path / "data/labels/CT.nii")
    assert image.shape == label.shape and np.allclose(image.affine, label.affine, atol=1e-4)
    assert names == ["liver", "spleen"] and set(np.unique(np.asarray(label.dataobj))) == {0, 1, 2}
    truth = np.asarray(nib.load(cohort / "labels" / "phantom_000.nii.gz").dataobj)
    exported = np.asarray(label.dataobj)
    assert dice_per_label(exported, np.where(truth <= 2, truth, 0), {1: "liver"})[1] > 0.8


def test_bad_selections_give_clear_messages(mrml, cohort, tmp_path):
    volume, segmentation = phantom_pair(mrml, cohort, 0)
    logic = PGLSegmentationLogic()
    empty = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Empty seg")
    with pytest.raises(NodeError, match="Empty seg: has no segments"):
        logic.finetune([volume], [empty], str(tmp_path / "m"), wait=True)
    with pytest.raises(NodeError, match=r"none of the chosen segments \(pancreas\) is drawn on CT 0"):
        logic.finetune([volume], [segmentation], str(tmp_path / "m"), segmentNames=["pancreas"], wait=True)
    blank = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Blank seg")
    blank.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    blank.GetSegmentation().AddEmptySegment("liver")
    with pytest.raises(NodeError, match=r"Blank seg: none of the chosen segments \(Segment_1\) is drawn on CT 0"):
        logic.finetune([volume], [blank], str(tmp_path / "m"), wait=True)
    with pytest.raises(NodeError, match="Select one or more"):
        logic.finetune([], [], str(tmp_path / "m"), wait=True)
    with pytest.raises(NodeError, match="is not a PGL model folder"):
        logic.segment(volume, str(tmp_path))
    with pytest.raises(NodeError, match="Choose an input volume"):
        logic.segment(None, str(tmp_path))
    assert not (tmp_path / "m").exists()


def test_engine_failure_surfaces_its_message(mrml, cohort, tmp_path):
    volume, segmentation = phantom_pair(mrml, cohort, 0)
    logic = PGLSegmentationLogic()
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "thesis.txt").write_text("mine")
    with pytest.raises(EngineError, match="already holds other files"):
        logic.finetune([volume], [segmentation], str(tmp_path / "m"), steps=1, device="cpu",
                       extraArgs=["--workers", "0"], wait=True)
    assert (tmp_path / "m" / "thesis.txt").read_text() == "mine"


def test_exports_leave_no_helper_nodes_and_results_follow_the_volume_transform(mrml, cohort, tmp_path):
    volume, segmentation = phantom_pair(mrml, cohort, 0)
    transform = mrml.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    volume.SetAndObserveTransformNodeID(transform.GetID())
    before = mrml.scene.GetNumberOfNodes()
    PGLSegmentationLogic().export_training_data([volume], [segmentation], ["liver"], tmp_path / "data")
    assert mrml.scene.GetNumberOfNodes() == before
    assert not [n.GetName() for n in mrml.scene.GetNodesByClass("vtkMRMLColorTableNode") if "__pgl" in n.GetName()]
    table = read_label_table(cohort / "labels" / "phantom_000.labels.json")
    result = load_segmentation(cohort / "labels" / "phantom_000.nii.gz", table, "result", volume)
    assert result.GetTransformNodeID() == transform.GetID()
    assert mrml.scene.GetNumberOfNodes() == before + 2  # the segmentation and its display node


@pytest.mark.slow
def test_refine_from_the_console_continues_the_model_and_refills_the_node(mrml, cohort, seg_model, tmp_path):
    volume, truth = phantom_pair(mrml, cohort, 2)
    logic = PGLSegmentationLogic()
    result = logic.segment(volume, str(seg_model), device="cpu")
    replace_segments(result, truth)
    refined = logic.refine(volume, result, str(seg_model), steps=3, device="cpu",
                           extraArgs=["--workers", "0", "--cache-dir", str(tmp_path / "cache")], wait=True)
    assert refined.startswith(f"{seg_model} refined ") and logic.models[-1] == refined
    assert Path(f"{seg_model}/pgl_model.json").is_file()  # the model refined is kept
    metadata = json.loads((Path(refined) / "pgl_model.json").read_text())
    assert metadata["init"]["transfer"] == "continued" and metadata["lineage"][-1]["cases"] == ["CT_2"]
    nodes = mrml.scene.GetNumberOfNodes()
    assert logic.segment(volume, refined, device="cpu", into=result) is result
    assert mrml.scene.GetNumberOfNodes() == nodes and result.GetSegmentation().GetNumberOfSegments() >= 3
    with pytest.raises(NodeError, match="is not a PGL segmentation model"):
        logic.refine(volume, result, str(tmp_path), wait=True)


def test_exported_cases_are_named_after_their_volumes_uniquely(mrml, cohort):
    from PGLSegmentationLib.logic import case_names

    volumes = [mrml.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name) for name in ("CT 1", "CT_1", "ct/1", "..")]
    assert case_names(volumes) == ["CT_1", "CT_1_2", "ct_1_3", "case"]


def test_a_run_stopped_before_its_first_checkpoint_is_recognised_beside_a_stale_lock(tmp_path):
    from PGLCommon.output_folders import holds_pgl_run

    run = tmp_path / "run"
    run.mkdir()
    (run / "train_log.jsonl").write_text("{}\n")
    (run / ".pgl-run.lock").write_text("{}")  # left by an engine that was killed
    (run / ".tmp-1-ab-latest.pt").write_bytes(b"")
    assert holds_pgl_run(str(run))
    (run / "notes.txt").write_text("mine")
    assert not holds_pgl_run(str(run))


@pytest.mark.parametrize("into", [False, True], ids=["new node", "into"])
def test_results_on_a_transformed_volume_cover_exactly_the_engine_labels(mrml, cohort, into):
    """Under a rotation + translation, the segments exported back onto the volume's grid equal the label map."""
    import SimpleITK as sitk

    volume, segmentation = phantom_pair(mrml, cohort, 0)
    transform = mrml.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    moved = vtk.vtkTransform()
    moved.Translate(37.0, -21.0, 12.5)
    moved.RotateWXYZ(23.0, 0.3, 0.5, 0.8)
    transform.SetMatrixTransformToParent(moved.GetMatrix())
    volume.SetAndObserveTransformNodeID(transform.GetID())
    if into:
        segmentation.SetAndObserveTransformNodeID(transform.GetID())  # as a result placed earlier would be
    path = cohort / "labels" / "phantom_000.nii.gz"
    engine = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    table = read_label_table(cohort / "labels" / "phantom_000.labels.json")
    result = load_segmentation(path, table, "result", volume, into=segmentation if into else None)
    assert result.GetTransformNodeID() == transform.GetID()
    names = [table[str(v)]["name"] for v in sorted(int(k) for k in table)]
    back = labels_on_volume(mrml, result, volume, names)
    values = np.array([0] + sorted(int(k) for k in table))
    assert np.count_nonzero(engine) > 100
    assert np.count_nonzero(values[back] != engine) == 0
    # the reference geometry is the volume's own grid (recorded once, not moved by the transform again)
    expected = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    expected.SetAndObserveTransformNodeID(transform.GetID())
    expected.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    key = "Reference image geometry"
    assert result.GetSegmentation().GetConversionParameter(key) == \
        expected.GetSegmentation().GetConversionParameter(key)


def test_partial_labels_export_what_each_case_labels(mrml, cohort, tmp_path):
    """A segment a pair lacks, or has empty on its volume, is left out of that case's label table (not taught as
    background there); the notes say which case labels what."""
    (first, liver_only), (second, spleen_only) = phantom_pair(mrml, cohort, 0), phantom_pair(mrml, cohort, 1)
    for node, drop in ((liver_only, ("spleen",)), (spleen_only, ("right kidney", "left kidney", "tumour"))):
        segmentation = node.GetSegmentation()
        for name in drop:
            segmentation.RemoveSegment(segmentation.GetSegmentIdBySegmentName(name))
    segmentation = spleen_only.GetSegmentation()
    segmentation.RemoveSegment(segmentation.GetSegmentIdBySegmentName("liver"))
    segmentation.AddEmptySegment("liver_id", "liver")  # present but empty
    names, notes = PGLSegmentationLogic().export_training_data([first, second], [liver_only, spleen_only],
                                                               ["liver", "spleen"], tmp_path / "data")
    tables = [json.loads((tmp_path / "data" / "labels" / f"{case}.labels.json").read_text())["labels"]
              for case in ("CT_0", "CT_1")]
    assert [{k: v["name"] for k, v in t.items()} for t in tables] == [{"1": "liver"}, {"2": "spleen"}]
    assert tables[0]["1"]["color"] == [221, 130, 101]
    assert notes == ["CT 0 labels liver, not spleen (absent or empty in Seg 0): there, it is left unlabelled, not "
                     "taught as background",
                     "CT 1 labels spleen, not liver (absent or empty in Seg 1): there, it is left unlabelled, not "
                     "taught as background"]
    from pgl_engine.data.labels import labelled_values

    assert labelled_values(tmp_path / "data" / "labels" / "CT_0.nii") == {1}


ANSWER_DONE = """import json, sys
args = sys.argv[1:]
print(json.dumps({"event": "done", "model_dir": args[args.index("--out") + 1] if "--out" in args else ""}), flush=True)
"""


def answering_engine(seen: list):
    """Jobs whose engine answers `done` at once; each job's (command, engine arguments) is appended to `seen`."""
    import sys

    from PGLCommon.jobs import EngineJob

    class StandIn(EngineJob):
        @classmethod
        def for_engine(cls, command, args, env=None, **options):
            job = super().for_engine(command, args, env=env, **options)
            seen.append((command, [str(a) for a in args]))
            job.args = [sys.executable, "-c", ANSWER_DONE, *job.args[job.args.index(command) + 1:]]
            return job

    return StandIn


def test_refine_from_the_console_trains_for_the_engines_refine_budget_unless_told(mrml, cohort, seg_model, tmp_path):
    """No steps and no seconds: neither --steps nor --minutes, so the engine's refine budget (REFINE_MINUTES of
    wall clock, as it continues a segmentation model) applies; seconds and steps pass through."""
    seen = []
    logic = PGLSegmentationLogic(job_class=answering_engine(seen))
    volume, truth = phantom_pair(mrml, cohort, 2)
    for options, expected in (({}, {}), ({"seconds": 12}, {"--minutes": "0.2"}), ({"steps": 3}, {"--steps": "3"})):
        out = str(tmp_path / f"refined {len(seen)}")
        assert logic.refine(volume, truth, str(seg_model), outputDir=out, wait=True, **options) == out
        command, args = seen[-1]
        assert command == "finetune" and args[args.index("--init") + 1] == str(seg_model)
        assert {a: args[args.index(a) + 1] for a in ("--steps", "--minutes") if a in args} == expected
    with pytest.raises(NodeError, match="seconds must be > 0"):
        logic.refine(volume, truth, str(seg_model), seconds=-1, wait=True)


def test_exports_from_the_console(mrml, cohort, seg_model, tmp_path):
    """exportModel and exportForNNUNet with wait=True return the folders they wrote; bad input is refused with a
    message before the engine runs."""
    logic = PGLSegmentationLogic()
    bundle = logic.exportModel(str(seg_model), str(tmp_path / "bundle"), wait=True)
    assert bundle == str(tmp_path / "bundle") and (tmp_path / "bundle" / "models" / "model.pt").is_file()
    with pytest.raises(NodeError, match="Choose the segmentation model to export"):
        logic.exportModel("", str(tmp_path / "b2"))
    with pytest.raises(NodeError, match="is not a PGL model folder"):
        logic.exportModel(str(tmp_path), str(tmp_path / "b2"))
    with pytest.raises(NodeError, match="Choose a new or empty folder for the MONAI Bundle"):
        logic.exportModel(str(seg_model), "")
    pairs = [phantom_pair(mrml, cohort, i) for i in (0, 1)]
    raw = tmp_path / "raw"
    dataset = logic.exportForNNUNet([v for v, _ in pairs], [s for _, s in pairs], str(raw), name="Liver",
                                    segmentNames=["liver"], keepCaseNames=True, wait=True)
    assert dataset == str(raw / "Dataset500_Liver")
    data = json.loads((raw / "Dataset500_Liver" / "dataset.json").read_text())
    assert data["labels"] == {"background": 0, "liver": 1} and data["numTraining"] == 2
    assert sorted(p.name for p in (raw / "Dataset500_Liver" / "labelsTr").iterdir()) == ["CT_0.nii.gz", "CT_1.nii.gz"]
    with pytest.raises(NodeError, match="must be from 1 to 999"):
        logic.exportForNNUNet([pairs[0][0]], [pairs[0][1]], str(raw), datasetId=1000)
    from PGLSegmentationLib.logic import next_dataset_id

    assert next_dataset_id(str(raw)) == 501 and next_dataset_id(str(tmp_path / "none")) == 500
