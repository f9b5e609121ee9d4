"""What a fine-tuning time budget is spent on: the resampling grid (spacing and patch) and, where it is free, the
network width, chosen for this machine by timing a few steps of each candidate.

A fixed 1.5 mm grid costs a slow CPU so much per step that five minutes buy a few hundred steps and a model that
has learnt little, while a GPU affords it easily. So the candidates, from the finest grid and widest network down,
are timed on synthetic patches (paid from the budget), and the first whose affordable steps reach the steps that
grid needs to give a usable model is taken; where none does, the one closest to its need. The
steps each grid needs were measured on `pgl phantom`'s data (docs/benchmarks.md, "Choosing the configuration").
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch

from ..config import WIDE_NETWORK, NetworkConfig
from ..contract import COARSE_PATCH_SIZE, COARSE_SPACING_MM, PATCH_SIZE, SPACING_MM
from ..models.networks import build_segmentation_net
from ..pretraining.losses import marginal_dice_ce_loss
from ..training.precision import autocast

# a run this short is not chosen for at all: the grid and width asked for (or their defaults) are used
MIN_CHOICE_BUDGET_S = 30.0
PROBE_STEPS = 2  # timed steps per candidate, after one untimed (allocation, kernel selection)
# a training step takes this much longer than a probe's (data loading, augmentation, the running Dice, the log):
# 1.24-1.34 x measured on the 2-core CPU for both widths at the coarse grid (docs/benchmarks.md)
PROBE_TO_TRAINING = 1.3


@dataclass(frozen=True)
class Grid:
    name: str
    spacing: tuple[float, float, float]
    patch_size: tuple[int, int, int]
    steps_needed: int  # steps after which this grid gave a usable model on the tuning phantoms


# finest first. fine: today's 1.5 mm setting, 84-86 Dice after about 1800 steps (bf16 CPU, 10 minutes); coarse:
# 84-85 after about 1000-1260 steps (5 minutes), 9x fewer voxels to segment
GRIDS = (Grid("fine", SPACING_MM, PATCH_SIZE, 1800),
         Grid("coarse", COARSE_SPACING_MM, COARSE_PATCH_SIZE, 1000))


@dataclass(frozen=True)
class Candidate:
    grid: Grid
    network: NetworkConfig

    def describe(self) -> str:
        s, p = self.grid.spacing, self.grid.patch_size
        return (f"{s[0]:g} x {s[1]:g} x {s[2]:g} mm, patches {p[0]}x{p[1]}x{p[2]}, UNet channels "
                f"{tuple(self.network.channels)}")


def candidates(network: NetworkConfig | None, grid: Grid | None,
               pretrained_spacing: tuple[float, float, float] | None = None) -> list[Candidate]:
    """Finest grid first, then widest network; a fixed network or grid is the only one of its kind. From a
    pretrained model, its own grid comes first and finer ones are not tried: its filters learnt structures at the
    size they have on that grid, and a coarser grid is taken only when the budget cannot afford its own."""
    widths = [network] if network is not None else [WIDE_NETWORK, NetworkConfig()]
    grids = [grid] if grid is not None else [g for g in GRIDS if pretrained_spacing is None
                                             or min(g.spacing) >= min(pretrained_spacing) - 1e-6] or [GRIDS[-1]]
    return [Candidate(g, w) for g in grids for w in widths]


def grouped_by_grid(order: list[Candidate]) -> list[list[Candidate]]:
    """The candidates of each grid together (widest network first), the grids in `order`'s order."""
    groups: dict[Grid, list[Candidate]] = {}
    for candidate in order:
        groups.setdefault(candidate.grid, []).append(candidate)
    return list(groups.values())


def seconds_per_step(candidate: Candidate, classes: int, batch_size: int, device: torch.device,
                     dtype: torch.dtype) -> float:
    """A training step's time for this candidate on random patches: forward, the loss, backward, AdamW."""
    generator = torch.Generator().manual_seed(0)
    network = build_segmentation_net(candidate.network, classes).to(device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-4)
    shape = (batch_size, 1, *candidate.grid.patch_size)
    image = torch.rand(shape, generator=generator).to(device)
    target = torch.randint(0, classes, shape, generator=generator).to(device)
    labelled = torch.ones(batch_size, classes, dtype=torch.bool, device=device)
    times = []
    for _ in range(PROBE_STEPS + 1):
        start = time.perf_counter()
        with autocast(device, dtype):
            logits = network(image).float()
        loss = marginal_dice_ce_loss(logits, target, labelled)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times[1:])


@dataclass
class Choice:
    candidate: Candidate
    record: dict  # what was timed and why this one: kept in the model's metadata

    @property
    def sentence(self) -> str:
        return self.record["why"]


