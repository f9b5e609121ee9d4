"""Typed, validated configurations shared by the CLI and the Python API (the defaults that the Slicer panels show
too come from contract.py)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

# the defaults the Slicer panels show too, and the fine-tuning budgets: defined once, in the contract
from .contract import (BATCH_SIZE, DEFAULT_FINETUNE_MINUTES, DEVICE, PATCH_SIZE, PRETRAIN_METHOD, PRETRAIN_PATCH_SIZE,
                       PRETRAIN_SPACING_MM, PRETRAIN_STEPS, REFINE_MINUTES, SPACING_MM)
from .errors import PGLError


def option(default: Any, help: str, **extra: Any) -> Any:
    """A dataclass field carrying its command-line help text; experimental=True lists it in --help's group of
    options that were measured not to help on the phantoms."""
    meta = {"help": help, **extra}
    if isinstance(default, (list, dict, tuple)):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


def _triple(value: Any, name: str, kind: type) -> tuple:
    """Accept one value for all three axes or one per axis."""
    if isinstance(value, (int, float)):
        value = (value,)
    value = tuple(kind(v) for v in value)
    if len(value) == 1:
        value = value * 3
    if len(value) != 3:
        raise PGLError(f"{name} takes 1 or 3 values (x y z), got {len(value)}: {value}.")
    return value


NORMS = ("instance", "batch", "channel", "none")


@dataclass
class NetworkConfig:
    """The backbone shared by pretraining and fine-tuning (a MONAI residual UNet)."""

    # CPU-sized: half the width of the comparisons' UNet (WIDE_NETWORK), a quarter of the arithmetic, so a CPU
    # fine-tunes far more steps per minute (docs/benchmarks.md)
    feature_channels: int = option(16, "channels of the backbone's output feature map")
    channels: tuple[int, ...] = option((8, 16, 32, 64), "channels per UNet level (GPU users: 16 32 64 128 with "
                                                        "--feature-channels 32)")
    strides: tuple[int, ...] = option((2, 2, 2), "downsampling stride between levels")
    num_res_units: int = option(1, "residual units per UNet block")
    norm: Literal["instance", "batch", "channel", "none"] = option(
        "instance", "normalisation layers: instance (each patch by its own statistics), batch (running statistics "
                    "at inference), channel (each voxel's features by their own statistics) or none; all but "
                    "instance allow pgl segment --one-pass (no better than instance with windows, far worse in "
                    "one pass)")

    # models saved before `norm` existed used instance normalisation
    DEFAULTS_BEFORE_OPTION_EXISTED: ClassVar[dict] = {"norm": "instance"}

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        self.strides = tuple(int(s) for s in self.strides)
        if len(self.channels) < 2 or len(self.strides) != len(self.channels) - 1:
            raise PGLError(
                f"network needs >= 2 channel levels and one stride fewer, got channels={self.channels}, "
                f"strides={self.strides}."
            )
        if self.feature_channels < 1 or min(self.channels) < 1 or min(self.strides) < 1:
            raise PGLError("network channels and strides must be positive integers.")
        if self.norm not in NORMS:
            raise PGLError(f"--norm must be one of {', '.join(NORMS)}, got {self.norm!r}.")

    @property
    def window_independent(self) -> bool:
        """Whether inference gives each voxel the same output whatever window it is computed in."""
        return self.norm != "instance"

    @property
    def divisor(self) -> int:
        """Patch sizes must be multiples of this so the UNet's skips line up."""
        return math.prod(self.strides)

    def to_dict(self) -> dict:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "NetworkConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise PGLError(f"unknown network settings {sorted(unknown)}; this model needs a newer pgl_engine.")
        return cls(**{**cls.DEFAULTS_BEFORE_OPTION_EXISTED, **data})


# the width the method comparisons were measured with (docs/experiments.md), and the one a GPU affords
WIDE_NETWORK = NetworkConfig(feature_channels=32, channels=(16, 32, 64, 128))


