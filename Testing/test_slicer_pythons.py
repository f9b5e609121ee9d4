"""The Slicer-side code and the engine import, and every `pgl <command> --help` parses, on each Python the
supported Slicer versions embed (5.8: 3.9; 5.10: 3.12), without psutil (Slicer ships none). torch and MONAI are
stood in for there; numpy, scipy, SimpleITK, nibabel, tqdm and safetensors are real (Testing/helpers)."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # builds a virtual environment per Python on first use

ROOT = Path(__file__).resolve().parents[1]
SLICER_PYTHON_PROBE = ROOT / "Testing" / "helpers" / "slicer_python_probe.py"
SLICER_PYTHONS = {"3.9": "Slicer 5.8 (and 5.6)", "3.12": "Slicer 5.10"}
LIGHT_PACKAGES = ["numpy", "scipy", "nibabel", "SimpleITK", "pydicom", "tqdm", "safetensors"]


def pyenv_python(version: str) -> Path | None:
    pyenv = shutil.which("pyenv")
    root = Path(subprocess.run([pyenv, "root"], capture_output=True, text=True).stdout.strip()) if pyenv else None
    found = sorted(root.glob(f"versions/{version}.*/bin/python{version}")) if root else []
    return found[-1] if found else None


def probe_environment(version: str) -> Path:
    """A venv of that Python with the light packages, kept under .venv/ between runs."""
    venv = ROOT / ".venv" / f"compat-{version}"
    python = venv / "bin" / "python"
    marker = venv / ".ready"
    if not marker.is_file() or marker.read_text() != " ".join(LIGHT_PACKAGES):  # built, with these packages
        base = pyenv_python(version)
        if base is None:
            pytest.skip(f"Python {version} is not installed (pyenv)")
        subprocess.run([str(base), "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *LIGHT_PACKAGES], check=True, timeout=900)
        marker.write_text(" ".join(LIGHT_PACKAGES))
    return python


@pytest.mark.parametrize("version", sorted(SLICER_PYTHONS))
def test_imports_and_every_help_parse_on_the_python_slicer_embeds(version):
    result = subprocess.run([str(probe_environment(version)), str(SLICER_PYTHON_PROBE)], capture_output=True,
                            text=True, timeout=300)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["python"].startswith(version + ".")
    assert not report["psutil"], "the probe must run without psutil, as Slicer's Python does"
    assert report["failed"] == {}, "\n".join(f"{k}: {v}" for k, v in report["failed"].items())
    modules = {"pgl_engine.cli", "pgl_engine.contract", "pgl_engine.data.structures", "PGLCommon.jobs",
               "PGLCommon.dependencies", "PGLCommon.terminology", "PGLPretrain", "PGLSegmentation",
               "PGLPretrainLib.widget", "PGLSegmentationLib.widget", "PGLCommon.errors", "PGLCommon.job_chain",
               "PGLCommon.panel", "PGLCommon.panel_fields", "PGLSegmentationLib.parameters", "PGLSegmentationLib.refine"}
    assert modules <= set(report["imported"])
    assert set(report["help"]) == {"pgl", "phantom", "pretrain", "finetune", "segment", "evaluate", "scan-list",
                                   "compare", "check-pretraining", "demo", "export", "export-dataset"}