def choose(network: NetworkConfig | None, grid: Grid | None, training_s: float, classes: int, batch_size: int,
           device: torch.device, dtype: torch.dtype, clock=time.perf_counter,
           pretrained_spacing: tuple[float, float, float] | None = None) -> Choice:
    """Take the first candidate (finest grid, then widest network) that affords its grid's steps in `training_s`
    seconds of training (what is left of the budget once the probes are paid); else the one closest to its need.
    Grids are timed finest first, each from its narrowest network up, and timing stops at the first grid with a
    network that affords it."""
    started = clock()
    order = candidates(network, grid, pretrained_spacing)
    probes = []
    for same_grid in grouped_by_grid(order):
        # narrowest first: a wider network is never faster on the same grid, so where the narrowest cannot afford
        # the grid's steps the wider ones are not timed (on a slow CPU the fine grid's wide probe costs seconds)
        for candidate in reversed(same_grid):
            per_step = PROBE_TO_TRAINING * seconds_per_step(candidate, classes, batch_size, device, dtype)
            probes.append((candidate, per_step))
            if (training_s - (clock() - started)) / per_step < candidate.grid.steps_needed:
                break
        left = training_s - (clock() - started)
        if any(left / s >= c.grid.steps_needed for c, s in probes):
            break
    left = max(0.0, training_s - (clock() - started))
    enough = sorted((p for p in probes if left / p[1] >= p[0].grid.steps_needed), key=lambda p: order.index(p[0]))
    # none affords its grid's need: the one that comes closest (the most steps per step needed)
    chosen, per_step = enough[0] if enough else min(probes, key=lambda p: p[1] * p[0].grid.steps_needed)
    affordable = int(left / per_step)
    enough = affordable >= chosen.grid.steps_needed
    why = (f"{chosen.describe()}: about {affordable} steps fit the {training_s / 60:.1f} minutes left for "
           f"training on this machine ({per_step:.2f} s per step), "
           + ("enough for this grid" if enough else
              f"the closest to the {chosen.grid.steps_needed} this grid needs of the settings tried")
           + "".join(f"; {c.describe()}: {int(left / s)} of the {c.grid.steps_needed} steps it needs"
                     for c, s in probes if c is not chosen))
    record = {"chosen": {"grid": chosen.grid.name, "spacing": list(chosen.grid.spacing),
                         "patch_size": list(chosen.grid.patch_size), "network": chosen.network.to_dict()},
              "why": why, "training_s": round(training_s, 1), "probe_s": round(clock() - started, 1),
              "device": device.type, "precision": str(dtype).replace("torch.", ""),
              "probe_to_training": PROBE_TO_TRAINING,  # seconds_per_step below: a probed step times this
              "probes": [{"grid": c.grid.name, "channels": list(c.network.channels),
                          "seconds_per_step": round(s, 4), "affordable_steps": int(left / s),
                          "steps_needed": c.grid.steps_needed} for c, s in probes]}
    return Choice(chosen, record)


# wall-clock seconds kept aside when choosing: reading and preprocessing the labelled scans (the step plan later
# uses the time really left), and the end of the run (last checkpoint, the model, measuring its segmentation speed:
# 1.5-2 s on the 2-core CPU, where a 12 s reserve left 5-minute runs ending 11-14 s early; with 5 s a `pgl
# finetune` process, whose start-up precedes the clock, took up to 302 s)
PREPARE_GUESS_S = 20.0
FINISH_RESERVE_S = 8.0


def given_grid(spacing, patch_size) -> Grid | None:
    """The grid a user fixed (spacing or patch; the other from the defaults), or None when both are free."""
    if spacing is None and patch_size is None:
        return None
    from ..config import FinetuneConfig, _triple

    defaults = {f.name: f.default_factory() for f in dataclasses.fields(FinetuneConfig)
                if f.name in ("spacing", "patch_size")}
    spacing = _triple(spacing if spacing is not None else defaults["spacing"], "--spacing", float)
    patch = _triple(patch_size if patch_size is not None else defaults["patch_size"], "--patch-size", int)
    nearest = min(GRIDS, key=lambda g: abs(g.spacing[0] - spacing[0]))
    return Grid("given", spacing, patch, nearest.steps_needed)


def choose_configuration(options: dict, fixed: set[str], started: float, progress=None) -> dict | None:
    """Set spacing, patch_size and network in `options` (those not in `fixed`) for the time budget in
    options["minutes"], counted from `started` (time.perf_counter); returns the choice's record, or None when
    there is nothing to choose (no time budget, everything fixed, or several processes, which must agree)."""
    from ..config import FinetuneConfig
    from ..progress import emit
    from ..training.distributed import World
    from ..training.loop import resolve_device
    from ..training.precision import training_dtype
    from .trainer import Finetuner

    minutes = float(options.get("minutes") or 0.0)
    network = options.get("network") if "network" in fixed else None
    if isinstance(network, dict):
        network = NetworkConfig.from_dict(network)
    grid = given_grid(options.get("spacing") if "spacing" in fixed else None,
                      options.get("patch_size") if "patch_size" in fixed else None)
    if not minutes or options.get("resume") or (network is not None and grid is not None):
        return None
    if World.from_environment().size > 1:
        emit(progress, "info", message="several processes: the configuration is not chosen per machine; the "
                                       "defaults or the options given are used")
        return None
    training_s = minutes * 60 - (time.perf_counter() - started) - PREPARE_GUESS_S - FINISH_RESERVE_S
    if training_s < MIN_CHOICE_BUDGET_S:
        return None
    device = resolve_device(options.get("device", FinetuneConfig.device))
    dtype = training_dtype(device, options.get("precision", FinetuneConfig.precision), Finetuner.cpu_bf16)
    classes = max(2, len(options.get("label_names") or ()) + 1)
    # resolve_init has put the pretrained model's spacing in `options` (not in `fixed`: it is still to choose)
    pretrained = options.get("init") not in (None, "", "none")
    choice = choose(network, grid, training_s, classes, int(options.get("batch_size", FinetuneConfig.batch_size)),
                    device, dtype, pretrained_spacing=tuple(options["spacing"]) if pretrained else None)
    chosen = choice.candidate
    options.update(spacing=chosen.grid.spacing, patch_size=chosen.grid.patch_size, network=chosen.network)
    emit(progress, "info", message=f"configuration chosen for this machine and the {minutes:g}-minute budget: "
                                   f"{choice.sentence}.")
    return choice.record