@dataclass
class TrainConfig:
    """Options every training command shares (same names in `pgl pretrain` and `pgl finetune`)."""

    # the value each setting added since had, in effect, in checkpoints and models written before it existed (see
    # training.merge_resume_config)
    DEFAULTS_BEFORE_OPTION_EXISTED: ClassVar[dict] = {}

    images: str = option("", "folder (searched recursively) of scans: .nii, .nii.gz, .nrrd, .mha files or DICOM series",
                         required=True)
    modalities: tuple[str, ...] = option(("CT",), "DICOM modalities to use from --images (scan files are always used)")
    out: str = option("", "output folder: the model, checkpoints and the training log", required=True)
    steps: int = option(300, "optimisation steps")
    batch_size: int = option(BATCH_SIZE, "samples per step (per process)")
    patch_size: tuple[int, int, int] = option(PATCH_SIZE, "network input size in voxels (1 or 3 values)")
    spacing: tuple[float, float, float] = option(SPACING_MM, "resampling spacing in mm (1 or 3 values)")
    hu_window: tuple[float, float] = option(
        (-175.0, 250.0), "HU clip window LO HI, mapped to [0, 1]; the default is abdominal CT's soft-tissue window; "
                         "-1024 325 keeps air and lung apart (a model keeps its window)")
    device: Literal["auto", "cpu", "cuda", "mps"] = option(DEVICE, "where to train")
    precision: Literal["auto", "fp32", "bf16"] = option(
        "auto", "arithmetic: auto = fp16 mixed precision on CUDA and, for fine-tuning, bf16 on CPUs with native bf16 "
                "(AVX512-BF16/AMX); fp32 = full precision; bf16 = bf16 autocast on CPU or CUDA")
    seed: int = option(0, "random seed (runs are deterministic on CPU for a given seed)")
    workers: int = option(2, "data loader worker processes (0 = load in the main process)")
    checkpoint_every: int = option(100, "write a resumable checkpoint every N steps")
    resume: bool = option(False, "continue the run in --out from its last checkpoint")
    overwrite: bool = option(False, "replace a PGL model already in --out (never other files)")
    cache_dir: str = option("", "preprocessed-scan cache (default: ~/.cache/pgl_engine)")
    lr: float = option(1e-3, "peak learning rate (AdamW, warm-up then cosine decay)")
    weight_decay: float = option(1e-5, "AdamW weight decay")
    warmup_steps: int = option(-1, "linear warm-up steps (-1: 5%% of --steps)")
    lr_scaling: Literal["none", "linear", "sqrt"] = option(
        "none", "scale --lr with the number of processes (torchrun): none, linear or sqrt")
    network: NetworkConfig = field(default_factory=NetworkConfig, metadata={"help": "backbone"})

    def __post_init__(self) -> None:
        if isinstance(self.network, dict):
            self.network = NetworkConfig.from_dict(self.network)
        self.patch_size = _triple(self.patch_size, "--patch-size", int)
        self.spacing = _triple(self.spacing, "--spacing", float)
        self.hu_window = tuple(float(v) for v in self.hu_window)
        self.modalities = tuple(str(m).upper() for m in self.modalities)
        self.validate()

    def checks(self) -> list[tuple[bool, str]]:
        """(condition, message if it fails) for every option; subclasses add theirs."""
        return [
            (self.steps >= 1, f"--steps must be >= 1, got {self.steps}."),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}."),
            (min(self.spacing) > 0, f"--spacing must be positive, got {self.spacing}."),
            (len(self.hu_window) == 2 and self.hu_window[0] < self.hu_window[1],
             f"--hu-window must be LO HI with LO < HI, got {self.hu_window}."),
            (self.device in ("auto", "cpu", "cuda", "mps"),
             f"--device must be auto, cpu, cuda or mps, got {self.device!r}."),
            (self.workers >= 0, f"--workers must be >= 0, got {self.workers}."),
            (self.checkpoint_every >= 1, f"--checkpoint-every must be >= 1, got {self.checkpoint_every}."),
            (self.lr > 0, f"--lr must be > 0, got {self.lr}."),
            (self.lr_scaling in ("none", "linear", "sqrt"), "--lr-scaling must be none, linear or sqrt."),
            (self.precision in ("auto", "fp32", "bf16"),
             f"--precision must be auto, fp32 or bf16, got {self.precision!r}."),
            (len(self.modalities) >= 1 and all(str(m).strip() for m in self.modalities),
             f"--modalities needs at least one DICOM modality (e.g. CT), got {list(self.modalities)}."),
        ]

    def validate(self) -> None:
        """Raise PGLError naming the option that is wrong and what it must be."""
        for ok, message in self.checks():
            if not ok:
                raise PGLError(message)
        d = self.network.divisor
        if any(p < d or p % d for p in self.patch_size):
            raise PGLError(
                f"--patch-size must be a multiple of {d} on every axis (the network downsamples by {d}), "
                f"got {self.patch_size}."
            )

    @property
    def effective_warmup(self) -> int:
        return max(1, round(0.05 * self.steps)) if self.warmup_steps < 0 else self.warmup_steps

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, NetworkConfig):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict):
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# named pretraining settings (--preset). paper: what Xie et al. 2020 state (crops 1.1-1.4 x the patch overlapping by
# at least 10 %, flips on every axis with p = 0.5 undone by the flip prior, the local loss on the decoder output,
# EMA from 0.996) and nothing they do not (no regulariser, no deep level, no extra intensity remaps)
PRESETS: dict[str, dict] = {
    "none": {},
    "paper": {"method": "pgl", "flip_axes": (0, 1, 2), "flip_prior": True, "crop_prior": True,
              "scale_range": (1.1, 1.4), "min_overlap": 0.1, "ema_start": 0.996, "anti_collapse_weight": 0.0,
              "deep_weight": 0.0, "intensity_strength": 1.0, "nonmonotone_p": 0.0, "bias_field": 0.0},
}


