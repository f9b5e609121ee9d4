"""Known anatomical structures: the one table that gives a label name its standard code and colour.

Codes, meanings and colours are those of Slicer's default terminology, the "3D Slicer General Anatomy list"
(Modules/Loadable/Terminologies/Resources/SegmentationCategoryTypeModifier-SlicerGeneralAnatomy.json, the same in
Slicer 5.8.1 and 5.10.0): SNOMED CT (scheme "SCT") codes, laterality as a type modifier.

A label name matches only as a whole, in any case, with spaces, underscores or hyphens, the side first or last
("left kidney", "Kidney_Left"): "liver tumour" is not the liver, and no code is better than a wrong one.
Imports only the standard library: the engine and the Slicer side (PGLCommon.terminology) both use it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Code:
    scheme: str  # coding scheme designator, e.g. "SCT" (SNOMED CT)
    value: str
    meaning: str


ANATOMICAL_STRUCTURE = Code("SCT", "123037004", "Anatomical Structure")
TISSUE = Code("SCT", "85756007", "Tissue")
SIDES = {"left": Code("SCT", "7771000", "Left"), "right": Code("SCT", "24028007", "Right")}


@dataclass(frozen=True)
class Structure:
    category: Code
    type: Code
    colour: tuple[int, int, int]  # Slicer's recommended display colour (RGB 0-255), the same for either side
    modifier: Code | None = None  # the side, for paired organs

    @property
    def standard_name(self) -> str:
        """"Liver", "Left kidney": the type's meaning, after its side."""
        if self.modifier is None:
            return self.type.meaning
        return f"{self.modifier.meaning} {self.type.meaning[:1].lower()}{self.type.meaning[1:]}"


# (names a label may carry, category, SNOMED CT code and meaning, colour, paired: takes left/right)
_ANATOMY = [
    (("liver",), ANATOMICAL_STRUCTURE, "10200004", "Liver", (221, 130, 101), False),
    (("spleen",), ANATOMICAL_STRUCTURE, "78961009", "Spleen", (157, 108, 162), False),
    (("kidney", "kidneys"), ANATOMICAL_STRUCTURE, "64033007", "Kidney", (185, 102, 83), True),
    (("pancreas",), ANATOMICAL_STRUCTURE, "15776009", "Pancreas", (249, 180, 111), False),
    (("aorta",), ANATOMICAL_STRUCTURE, "15825003", "Aorta", (224, 97, 76), False),
    (("lung", "lungs"), ANATOMICAL_STRUCTURE, "39607008", "Lung", (197, 165, 145), True),
    (("heart",), ANATOMICAL_STRUCTURE, "80891009", "Heart", (206, 110, 84), False),
    (("stomach",), ANATOMICAL_STRUCTURE, "69695003", "Stomach", (216, 132, 105), False),
    (("bladder", "urinary bladder"), ANATOMICAL_STRUCTURE, "89837001", "Bladder", (222, 154, 132), False),
    (("gallbladder", "gall bladder"), ANATOMICAL_STRUCTURE, "28231008", "Gallbladder", (139, 150, 98), False),
    (("oesophagus", "esophagus"), ANATOMICAL_STRUCTURE, "32849002", "Esophagus", (211, 171, 143), False),
    (("duodenum",), ANATOMICAL_STRUCTURE, "38848004", "Duodenum", (255, 253, 229), False),
    (("colon",), ANATOMICAL_STRUCTURE, "71854001", "Colon", (204, 168, 143), False),
    (("small intestine", "small bowel"), ANATOMICAL_STRUCTURE, "30315005", "Small Intestine", (205, 167, 142),
     False),
    (("adrenal gland", "adrenal glands", "adrenal", "adrenals"), ANATOMICAL_STRUCTURE, "23451007",
     "Adrenal gland", (249, 186, 150), True),
    (("trachea",), ANATOMICAL_STRUCTURE, "44567001", "Trachea", (182, 228, 255), False),
    (("brain",), ANATOMICAL_STRUCTURE, "12738006", "Brain", (250, 250, 225), False),
    (("spinal cord",), ANATOMICAL_STRUCTURE, "2748008", "Spinal cord", (244, 214, 49), False),
    (("thyroid", "thyroid gland"), ANATOMICAL_STRUCTURE, "69748006", "Thyroid", (62, 162, 114), False),
    (("prostate",), ANATOMICAL_STRUCTURE, "41216001", "Prostate", (230, 158, 140), False),
    (("uterus",), ANATOMICAL_STRUCTURE, "35039007", "Uterus", (255, 181, 158), False),
    (("ovary", "ovaries"), ANATOMICAL_STRUCTURE, "15497006", "Ovary", (213, 141, 113), True),
    (("sternum",), ANATOMICAL_STRUCTURE, "56873002", "Sternum", (244, 217, 154), False),
    (("skull",), ANATOMICAL_STRUCTURE, "89546000", "Skull", (241, 213, 144), False),
    (("mandible",), ANATOMICAL_STRUCTURE, "91609006", "Mandible", (222, 198, 101), False),
    (("bone",), TISSUE, "272673000", "Bone", (241, 214, 145), False),
]
_BY_NAME = {name: row for row in _ANATOMY for name in row[0]}


def words(name: str) -> list[str]:
    """Lower-case words of a label name; spaces, underscores, hyphens and other punctuation separate them."""
    return re.sub(r"[^a-z0-9]+", " ", name.lower()).split()


def find_structure(name: str) -> Structure | None:
    """The known structure a label name is, as a whole, or None (never a guess from part of the name)."""
    parts = words(name)
    side = None
    if len(parts) > 1 and parts[0] in SIDES:
        side = parts.pop(0)
    elif len(parts) > 1 and parts[-1] in SIDES:
        side = parts.pop()
    row = _BY_NAME.get(" ".join(parts))
    if row is None or (side is not None and not row[5]):  # a side on an unpaired organ: not a name we know
        return None
    _, category, value, meaning, colour, _ = row
    return Structure(category, Code("SCT", value, meaning), colour, SIDES[side] if side else None)
