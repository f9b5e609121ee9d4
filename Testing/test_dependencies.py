"""First-use installation inside Slicer, with Slicer's installers and the installed versions stood in for: what is
missing or too old (and only that) is installed after one question, torch and Slicer's own packages are pinned,
failures become DependencyError, slicer.packaging is used when it can be imported (it is not an attribute until
then)."""
import subprocess
import sys
import types

import pytest

from PGLCommon import dependencies
from PGLCommon.dependencies import DependencyError, ensure_dependencies

CURRENT = {"torch": "2.5.1+cu121", "monai": "1.4.0", "nibabel": "5.2.1", "safetensors": "0.4.5", "scipy": "1.13.1",
           "tqdm": "4.66.0", "psutil": "6.0.0", "matplotlib": "3.9.0", "pydicom": "2.4.4"}


def installed(monkeypatch, versions: dict) -> dict:
    """importlib.metadata.version answering from `versions` (any case; a name not there is not installed)."""
    def version(name):
        try:
            return versions[name.lower()]
        except KeyError:
            raise dependencies.importlib.metadata.PackageNotFoundError(name) from None

    monkeypatch.setattr(dependencies.importlib.metadata, "version", version)
    return versions


@pytest.fixture
def slicer_util(monkeypatch):
    """Slicer before 5.12 (no slicer.packaging), the user says yes, MONAI is not installed; pip_install records."""
    import slicer

    calls = []
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda *a, **k: True, raising=False)
    monkeypatch.setattr(slicer.util, "pip_install", lambda args: calls.append(list(args)), raising=False)
    monkeypatch.setattr(dependencies, "_packaging", lambda: None)
    installed(monkeypatch, {name: v for name, v in CURRENT.items() if name != "monai"})
    return calls


def test_only_what_is_missing_or_too_old_is_installed_after_one_question(slicer_util, monkeypatch):
    import slicer

    old_monai_no_tqdm = {**{k: v for k, v in CURRENT.items() if k != "tqdm"}, "monai": "0.4.0"}
    versions = installed(monkeypatch, old_monai_no_tqdm)
    questions, installs = [], []
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda text, *a, **k: questions.append(text) or True)

    def install(todo):
        installs.append(list(todo))
        versions.update(monai="1.4.0", tqdm="4.66.0")

    monkeypatch.setattr(dependencies, "install_packages", install)
    ensure_dependencies()
    assert installs == [["monai>=1.3", "tqdm>=4.60"]]  # nibabel, scipy, ... are new enough: left alone
    assert len(questions) == 1 and "monai>=1.3 (0.4.0 installed)" in questions[0] and "nibabel" not in questions[0]
    ensure_dependencies()  # everything fits now: no question, no install
    assert len(questions) == 1 and len(installs) == 1


def test_a_package_still_too_old_after_the_install_is_a_dependency_error(slicer_util, monkeypatch):
    installed(monkeypatch, {**CURRENT, "monai": "0.4.0"})
    monkeypatch.setattr(dependencies, "install_packages", lambda todo: None)  # pip ran, the old one stays loaded
    with pytest.raises(DependencyError, match="monai>=1.3 .*restart Slicer"):
        ensure_dependencies(ask=False)


def test_a_torch_older_than_the_engine_needs_is_upgraded_through_the_pytorch_extension(slicer_util, monkeypatch):
    versions = installed(monkeypatch, {**CURRENT, "torch": "1.8.0"})
    asked = []

    def install_torch(askConfirmation, torchVersionRequirement):
        asked.append(torchVersionRequirement)
        versions["torch"] = "2.5.1"
        return object()

    fake = types.ModuleType("PyTorchUtils")
    fake.PyTorchUtilsLogic = lambda: types.SimpleNamespace(installTorch=install_torch)
    monkeypatch.setitem(sys.modules, "PyTorchUtils", fake)
    monkeypatch.setattr(dependencies, "install_packages", lambda todo: pytest.fail(f"nothing else is old: {todo}"))
    ensure_dependencies(ask=False)
    assert asked == [dependencies.TORCH_REQUIREMENT]


def test_the_constraints_pin_torch_and_slicers_own_numpy_simpleitk_and_requests(slicer_util, monkeypatch):
    import slicer

    installed(monkeypatch, {**CURRENT, "numpy": "1.26.4", "simpleitk": "2.4.0", "requests": "2.32.3"})
    pins = []  # read inside pip_install: the file is gone once install_packages returns
    monkeypatch.setattr(slicer.util, "pip_install",
                        lambda args: pins.append((args[0], open(args[args.index("--constraint") + 1]).read().split())))
    dependencies.install_packages(["monai>=1.3"])
    assert pins[0][0] == "monai>=1.3"
    assert sorted(pins[0][1]) == ["SimpleITK==2.4.0", "numpy==1.26.4", "requests==2.32.3", "torch==2.5.1+cu121"]
    installed(monkeypatch, {"numpy": "2.0.2"})  # no torch, SimpleITK or requests installed: nothing to pin
    dependencies.install_packages(["monai>=1.3"])
    assert pins[1][1] == ["numpy==2.0.2"]


def test_slicer_packaging_is_imported_explicitly_and_resolves_monai_against_the_pinned_torch(monkeypatch):
    import slicer

    calls = []
    fake = types.ModuleType("slicer.packaging")
    fake.pip_ensure = lambda todo, **kwargs: calls.append((todo, open(kwargs["constraints"]).read().split(), kwargs))
    monkeypatch.setitem(sys.modules, "slicer.packaging", fake)
    monkeypatch.delattr(slicer, "packaging", raising=False)
    installed(monkeypatch, {"torch": "2.9.0", "numpy": "2.0.2"})
    dependencies.install_packages(["monai>=1.3"])
    todo, pins, kwargs = calls[0]
    assert todo == ["monai>=1.3"] and sorted(pins) == ["numpy==2.0.2", "torch==2.9.0"]
    # skip_packages would switch pip_ensure to per-package --no-deps installs (MONAI not resolved against the
    # pinned torch) and turn failures into warnings
    assert "skip_packages" not in kwargs and kwargs["prompt_install"] is False


def test_a_failing_torch_install_is_a_dependency_error(slicer_util, monkeypatch):
    def offline(**kwargs):
        raise subprocess.CalledProcessError(1, ["pip", "install", "torch"])

    fake = types.ModuleType("PyTorchUtils")
    fake.PyTorchUtilsLogic = lambda: types.SimpleNamespace(installTorch=offline)
    monkeypatch.setitem(sys.modules, "PyTorchUtils", fake)
    installed(monkeypatch, {})
    with pytest.raises(DependencyError, match="PyTorch could not be installed .*internet connection"):
        ensure_dependencies(ask=False)


def test_a_failing_pip_is_a_dependency_error(slicer_util, monkeypatch):
    import slicer

    def offline(args):
        raise subprocess.CalledProcessError(1, ["pip", "install", *args])

    monkeypatch.setattr(slicer.util, "pip_install", offline)
    with pytest.raises(DependencyError, match="Installing monai.* failed"):
        ensure_dependencies(ask=False)