def with_preset(options: dict) -> dict:
    """Pretraining options with options["preset"]'s settings under them (explicit options win)."""
    name = options.get("preset", "none")
    if name not in PRESETS:
        raise PGLError(f"--preset must be one of {', '.join(PRESETS)}, got {name!r}.")
    return {**PRESETS[name], **options}


@dataclass
class PretrainConfig(TrainConfig):
    """Everything `pgl pretrain` needs; field names are the CLI option names."""

    DEFAULTS_BEFORE_OPTION_EXISTED: ClassVar[dict] = {"deep_weight": 0.0}

    steps: int = option(PRETRAIN_STEPS, "optimisation steps")
    patch_size: tuple[int, int, int] = option(PRETRAIN_PATCH_SIZE, "network input size in voxels (1 or 3 values)")
    spacing: tuple[float, float, float] = option(
        PRETRAIN_SPACING_MM, "resampling spacing in mm (1 or 3 values); the grid a CPU fine-tunes on within minutes")
    method: Literal["pgl", "byol"] = option(PRETRAIN_METHOD, "pgl (local, prior-guided) or byol (global baseline)")
    ema_start: float = option(0.996, "EMA momentum of the target at step 0; rises to 1 on a cosine")
    projector_dim: int = option(64, "output size of the projector and predictor")
    projector_hidden: int = option(128, "hidden size of the projector")
    predictor_hidden: int = option(128, "hidden size of the predictor (wider resists collapse)")
    grid_size: int = option(16, "aligned overlap grid edge (the RoIAlign output is grid^3)")
    scale_range: tuple[float, float] = option((1.1, 1.4), "crop size / patch size range per view")
    min_overlap: float = option(0.1, "minimum overlap of the two crops, as a fraction of a crop's volume")
    flip_prior: bool = option(True, "undo flips when aligning (ablation: --no-flip-prior)")
    crop_prior: bool = option(True, "align the overlap boxes (ablation: --no-crop-prior)")
    anti_collapse_weight: float = option(
        1.0, "weight of the variance/covariance regulariser on the aligned features, which keeps them from "
             "collapsing (0 = none, as in the paper)")
    anti_collapse_on: Literal["aligned", "full"] = option(
        "aligned", "features the regulariser sees: the aligned overlap grid, or the full feature maps (subsampled)",
        experimental=True)
    deep_weight: float = option(
        1.0, "PGL only: weight of a second local loss on the UNet's bottom block (1/8 resolution, grid / 4), "
             "with its own projector, predictor and regulariser (0 = the decoder output only, as in the paper)")
    nonmonotone_p: float = option(0.0, "probability of a random non-monotone intensity remap per view",
                                  experimental=True)
    bias_field: float = option(
        0.0, "largest log-amplitude of a smooth random multiplicative intensity field per view (0 = none; "
             "0.3 = factors 0.74-1.35): views of one scan then disagree on each structure's intensity",
        experimental=True)
    flip_axes: tuple[int, ...] = option(
        (), "flip each view on these axes with p = 0.5 (0=x 1=y 2=z; the paper flips all three). None by default: "
            "matching a view with its mirror image removes the left/right cues that tell spleen from liver")
    intensity_strength: float = option(
        1.0, "scale of the brightness/contrast/gamma jitter per view (1 = paper-style ranges, 0 = none)")
    rank_warning: float = option(0.25, "warn when effective rank / feature channels falls below this")
    rank_every: int = option(
        10, "measure the effective rank (the collapse monitor: an SVD and host syncs) every N steps, and on the "
            "first and last; 1 = every step")
    preset: Literal["none", "paper"] = option(
        "none", "start from a named setting: paper = the paper's PGL (flips on every axis with the flip prior, "
                "no regulariser, no deep level); options given explicitly still apply")

    def __post_init__(self) -> None:
        self.scale_range = tuple(float(v) for v in self.scale_range)
        self.flip_axes = tuple(int(a) for a in self.flip_axes)
        super().__post_init__()

    def checks(self) -> list[tuple[bool, str]]:
        return super().checks() + [
            (self.method in ("pgl", "byol"), f"--method must be pgl or byol, got {self.method!r}."),
            (0.0 <= self.ema_start < 1.0, f"--ema-start must be in [0, 1), got {self.ema_start}."),
            (self.grid_size >= 2, f"--grid-size must be >= 2, got {self.grid_size}."),
            (self.rank_every >= 1, f"--rank-every must be >= 1, got {self.rank_every}."),
            (len(self.scale_range) == 2 and 1.0 <= self.scale_range[0] <= self.scale_range[1],
             f"--scale-range must be LO HI with 1 <= LO <= HI, got {self.scale_range}."),
            (0.0 < self.min_overlap < 1.0, f"--min-overlap must be in (0, 1), got {self.min_overlap}."),
            (self.anti_collapse_weight >= 0, "--anti-collapse-weight must be >= 0."),
            (self.deep_weight >= 0, f"--deep-weight must be >= 0, got {self.deep_weight}."),
            (self.anti_collapse_on in ("aligned", "full"), "--anti-collapse-on must be aligned or full."),
            (0.0 <= self.nonmonotone_p <= 1.0, "--nonmonotone-p must be in [0, 1]."),
            (0.0 <= self.bias_field <= 1.0, f"--bias-field must be in [0, 1], got {self.bias_field}."),
            (all(a in (0, 1, 2) for a in self.flip_axes), f"--flip-axes takes 0, 1, 2, got {self.flip_axes}."),
            (0.0 <= self.intensity_strength <= 2.0, "--intensity-strength must be in [0, 2]."),
            (self.flip_prior or bool(self.flip_axes),
             "--no-flip-prior changes nothing without flips; add --flip-axes 0 1 2 (the paper's flips) to ablate "
             "the flip prior, or drop --no-flip-prior."),
            (self.preset in PRESETS, f"--preset must be one of {', '.join(PRESETS)}, got {self.preset!r}."),
            (min(self.projector_dim, self.projector_hidden, self.predictor_hidden) >= 1,
             "projector and predictor sizes must be >= 1."),
        ]


