"""First use inside Slicer: install what the engine needs, after one confirmation.

Installed versions are compared with the requirements (package metadata, no import), so an old MONAI or torch
left by another extension is upgraded, and only what is missing or too old is installed. torch comes through the
PyTorch extension (it picks the CUDA or CPU build for the machine); the rest through `slicer.packaging.pip_ensure`
(Slicer >= 5.12) or `slicer.util.pip_install`, from Resources/requirements.txt, with a constraints file pinning
the installed torch (an unconstrained `pip install monai` upgrades torch: MONAI 1.6 needs torch >= 2.8) and
Slicer's own numpy, SimpleITK and requests. Every failure becomes a DependencyError the panels show.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import re
import tempfile
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parent / "Resources" / "requirements.txt"
SLICER_PACKAGES = ("numpy", "SimpleITK", "requests")  # Slicer ships these; replacing them breaks Slicer
PROTECTED = {name.lower() for name in SLICER_PACKAGES}
TORCH_REQUIREMENT = ">=2.1"  # the engine's floor; MONAI's version is then chosen to fit the installed torch


class DependencyError(RuntimeError):
    """Installing a dependency failed or was declined; the message says what to do."""


def requirement_name(line: str) -> str:
    return re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")


def read_requirements(path: Path = REQUIREMENTS) -> list[str]:
    """Requirement lines without comments, torch and the packages Slicer provides."""
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line and requirement_name(line) not in PROTECTED | {"torch"}]


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def fits(requirement: str) -> bool:
    """Installed at a version the requirement allows (a package that merely imports may be too old)."""
    # packaging ships with Slicer (PythonQt's requirements), not with every Python: imported on use
    from packaging.requirements import Requirement
    from packaging.version import InvalidVersion

    parsed = Requirement(requirement)
    if parsed.marker is not None and not parsed.marker.evaluate():
        return True  # not needed on this platform
    version = installed_version(parsed.name)
    try:
        return version is not None and parsed.specifier.contains(version, prereleases=True)
    except InvalidVersion:  # a build that cannot be compared: left as it is rather than replaced blindly
        return True


def unmet(requirements: list[str]) -> list[str]:
    """The requirements not installed, or installed at a version they exclude."""
    importlib.invalidate_caches()  # a pip run in this session changed the folders the metadata is read from
    return [r for r in requirements if not fits(r)]


def torch_needed() -> bool:
    return not fits(f"torch{TORCH_REQUIREMENT}")


def still_needed() -> list[str]:
    """What must be installed or upgraded before the engine can run; reads package metadata, starts nothing."""
    return ([f"torch{TORCH_REQUIREMENT}"] if torch_needed() else []) + unmet(read_requirements())


def needed_in_testing() -> list[str]:
    """What the engine still needs when Slicer runs in testing mode (the extensions factory's self-tests), where
    nothing gets installed (slicer.packaging.pip_ensure skips installs there too); empty outside testing mode."""
    import slicer

    return still_needed() if slicer.app.testingEnabled() else []


def described(requirement: str) -> str:
    """'monai>=1.3 (0.4.0 installed)' for an upgrade, the bare requirement for a new package."""
    version = installed_version(requirement_name(requirement))
    return f"{requirement} ({version} installed)" if version else requirement


def constraints_file(folder: Path) -> Path:
    """A pip constraints file pinning the installed torch (the PyTorch extension's build, e.g. 2.5.1+cu121) and
    Slicer's own numpy, SimpleITK and requests, so that no package pulls in other versions of them."""
    pins = [f"{name}=={installed_version(name)}" for name in ("torch", *SLICER_PACKAGES) if installed_version(name)]
    path = Path(folder) / "constraints.txt"
    path.write_text("".join(f"{pin}\n" for pin in pins))
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
            constraints = constraints_file(Path(folder))
            slicer_packaging = _packaging()
            if slicer_packaging is not None:
                # no skip_packages: it installs each package with --no-deps (MONAI would not be resolved against
                # the pinned torch) and turns failures into warnings; the constraints keep Slicer's packages
                slicer_packaging.pip_ensure(todo, constraints=str(constraints), prompt_install=False,
                                            requester="PGL")
            else:
                slicer.util.pip_install([*todo, "--constraint", str(constraints)])
        except Exception as e:  # pip's failures come in many types; all mean the same to the user
            raise DependencyError(f"Installing {', '.join(todo)} failed ({e}). Check the internet connection "
                                  f"or install them from the Python console with slicer.util.pip_install.") from e


def ensure_dependencies(ask: bool = True) -> None:
    """Install or upgrade what is missing or too old for the engine in Slicer's Python (asks once first).

    Raises DependencyError, with what to do, whenever something is declined or fails."""
    import slicer

    todo = unmet(read_requirements())
    need_torch = torch_needed()
    if not todo and not need_torch:
        return
    torch_item = f"{described(f'torch{TORCH_REQUIREMENT}')} through the PyTorch extension"
    listing = ", ".join(([torch_item] if need_torch else []) + [described(r) for r in todo])
    if ask and not slicer.util.confirmOkCancelDisplay(
            f"PGL needs these Python packages installed or upgraded: {listing}.\nInstall them now? This can take "
            f"several minutes."):
        raise DependencyError(f"PGL cannot run without {listing}. Press the button again to install them.")
    if need_torch:
        install_torch()
    if todo:
        install_packages(todo)
    still = still_needed()  # a package imported before its upgrade stays old until Slicer restarts
    if still:
        raise DependencyError(f"{', '.join(described(r) for r in still)} still missing or too old after the "
                              f"install; restart Slicer and try again.")
