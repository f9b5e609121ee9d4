"""One contract between the engine and the Slicer side (pgl_engine/contract.py): it imports without torch, numpy
or Qt; the engine's options, the panel logic, the .ui files and the panel itself show its defaults; and no other
shipped module spells its exit codes and file names again."""
import ast
import dataclasses
import inspect
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pgl_engine import contract
from pgl_engine.config import FinetuneConfig, PretrainConfig

ROOT = Path(__file__).resolve().parents[1]
SLICER_SIDE = ("PGLCommon", "PGLPretrain", "PGLSegmentation")


def test_the_contract_imports_nothing_heavy():
    code = ("import sys; import pgl_engine.contract; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'numpy', 'monai', 'qt', 'PySide6', 'PyQt5', 'slicer', 'vtk')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    imports = [node for node in ast.walk(ast.parse((ROOT / "pgl_engine" / "contract.py").read_text()))
               if isinstance(node, (ast.Import, ast.ImportFrom))]
    modules = {alias.name for node in imports if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module for node in imports if isinstance(node, ast.ImportFrom)}
    assert modules <= {"__future__", "math"}, "standard library only, and no other pgl_engine module"


def field_default(config: type, name: str):
    field = {f.name: f for f in dataclasses.fields(config)}[name]
    return field.default_factory() if field.default is dataclasses.MISSING else field.default


PRETRAIN_OPTIONS = {"method": "PRETRAIN_METHOD", "steps": "PRETRAIN_STEPS", "patch_size": "PRETRAIN_PATCH_SIZE",
                    "spacing": "PRETRAIN_SPACING_MM", "batch_size": "BATCH_SIZE", "device": "DEVICE"}


@pytest.mark.parametrize("option, name", sorted(PRETRAIN_OPTIONS.items()))
def test_the_engine_options_default_to_the_contract(option, name):
    assert field_default(PretrainConfig, option) == getattr(contract, name)
    if option in ("batch_size", "device"):  # fine-tuning shares these (steps and grid are its own)
        assert field_default(FinetuneConfig, option) == getattr(contract, name)


def test_fine_tuning_defaults_to_the_fine_grid_and_pretraining_to_the_coarse_one_the_chooser_knows():
    from pgl_engine.finetuning.budget_choice import GRIDS

    fine, coarse = GRIDS
    assert (field_default(FinetuneConfig, "spacing"), field_default(FinetuneConfig, "patch_size")) \
        == (contract.SPACING_MM, contract.PATCH_SIZE) == (fine.spacing, fine.patch_size)
    assert (contract.PRETRAIN_SPACING_MM, contract.PRETRAIN_PATCH_SIZE) == (coarse.spacing, coarse.patch_size)


def test_the_pretrain_logic_defaults_to_the_contract():
    from PGLPretrainLib.logic import PGLPretrainLogic

    expected = {"method": contract.PRETRAIN_METHOD, "steps": contract.PRETRAIN_STEPS,
                "patchSize": contract.PRETRAIN_PATCH_SIZE, "spacing": contract.PRETRAIN_SPACING_MM, "device": contract.DEVICE,
                "batchSize": contract.BATCH_SIZE}
    for function in (PGLPretrainLogic.arguments, PGLPretrainLogic.pretrain):
        parameters = inspect.signature(function).parameters
        assert {name: parameters[name].default for name in expected} == expected


def ui_values(module: str) -> dict:
    """Each spin box of the module's .ui file: its designer value."""
    values = {}
    for widget in ET.parse(ROOT / module / "Resources" / "UI" / f"{module}.ui").iter("widget"):
        value = widget.find("property[@name='value']/*")
        if widget.get("class") in ("QSpinBox", "QDoubleSpinBox") and value is not None:
            values[widget.get("name")] = float(value.text)
    return values


def test_the_ui_files_hold_the_contract_values():
    pretrain, segmentation = ui_values("PGLPretrain"), ui_values("PGLSegmentation")
    assert pretrain["stepsSpinBox"] == contract.PRETRAIN_STEPS
    assert [pretrain[f"patch{axis}SpinBox"] for axis in "XYZ"] == list(contract.PRETRAIN_PATCH_SIZE)
    assert [pretrain[f"spacing{axis}SpinBox"] for axis in "XYZ"] == list(contract.PRETRAIN_SPACING_MM)
    assert segmentation["finetuneMinutesSpinBox"] == contract.DEFAULT_FINETUNE_MINUTES
    assert segmentation["refineSecondsSpinBox"] == round(contract.REFINE_MINUTES * 60)
    assert segmentation["checkStepsSpinBox"] == contract.CHECK_PRETRAINING_STEPS


def test_the_pretrain_panel_shows_the_contract_whatever_the_ui_file_says(slicer_app, monkeypatch):
    changed = dict(PRETRAIN_METHOD="byol", PRETRAIN_STEPS=123, PRETRAIN_PATCH_SIZE=(32, 48, 16),
                   PRETRAIN_SPACING_MM=(2.0, 2.5, 4.0),
                   DEVICE="cpu")
    for name, value in changed.items():
        monkeypatch.setattr(contract, name, value)
    settings = slicer_app.load_module("PGLPretrain").panel.settings()
    assert (settings["method"], settings["steps"], settings["patchSize"], settings["spacing"], settings["device"]) \
        == ("byol", 123, (32, 48, 16), (2.0, 2.5, 4.0), "cpu")


def string_constants(path: Path) -> set:
    return {node.value for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)}


def exit_code_definitions(path: Path) -> list[str]:
    return [target.id for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Assign)
            for target in node.targets if isinstance(target, ast.Name) and target.id.startswith("EXIT_")
            and isinstance(node.value, ast.Constant)]