# --head-first-steps -1 holds the pretrained weights for a share of the steps that rises linearly from none at
# HEAD_FIRST_FROM steps to an eighth at HEAD_FIRST_FULL steps and beyond: holding them costs Dice in short
# fine-tuning and helps in long (docs/experiments.md); no budget gets a jump
HEAD_FIRST_FROM, HEAD_FIRST_FULL = 800, 6400


def resolve_head_first(head_first_steps: int, steps: int) -> int:
    """--head-first-steps as a step count; -1 means steps/8 scaled by a ramp from 0 (at or below HEAD_FIRST_FROM
    steps) to 1 (at or above HEAD_FIRST_FULL steps)."""
    if head_first_steps != -1:
        return head_first_steps
    ramp = min(max((steps - HEAD_FIRST_FROM) / (HEAD_FIRST_FULL - HEAD_FIRST_FROM), 0.0), 1.0)
    return int(steps / 8 * ramp)


# DEFAULT_FINETUNE_MINUTES and REFINE_MINUTES (fine-tuning without --steps or --minutes: a new model, a continued
# one) are the contract's, imported above


@dataclass
class FinetuneConfig(TrainConfig):
    """Everything `pgl finetune` needs; shared options have the names of `pgl pretrain`."""

    # checkpoints from before the options
    DEFAULTS_BEFORE_OPTION_EXISTED: ClassVar[dict] = {"head_first_steps": 0, "patience": 0, "spatial_p": 0.0}

    images: str = option("", "folder of scans to fine-tune on (or give --dataset)")
    labels: str = option("", "folder of label maps with the scans' file names")
    dataset: str = option("", "Medical Segmentation Decathlon dataset.json (imagesTr/labelsTr, label names)")
    init: str = option("none", "pretrained model folder to start from, or none (random initialisation)")
    transfer: Literal["whole", "encoder"] = option(
        "whole", "what --init gives: the whole backbone (paper) or its encoder only (decoder starts random)",
        experimental=True)
    init_lr_scale: float = option(
        1.0, "learning-rate multiplier for the weights taken from --init (the head always gets --lr)",
        experimental=True)
    head_first_steps: int = option(
        -1, "keep the weights taken from --init fixed for the first N steps while the rest trains, then fine-tune "
            "them on their own warm-up and cosine (linear probing, then fine-tuning); -1 = automatic: none up to "
            f"{HEAD_FIRST_FROM} steps, rising linearly to an eighth of --steps at {HEAD_FIRST_FULL} steps and "
            "beyond; 0 = off")
    label_names: tuple[str, ...] = option((), "names of labels 1, 2, ... when no dataset.json gives them")
    label_fraction: float = option(1.0, "use this fraction of the labelled scans (the paper's few-label settings)")
    max_labeled: int = option(0, "use at most N labelled scans (0 = all)")
    val_count: int = option(0, "hold out N labelled scans for validation and keep the best model")
    val_every: int = option(50, "validate (with --val-count) and check for a plateau (with --patience) every N "
                                "steps")
    patience: int = option(
        0, "finish early once N checks in a row (every --val-every steps) rose less than half a Dice point: the "
           "validation Dice with --val-count, else the training Dice; the learning rate then anneals over a tail "
           "of a fifth as many steps again; 0 = off")
    foreground_p: float = option(0.67, "probability that a patch is centred on a labelled structure")
    spatial_p: float = option(
        0.2, "probability of a random axial rotation (up to 30 degrees) and, separately, of a random scaling "
             "(0.7-1.4) of each patch, as nnU-Net draws them (0 = plain crops)")
    flip_axes: tuple[int, ...] = option((), "augment with random flips on these axes (0=x 1=y 2=z); --tta uses them")
    structure_shift_hu: float = option(
        0.0, "shift each labelled structure's intensity in a patch by its own random offset of up to this many "
             "HU (0 = off), so that the model does not learn the labelled scans' organ intensities by heart",
        experimental=True)
    steps: int = option(800, "optimisation steps (with few labelled scans Dice keeps rising for thousands of steps)")
    minutes: float = option(
        0.0, "finish within about this many minutes of wall clock, start to saved model (reading the scans "
             "included), instead of --steps: the step count is set from the time the first "
             "steps take (and checked again as training goes); 0 = train --steps steps")

    def checks(self) -> list[tuple[bool, str]]:
        return super().checks() + [
            (bool(self.dataset) or (bool(self.images) and bool(self.labels)),
             "give --images and --labels, or --dataset path/dataset.json."),
            (self.transfer in ("whole", "encoder"), f"--transfer must be whole or encoder, got {self.transfer!r}."),
            (self.init_lr_scale > 0, f"--init-lr-scale must be > 0, got {self.init_lr_scale}."),
            (self.head_first_steps == -1 or 0 <= self.head_first_steps < self.steps,
             f"--head-first-steps must be -1 (automatic) or from 0 to below --steps ({self.steps}), "
             f"got {self.head_first_steps}."),
            (0.0 < self.label_fraction <= 1.0, f"--label-fraction must be in (0, 1], got {self.label_fraction}."),
            (self.max_labeled >= 0, f"--max-labeled must be >= 0, got {self.max_labeled}."),
            (self.val_count >= 0, f"--val-count must be >= 0, got {self.val_count}."),
            (self.val_every >= 1, f"--val-every must be >= 1, got {self.val_every}."),
            (self.patience >= 0, f"--patience must be >= 0 (0 = off), got {self.patience}."),
            (self.minutes >= 0, f"--minutes must be >= 0 (0 = train --steps steps), got {self.minutes}."),
            (0.0 <= self.foreground_p <= 1.0, f"--foreground-p must be in [0, 1], got {self.foreground_p}."),
            (0.0 <= self.spatial_p <= 1.0, f"--spatial-p must be in [0, 1], got {self.spatial_p}."),
            (all(a in (0, 1, 2) for a in self.flip_axes), f"--flip-axes takes 0, 1, 2, got {self.flip_axes}."),
            (self.structure_shift_hu >= 0, f"--structure-shift-hu must be >= 0, got {self.structure_shift_hu}."),
        ]

    @property
    def head_first(self) -> int:
        """Steps during which the weights taken from --init stay fixed (--head-first-steps with -1 resolved)."""
        return resolve_head_first(self.head_first_steps, self.steps)

    def __post_init__(self) -> None:
        self.label_names = tuple(str(n) for n in self.label_names)
        self.flip_axes = tuple(int(a) for a in self.flip_axes)
        super().__post_init__()
