"""Result segments named like a known structure carry Slicer's standard terminology entry (real MRML, slicer-core);
other names carry none of ours."""

from PGLCommon.nodes import load_segmentation, read_label_table
from PGLCommon.terminology import apply_terminology

CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"


def tag(segment) -> str:
    import vtk

    value = vtk.reference("")
    segment.GetTag(segment.GetTerminologyEntryTagName(), value)
    return str(value)


def parsed(entry: str):
    """The entry read back by Slicer's own terminology logic (fails if Slicer cannot parse it)."""
    import slicer

    result = slicer.vtkSlicerTerminologyEntry()
    assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(entry, result), entry
    return result


def test_known_names_get_their_standard_code_and_other_names_keep_theirs(mrml):
    node = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "result")
    segmentation = node.GetSegmentation()
    for name in ("liver", "left kidney", "liver tumour"):
        segmentation.AddEmptySegment(name.replace(" ", "_"), name)
    liver, kidney, tumour = (segmentation.GetSegment(n) for n in ("liver", "left_kidney", "liver_tumour"))
    tumour_before = tag(tumour)

    assert apply_terminology(node) == ["liver", "left kidney"]

    assert tag(liver) == (f"{CONTEXT}~SCT^123037004^Anatomical Structure~SCT^10200004^Liver~^^"
                          f"~Anatomic codes - DICOM master list~^^~^^")
    entry = parsed(tag(kidney))
    assert entry.GetTerminologyContextName() == CONTEXT
    assert (entry.GetTypeObject().GetCodingSchemeDesignator(), entry.GetTypeObject().GetCodeValue(),
            entry.GetTypeObject().GetCodeMeaning()) == ("SCT", "64033007", "Kidney")
    assert (entry.GetTypeModifierObject().GetCodeValue(), entry.GetTypeModifierObject().GetCodeMeaning()) == \
        ("7771000", "Left")
    assert tag(tumour) == tumour_before  # Slicer's own default, untouched
    assert "10200004" not in tag(tumour) and "Liver" not in tag(tumour)
    assert [liver.GetName(), kidney.GetName()] == ["liver", "left kidney"]  # names stay the model's


def test_a_result_read_from_the_engine_is_coded_and_keeps_it_in_a_saved_segmentation(mrml, cohort, tmp_path):
    import slicer

    volume = mrml.load_volume(cohort / "images" / "phantom_000.nii.gz", "CT")
    table = read_label_table(cohort / "labels" / "phantom_000.labels.json")  # liver, spleen, kidneys, tumour
    node = load_segmentation(cohort / "labels" / "phantom_000.nii.gz", table, "result", volume)
    apply_terminology(node)
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(tmp_path / "result.seg.nrrd"))
    assert storage.WriteData(node)
    again = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "again")
    assert storage.ReadData(again)
    segmentation = again.GetSegmentation()
    codes = {}
    for i in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(i)
        entry = parsed(tag(segment))
        modifier = entry.GetTypeModifierObject().GetCodeMeaning() or ""
        codes[segment.GetName()] = (entry.GetTypeObject().GetCodeValue(), modifier)
    assert codes == {"liver": ("10200004", ""), "spleen": ("78961009", ""),
                                   "right kidney": ("64033007", "Right"), "left kidney": ("64033007", "Left"),
                                   "tumour": ("85756007", "")}  # the tumour keeps Slicer's default (Tissue)
