"""First use inside Slicer: install what the engine needs, after one confirmation.

torch comes through the PyTorch extension (it picks the CUDA or CPU build for the machine); the rest through
`slicer.packaging.pip_ensure` (Slicer >= 5.12) or `slicer.util.pip_install`, from Resources/requirements.txt.
Slicer's own SimpleITK, numpy and requests are never replaced.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parent / "Resources" / "requirements.txt"
PROTECTED = {"simpleitk", "numpy", "requests"}  # Slicer ships these; replacing them breaks Slicer
TORCH_REQUIREMENT = ">=2.1"


class DependencyError(RuntimeError):
    """Installing a dependency failed or was declined; the message says what to do."""


def requirement_name(line: str) -> str:
    return re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")


def read_requirements(path: Path = REQUIREMENTS) -> list[str]:
    """Requirement lines without comments, torch and the packages Slicer provides."""
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line and requirement_name(line) not in PROTECTED | {"torch"}]


def import_name(requirement: str) -> str:
    return {"simpleitk": "SimpleITK", "pyyaml": "yaml"}.get(requirement_name(requirement),
                                                              requirement_name(requirement).replace("-", "_"))


def missing(requirements: list[str]) -> list[str]:
    return [r for r in requirements if importlib.util.find_spec(import_name(r)) is None]


def ensure_dependencies(ask: bool = True) -> None:
    """Make torch and the engine's packages importable in Slicer's Python (asks once before installing)."""
    import slicer

    todo = missing(read_requirements())
    need_torch = importlib.util.find_spec("torch") is None
    if not todo and not need_torch:
        return
    listing = ", ".join((["torch (PyTorch extension)"] if need_torch else []) + todo)
    if ask and not slicer.util.confirmOkCancelDisplay(
            f"PGL needs these Python packages: {listing}.\nInstall them now? This can take several minutes."):
        raise DependencyError(f"PGL cannot run without {listing}. Press the button again to install them.")
    if need_torch:
        try:
            import PyTorchUtils
        except ImportError as e:
            raise DependencyError("Install the PyTorch extension from the Extension Manager, restart Slicer, "
                                  "then try again.") from e
        if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                         torchVersionRequirement=TORCH_REQUIREMENT) is None:
            raise DependencyError("PyTorch could not be installed; see the PyTorch module for details.")
    if todo:
        try:
            if hasattr(slicer, "packaging") and hasattr(slicer.packaging, "pip_ensure"):
                slicer.packaging.pip_ensure(todo, skip_packages=sorted(PROTECTED), requester="PGL")
            else:
                slicer.util.pip_install(" ".join(f'"{r}"' for r in todo))
        except Exception as e:  # pip's failures come in many types; all mean the same to the user
            raise DependencyError(f"Installing {', '.join(todo)} failed ({e}). Check the internet connection "
                                  f"or install them from the Python console with slicer.util.pip_install.") from e
    still = missing(todo)
    if still:
        raise DependencyError(f"{', '.join(still)} still cannot be imported; restart Slicer and try again.")
