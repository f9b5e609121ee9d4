"""The table of known structures: whole label names only (with their side), never part of one; colours from it."""
import pytest

from pgl_engine.data.labels import PALETTE, colour_for, label_table
from pgl_engine.data.structures import find_structure


@pytest.mark.parametrize("name, code, side, standard", [
    ("liver", "10200004", None, "Liver"),
    ("  Liver ", "10200004", None, "Liver"),
    ("left kidney", "64033007", "Left", "Left kidney"),
    ("Kidney_Left", "64033007", "Left", "Left kidney"),
    ("kidney-right", "64033007", "Right", "Right kidney"),
    ("RIGHT  KIDNEY", "64033007", "Right", "Right kidney"),
    ("kidneys", "64033007", None, "Kidney"),
    ("urinary_bladder", "89837001", None, "Bladder"),
    ("oesophagus", "32849002", None, "Esophagus"),
    ("esophagus", "32849002", None, "Esophagus"),
    ("adrenal_gland_left", "23451007", "Left", "Left adrenal gland"),
    ("lung left", "39607008", "Left", "Left lung"),
])
def test_a_known_structure_is_found_by_its_whole_name_in_any_spelling(name, code, side, standard):
    structure = find_structure(name)
    assert structure is not None, f"{name!r} should be a known structure"
    assert structure.type.scheme == "SCT" and structure.type.value == code
    assert (structure.modifier.meaning if structure.modifier else None) == side
    assert structure.standard_name == standard


@pytest.mark.parametrize("name", [
    "liver tumour", "liver_tumor", "tumour", "liver lesion", "livers", "left liver", "liver left",
    "left ventricle", "right lobe of liver", "kidney cyst", "left kidney cyst", "left", "", "bones of the skull",
    "left kidney left", "aortic valve", "spleen 2",
])
def test_part_of_a_name_is_no_structure(name):
    assert find_structure(name) is None, f"{name!r} must not be coded: it is not (only) a known structure"


def test_colours_come_from_whole_names_and_unknown_names_take_the_palette():
    assert colour_for("liver", 1) == (221, 130, 101) == find_structure("liver").colour
    assert colour_for("liver tumour", 2) == PALETTE[1]  # not the liver's colour
    table = label_table({1: "liver", 2: "right kidney", 3: "left kidney", 4: "liver tumour"})
    colours = [tuple(table[k]["color"]) for k in ("1", "2", "3", "4")]
    assert colours[:2] == [(221, 130, 101), (185, 102, 83)]
    assert len(set(colours)) == 4  # the second kidney and the tumour each get a colour of their own
