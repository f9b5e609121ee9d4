"""The three disjoint phantom cohorts of a comparison: unlabeled (pretraining), labelled (fine-tuning), test."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import PGLError
from ..phantoms.tuning import phantom_name, phase_of, read_phases, write_cohort
from ..progress import ProgressCallback, emit
from .config import CompareConfig


@dataclass(frozen=True)
class Cohorts:
    """The cohort folders (each holds images/, and for the labelled ones labels/ and dataset.json)."""

    unlabeled: Path
    labeled: Path
    test: Path


def make_data(config: CompareConfig, progress: ProgressCallback | None) -> Cohorts:
    """Write the cohorts (different seeds, so disjoint) unless they are already there."""
    data = Path(config.out) / "data"
    mixed = tuple(config.phases)
    sets = {"unlabeled": (config.unlabeled, config.data_seed, False, mixed),
            "labeled": (max(config.labeled), config.data_seed + 500, True, ("venous",)),
            "test": (config.test, config.data_seed + 800, True, mixed)}
    paths = {}
    for name, (count, seed, labels, phases) in sets.items():
        folder = data / name
        images = folder / "images"
        written = images.is_dir() and len(list(images.iterdir())) >= count
        if not (written and (not labels or (folder / "dataset.json").is_file())):
            emit(progress, "info", message=f"writing {count} {name} phantoms")
            write_cohort(folder, count, labels=labels, seed=seed, spacing_scale=config.phantom_spacing_scale,
                         phases=phases)
        check_phases(folder, seed, count, phases)
        paths[name] = folder
    return Cohorts(**paths)


def check_phases(folder: Path, seed: int, count: int, phases: tuple[str, ...]) -> None:
    """Refuse to reuse a cohort written with other contrast phases than this comparison asks for."""
    written = read_phases(folder)
    for i in range(count):
        name = phantom_name(seed + i)
        if written.get(name) != phase_of(seed + i, phases):
            raise PGLError(f"{folder} holds phantoms of other contrast phases than --phases {' '.join(phases)} "
                           f"asks for ({name}: {written.get(name)}); give another --out or remove {folder}.")
