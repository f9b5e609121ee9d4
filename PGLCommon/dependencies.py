"""First use inside Slicer: install what the engine needs, after one confirmation.

torch comes through the PyTorch extension (it picks the CUDA or CPU build for the machine); the rest through
`slicer.packaging.pip_ensure` (Slicer >= 5.12) or `slicer.util.pip_install`, from Resources/requirements.txt,
with the installed torch pinned by a constraints file so pip never replaces the build the PyTorch extension
chose (an unconstrained `pip install monai` upgrades torch: MONAI 1.6 needs torch >= 2.8). Slicer's own
SimpleITK, numpy and requests are never replaced. Every failure becomes a DependencyError the panels show.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import tempfile
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parent / "Resources" / "requirements.txt"
PROTECTED = {"simpleitk", "numpy", "requests"}  # Slicer ships these; replacing them breaks Slicer
TORCH_REQUIREMENT = ">=2.1"  # the engine's floor; MONAI's version is then chosen to fit the installed torch


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


def torch_missing() -> bool:
    return importlib.util.find_spec("torch") is None


def torch_constraints(folder: Path) -> Path:
    """A pip constraints file pinning the installed torch (e.g. torch==2.5.1+cu121) so nothing replaces it."""
    path = Path(folder) / "constraints.txt"
    path.write_text(f"torch=={importlib.metadata.version('torch')}\n")
    return path


def _packaging():
    """slicer.packaging (Slicer >= 5.12) or None; it must be imported explicitly to exist."""
    try:
        import slicer.packaging as packaging
    except ImportError:
        return None
    return packaging if hasattr(packaging, "pip_ensure") else None


def install_torch() -> None:
    try:
        import PyTorchUtils
    except ImportError as e:
        raise DependencyError("Install the PyTorch extension from the Extension Manager, restart Slicer, "
                              "then try again.") from e
    try:
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                              torchVersionRequirement=TORCH_REQUIREMENT)
    except Exception as e:  # pip's failures (CalledProcessError, OSError, ...) all mean the same to the user
        raise DependencyError(f"PyTorch could not be installed ({e}). Check the internet connection, or install "
                              f"it in the PyTorch module, then try again.") from e
    if torch is None:
        raise DependencyError("PyTorch was not installed; PGL cannot run without it.")


def install_packages(todo: list[str]) -> None:
    import slicer

    with tempfile.TemporaryDirectory(prefix="pgl_pip_") as folder:
        try:
            constraints = torch_constraints(Path(folder))
            packaging = _packaging()
            if packaging is not None:
                packaging.pip_ensure(todo, constraints=str(constraints), skip_packages=sorted(PROTECTED),
                                     prompt_install=False, requester="PGL")
            else:
                slicer.util.pip_install([*todo, "--constraint", str(constraints)])
        except Exception as e:  # pip's failures come in many types; all mean the same to the user
            raise DependencyError(f"Installing {', '.join(todo)} failed ({e}). Check the internet connection "
                                  f"or install them from the Python console with slicer.util.pip_install.") from e


def ensure_dependencies(ask: bool = True) -> None:
    """Make torch and the engine's packages importable in Slicer's Python (asks once before installing).

    Raises DependencyError, with what to do, whenever something is declined or fails."""
    import slicer

    todo = missing(read_requirements())
    need_torch = torch_missing()
    if not todo and not need_torch:
        return
    listing = ", ".join((["torch (PyTorch extension)"] if need_torch else []) + todo)
    if ask and not slicer.util.confirmOkCancelDisplay(
            f"PGL needs these Python packages: {listing}.\nInstall them now? This can take several minutes."):
        raise DependencyError(f"PGL cannot run without {listing}. Press the button again to install them.")
    if need_torch:
        install_torch()
    if todo:
        install_packages(todo)
    still = missing(todo)
    if still:
        raise DependencyError(f"{', '.join(still)} still cannot be imported; restart Slicer and try again.")
