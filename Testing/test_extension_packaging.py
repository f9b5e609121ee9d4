"""Extension packaging: CMake configure against a stand-in of Slicer's macros, .ui widget names, metadata."""
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STUB = ROOT / "Testing" / "cmake_stub"
MODULES = ("PGLPretrain", "PGLSegmentation")
PACKAGED = ["CMakeLists.txt", "PGLPretrain", "PGLSegmentation", "pgl_engine", "PGLCommon", "Resources"]


def configure(source: Path, build: Path) -> subprocess.CompletedProcess:
    if shutil.which("cmake") is None:
        pytest.fail("cmake is needed for the packaging check (installed by .ci/run)")
    return subprocess.run(["cmake", "-S", str(source), "-B", str(build), f"-DSlicer_DIR={STUB}", "-DBUILD_TESTING=ON"],
                          capture_output=True, text=True, timeout=300)


def copy_extension(target: Path) -> Path:
    target.mkdir(parents=True)
    for name in PACKAGED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, target / name)
    return target


def test_extension_configures_with_every_file_listed(tmp_path):
    result = configure(ROOT, tmp_path / "build")
    assert result.returncode == 0, result.stdout + result.stderr
    report = (tmp_path / "build" / "slicer_stub_report.txt").read_text().splitlines()
    assert "module PGLPretrain" in report and "module PGLSegmentation" in report
    assert "unittest PGLPretrain.py" in report and "unittest PGLSegmentation.py" in report
    assert "python PGLShared pgl_engine;PGLCommon" in report


@pytest.mark.parametrize("change, message", [
    (lambda root: (root / "PGLPretrain" / "PGLPretrainLib" / "extra.py").write_text("x = 1\n"),
     "extra.py exists but is not listed"),
    (lambda root: (root / "PGLSegmentation" / "PGLSegmentationLib" / "widget.py").unlink(),
     "widget.py is listed in CMakeLists.txt but missing"),
    (lambda root: (root / "pgl_engine" / "new_feature.py").write_text("x = 1\n"), "new_feature.py exists but is not listed"),
    (lambda root: (root / "PGLSegmentation" / "Resources" / "UI" / "Extra.ui").write_text("<ui/>"),
     "Extra.ui exists but is not listed"),
])
def test_configure_fails_on_missing_or_unlisted_files(tmp_path, change, message):
    source = copy_extension(tmp_path / "src")
    change(source)
    result = configure(source, tmp_path / "build")
    assert result.returncode != 0
    assert message in " ".join((result.stdout + result.stderr).split())  # CMake wraps long messages


def ui_widget_names(path: Path) -> set[str]:
    return {w.get("name") for w in ET.parse(path).iter("widget")}


@pytest.mark.parametrize("module", MODULES)
def test_every_widget_the_code_looks_up_exists_in_the_ui_file(module):
    code = "".join(path.read_text() for path in (ROOT / module / f"{module}Lib").glob("*.py"))  # panel sections too
    used = set(re.findall(r"\bui\.(\w+)", code))
    declared = ui_widget_names(ROOT / module / "Resources" / "UI" / f"{module}.ui")
    assert used, "the widget looks nothing up?"
    assert used <= declared, f"missing in the .ui file: {sorted(used - declared)}"


@pytest.mark.parametrize("module", MODULES)
def test_module_icons_and_thin_module_files(module):
    icon = ROOT / module / "Resources" / "Icons" / f"{module}.png"
    assert icon.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    source = (ROOT / module / f"{module}.py").read_text()
    assert f"class {module}Test(ScriptedLoadableModuleTest)" in source
    assert f'resourcePath("UI/{module}.ui")' in source
    assert len(source.splitlines()) < 100  # the module file stays thin; the rest lives in its Lib package


def test_index_entry_and_extension_metadata():
    entry = json.loads((ROOT / "PGL.json").read_text())
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert re.search(r"^project\(PGL\)", cmake, re.M) and (ROOT / "PGL.json").stem == "PGL"
    assert entry["category"] == "Segmentation" and entry["build_dependencies"] == ["PyTorch"]
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in cmake
    png = (ROOT / "Resources" / "PGL.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") == 128 == int.from_bytes(png[20:24], "big")
    assert (ROOT / "LICENSE").is_file() and any((ROOT / "Resources" / "Screenshots").glob("*.png"))


def test_engine_never_imports_slicer_or_qt():
    for path in (ROOT / "pgl_engine").rglob("*.py"):
        assert not re.search(r"^\s*(import|from)\s+(slicer|qt|ctk|PGLCommon)\b", path.read_text(), re.M), path


def test_each_module_loads_without_the_other():
    for module, other in (("PGLPretrain", "PGLSegmentation"), ("PGLSegmentation", "PGLPretrain")):
        for path in (ROOT / module).rglob("*.py"):
            assert not re.search(rf"^\s*(import|from)\s+{other}", path.read_text(), re.M), path


def test_every_screenshot_url_is_a_file_of_the_repository():
    urls = re.search(r'set\(EXTENSION_SCREENSHOTURLS "([^"]+)"\)', (ROOT / "CMakeLists.txt").read_text()).group(1)
    for url in urls.split():
        path = ROOT / url.split("/main/", 1)[1]
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", url
