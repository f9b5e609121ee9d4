"""First-use installation inside Slicer, with Slicer's installers stood in for: torch is pinned, failures become
DependencyError, slicer.packaging is used when it can be imported (it is not an attribute until then)."""
import subprocess
import sys
import types

import pytest

from PGLCommon import dependencies
from PGLCommon.dependencies import DependencyError, ensure_dependencies


@pytest.fixture
def slicer_util(monkeypatch):
    import slicer

    calls = []
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda *a, **k: True, raising=False)
    monkeypatch.setattr(slicer.util, "pip_install", lambda args: calls.append(list(args)), raising=False)
    monkeypatch.setattr(dependencies, "_packaging", lambda: None)
    monkeypatch.setattr(dependencies, "missing", lambda reqs: [r for r in reqs if r.startswith("monai")])
    return calls


def test_packages_install_with_the_installed_torch_pinned(slicer_util, monkeypatch):
    monkeypatch.setattr(dependencies.importlib.metadata, "version", lambda name: "2.5.1+cu121")
    pinned = []
    original = dependencies.install_packages

    def spy(todo):
        import slicer

        def record(args):
            constraint = args[args.index("--constraint") + 1]
            pinned.append(open(constraint).read())
            slicer_util.append(args)

        monkeypatch.setattr(slicer.util, "pip_install", record)
        original(todo)

    monkeypatch.setattr(dependencies, "install_packages", spy)
    with pytest.raises(DependencyError, match="still cannot be imported"):  # our stand-in installs nothing
        ensure_dependencies(ask=False)
    assert slicer_util[0][0].startswith("monai") and pinned == ["torch==2.5.1+cu121\n"]


def test_slicer_packaging_is_imported_explicitly_and_gets_the_constraints(monkeypatch):
    import slicer

    calls = []
    fake = types.ModuleType("slicer.packaging")
    fake.pip_ensure = lambda todo, **kwargs: calls.append((todo, open(kwargs["constraints"]).read(), kwargs))
    monkeypatch.setitem(sys.modules, "slicer.packaging", fake)
    monkeypatch.delattr(slicer, "packaging", raising=False)
    monkeypatch.setattr(dependencies.importlib.metadata, "version", lambda name: "2.9.0")
    dependencies.install_packages(["monai>=1.3"])
    todo, constraints, kwargs = calls[0]
    assert todo == ["monai>=1.3"] and constraints == "torch==2.9.0\n"
    assert set(kwargs["skip_packages"]) == {"numpy", "simpleitk", "requests"}


def test_a_failing_torch_install_is_a_dependency_error(slicer_util, monkeypatch):
    def offline(**kwargs):
        raise subprocess.CalledProcessError(1, ["pip", "install", "torch"])

    fake = types.ModuleType("PyTorchUtils")
    fake.PyTorchUtilsLogic = lambda: types.SimpleNamespace(installTorch=offline)
    monkeypatch.setitem(sys.modules, "PyTorchUtils", fake)
    monkeypatch.setattr(dependencies, "torch_missing", lambda: True)
    with pytest.raises(DependencyError, match="PyTorch could not be installed .*internet connection"):
        ensure_dependencies(ask=False)


def test_a_failing_pip_is_a_dependency_error(slicer_util, monkeypatch):
    import slicer

    def offline(args):
        raise subprocess.CalledProcessError(1, ["pip", "install", *args])

    monkeypatch.setattr(slicer.util, "pip_install", offline)
    with pytest.raises(DependencyError, match="Installing monai.* failed"):
        ensure_dependencies(ask=False)
