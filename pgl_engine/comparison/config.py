"""What `pgl compare` runs: the settings, the initialisations it compares, the small comparison `make compare` runs."""
from __future__ import annotations

from dataclasses import dataclass, field, fields

from ..config import PRESETS, FinetuneConfig, PretrainConfig, option
from ..errors import PGLError
from ..phantoms.tuning import phase_of

# the comparisons' intensity window, the one their figures were measured with (the engine's default was then this)
COMPARISON_HU_WINDOW = (-1024.0, 325.0)

# pretraining variants: method plus options that differ from the defaults. The defaults do not flip the views
# (flips cost the spleen on the phantoms); the flip-prior variants flip on every axis as in the paper, and the
# -paper variants are the paper's setting (--preset paper; BYOL with the same flips and no regulariser).
FLIPS = {"flip_axes": (0, 1, 2)}
INIT_VARIANTS = {
    "random": None,
    "byol": {"method": "byol"},
    "pgl": {"method": "pgl"},
    "pgl-flip": {"method": "pgl", **FLIPS},
    "pgl-noflip": {"method": "pgl", **FLIPS, "flip_prior": False},
    "pgl-nocrop": {"method": "pgl", "crop_prior": False},
    "pgl-noprior": {"method": "pgl", **FLIPS, "flip_prior": False, "crop_prior": False},
    "pgl-nodeep": {"method": "pgl", "deep_weight": 0.0},
    "pgl-noreg": {"method": "pgl", "anti_collapse_weight": 0.0, "deep_weight": 0.0},
    "pgl-paper": dict(PRESETS["paper"]),
    "byol-plain": {"method": "byol", "anti_collapse_weight": 0.0},
    "byol-paper": {"method": "byol", "anti_collapse_weight": 0.0, **FLIPS},
}
RENAMED = {"pgl-plain": "pgl-noreg (no regulariser, no deep level, no flips) or pgl-paper (the paper's setting)"}

# options compare sets per run, which --pretrain-option / --finetune-option cannot change
FIXED_BY_COMPARE = {"images", "out", "dataset", "init", "seed", "max_labeled", "overwrite", "labels", "resume"}


@dataclass
class CompareConfig:
    """Settings of `pgl compare` (CLI options of the same names)."""

    out: str = option("compare_output", "output folder (reused pieces let an interrupted comparison continue)")
    unlabeled: int = option(24, "unlabeled phantoms for pretraining")
    labeled: tuple[int, ...] = option((1, 2), "numbers of labelled scans to fine-tune from")
    test: int = option(6, "held-out test phantoms")
    seeds: int = option(5, "paired fine-tuning seeds per setting")
    inits: tuple[str, ...] = option(("random", "byol", "pgl"), "initialisations: " + ", ".join(INIT_VARIANTS))
    pretrain_steps: int = option(1800, "pretraining steps per method")
    finetune_steps: int = option(2000, "fine-tuning steps per run (random init still gains beyond 2000 steps)")
    batch_size: int = option(2, "batch size (pairs for pretraining, patches for fine-tuning)")
    patch_size: tuple[int, int, int] = option((48, 48, 32), "patch size in voxels")
    spacing: tuple[float, float, float] = option((3.2, 3.2, 6.0), "resampling spacing in mm")
    phantom_spacing_scale: float = option(2.0, "phantom scanner spacing multiplier (smaller files)")
    finetune_lr: float = option(1e-3, "fine-tuning learning rate")
    device: str = option("auto", "auto, cpu, cuda or mps")
    workers: int = option(2, "data loader workers")
    jobs: int = option(1, "pretraining / fine-tuning runs at a time, each in its own process (for GPUs, many cores)")
    data_seed: int = option(1000, "seed of the phantom cohorts")
    phases: tuple[str, ...] = option(("venous",), "contrast phases the unlabeled and test phantoms are drawn from "
                                     "(venous, arterial, native); the labelled ones stay venous")
    pretrain_options: dict = field(default_factory=dict)
    finetune_options: dict = field(default_factory=dict)

    def validate(self) -> None:
        if not self.inits or not self.labeled:
            raise PGLError("--inits and --labeled each need at least one value.")
        renamed = [f"{i} is now {RENAMED[i]}" for i in self.inits if i in RENAMED]
        if renamed:
            raise PGLError(f"--inits: {'; '.join(renamed)}.")
        unknown = [i for i in self.inits if i not in INIT_VARIANTS]
        if unknown:
            raise PGLError(f"--inits: unknown {unknown}; choose from {', '.join(INIT_VARIANTS)}.")
        for flag, options, cls in (("--pretrain-option", self.pretrain_options, PretrainConfig),
                                   ("--finetune-option", self.finetune_options, FinetuneConfig)):
            allowed = {f.name for f in fields(cls)} - FIXED_BY_COMPARE
            unknown = sorted(set(options) - allowed)
            if unknown:
                raise PGLError(f"{flag}: {unknown} unknown or set by compare itself; options of "
                               f"`pgl {cls.__name__[:-6].lower()} --help` other than {sorted(FIXED_BY_COMPARE)} work.")
        if min(self.labeled) < 1 or min(self.seeds, self.test, self.unlabeled, self.jobs) < 1:
            raise PGLError("--labeled, --seeds, --test, --unlabeled and --jobs must be >= 1.")
        phase_of(0, tuple(self.phases))  # names the unknown phases


# `make compare`: the paper's comparison at a size one CPU runs in 13-31 minutes (2 cores; what `pgl demo` ran
# before the demo became the clinician's path). The Makefile passes these as options (a test keeps them equal).
SMALL_COMPARISON = dict(unlabeled=16, labeled=(2,), test=4, seeds=2, pretrain_steps=200, finetune_steps=200)