def shipped(*folders: str) -> list[Path]:
    return [path for folder in folders for path in sorted((ROOT / folder).rglob("*.py"))
            if path != ROOT / "pgl_engine" / "contract.py"]


def test_exit_codes_and_model_file_names_are_defined_only_in_the_contract():
    model_files = {contract.MODEL_METADATA_FILE, contract.MODEL_WEIGHTS_FILE, contract.MODEL_FORMAT}
    for path in shipped("pgl_engine", *SLICER_SIDE):
        assert not exit_code_definitions(path), f"{path.relative_to(ROOT)}: import the exit codes from the contract"
        assert not string_constants(path) & model_files, f"{path.relative_to(ROOT)}: use the contract's names"


def test_the_slicer_side_spells_none_of_the_contract_strings():
    names = {contract.CHECKPOINT_DIR, contract.TRAIN_LOG_FILE, contract.LABEL_TABLE_SUFFIX,
             contract.CONFIGURATION_CHOSEN, contract.SEGMENT_RATES_KEY}
    for path in shipped(*SLICER_SIDE):
        assert not string_constants(path) & names, f"{path.relative_to(ROOT)}: import it from pgl_engine.contract"


def test_the_engine_modules_outside_the_contract_agree_with_it():
    from pgl_engine.data.labels import sidecar_path
    from pgl_engine.training.checkpoint import CHECKPOINT_DIR

    assert CHECKPOINT_DIR == contract.CHECKPOINT_DIR
    assert sidecar_path(Path("labels/case_1.nii.gz")).name == "case_1" + contract.LABEL_TABLE_SUFFIX
    names = {contract.CHECKPOINT_DIR, contract.TRAIN_LOG_FILE, contract.LABEL_TABLE_SUFFIX,
             contract.CONFIGURATION_CHOSEN, contract.SEGMENT_RATES_KEY, contract.MODEL_METADATA_FILE,
             contract.MODEL_WEIGHTS_FILE}
    for path in sorted((ROOT / "pgl_engine").rglob("*.py")):
        if path.name != "contract.py":
            assert not string_constants(path) & names, f"{path.relative_to(ROOT)}: import it from pgl_engine.contract"
    chooser = ROOT / "pgl_engine" / "finetuning" / "budget_choice.py"
    assert f"{contract.CONFIGURATION_CHOSEN} for this machine" in chooser.read_text()


def test_the_segment_time_formula_is_the_contract_s_on_both_sides():
    from pgl_engine.inference.time_estimate import STARTUP_S, estimate_seconds
    from PGLCommon.model_info import expected_segment_seconds

    metadata = {"spacing": [3.2, 3.2, 6.0], contract.SEGMENT_RATES_KEY: {
        "device": "cpu", "input_s_per_megavoxel": 0.12, "network_s_per_megavoxel": 1.7}}  # no startup_s: default
    expected = contract.SEGMENT_STARTUP_S + 0.12 * 512 * 512 * 200 / 1e6 + 1.7 * 125 * 125 * 84 / 1e6
    assert STARTUP_S == contract.SEGMENT_STARTUP_S
    for estimate in (estimate_seconds, expected_segment_seconds, contract.segment_seconds):
        assert estimate(metadata, (512, 512, 200), (0.78, 0.78, 2.5)) == pytest.approx(expected)


SLICER_ONLY_EVENTS = {"log"}  # the Slicer side's name for a line of the engine's output that is not JSON


def event_names(path: Path) -> set[str]:
    """The event names a file writes or tests for: emit(callback, NAME, ...), {"event": NAME}, and comparisons of
    event.get("event"), or of a variable assigned from it, with NAME or a tuple of names."""
    names = set()
    tree = ast.parse(path.read_text())

    def constants(node):
        items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
        return {n.value for n in items if isinstance(n, ast.Constant) and isinstance(n.value, str)}

    def is_get_event(node):
        return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value == "event")

    holders = {target.id for node in ast.walk(tree) if isinstance(node, ast.Assign) and is_get_event(node.value)
               for target in node.targets if isinstance(target, ast.Name)}

    def is_event_lookup(node):
        return is_get_event(node) or (isinstance(node, ast.Name) and node.id in holders)

    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "emit" and len(node.args) > 1:
            names |= constants(node.args[1])
        elif isinstance(node, ast.Dict):
            names |= {constants(v).pop() for k, v in zip(node.keys, node.values)
                      if isinstance(k, ast.Constant) and k.value == "event" and constants(v)}
        elif isinstance(node, ast.Compare) and is_event_lookup(node.left):
            for comparator in node.comparators:
                names |= constants(comparator)
    return names


def test_both_sides_use_only_the_contract_event_names_and_the_formats_table_lists_them():
    engine = set().union(*(event_names(p) for p in shipped("pgl_engine")))
    slicer = set().union(*(event_names(p) for p in shipped(*SLICER_SIDE)))
    assert engine and engine <= set(contract.EVENTS), engine - set(contract.EVENTS)
    assert {"progress", "done", "error", "cancelled"} <= slicer, slicer
    assert slicer <= set(contract.EVENTS) | SLICER_ONLY_EVENTS, slicer - set(contract.EVENTS) - SLICER_ONLY_EVENTS
    table = re.findall(r"^\| `([a-z]+)` \|", (ROOT / "docs" / "formats.md").read_text(), re.M)
    assert set(contract.EVENTS) <= set(table), set(contract.EVENTS) - set(table)


def test_emitting_an_event_the_contract_does_not_name_fails():
    from pgl_engine.progress import emit

    seen = []
    emit(seen.append, "warning", message="m")
    assert seen == [{"event": "warning", "message": "m"}]
    with pytest.raises(ValueError, match="unknown event 'warn'"):
        emit(seen.append, "warn", message="m")
