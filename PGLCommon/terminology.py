"""Standard terminology on result segments: Slicer shows the SNOMED CT code and standard name of a known structure.

Slicer keeps a segment's terminology in its "TerminologyEntry" tag (vtkSegment::GetTerminologyEntryTagName; the
vtkSegment.SetTerminology of 5.10 sets that same tag, 5.8 has only the tag): seven fields joined by '~' --
context, category, type, type modifier, region context, region, region modifier -- each code written
scheme^value^meaning (vtkSlicerTerminologiesModuleLogic::SerializeTerminologyEntry, Slicer 5.8.1 and 5.10.0).
The structures and their codes are the engine's table (pgl_engine.data.structures), shared with the engine's colours.
"""
from __future__ import annotations

from pgl_engine.data.structures import Code, Structure, find_structure

CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"  # Slicer's default terminology
REGION_CONTEXT = "Anatomic codes - DICOM master list"  # what Slicer's own default entry names (no region set)


def _code(code: Code | None) -> str:
    return f"{code.scheme}^{code.value}^{code.meaning}" if code else "^^"


def terminology_entry(structure: Structure) -> str:
    """The structure as Slicer's serialized terminology entry."""
    return "~".join([CONTEXT, _code(structure.category), _code(structure.type), _code(structure.modifier),
                     REGION_CONTEXT, _code(None), _code(None)])


def apply_terminology(segmentation_node) -> list[str]:
    """Give each segment whose whole name is a known structure ("liver", "left kidney") its standard terminology;
    returns their names. Other segments ("liver tumour") keep the terminology they have: no code is better than a
    wrong one. Names and colours are left alone (fine-tuning finds segments by name)."""
    segmentation = segmentation_node.GetSegmentation()
    coded = []
    for i in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(i)
        structure = find_structure(segment.GetName() or "")
        if structure is not None:
            segment.SetTag(segment.GetTerminologyEntryTagName(), terminology_entry(structure))
            coded.append(segment.GetName())
    return coded
