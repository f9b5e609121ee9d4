"""report.md and PNG plots for `pgl compare`."""
from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..atomic import write_text_atomically
from ..config import FinetuneConfig, NetworkConfig, resolve_head_first
from ..contract import TRAIN_LOG_FILE
from .stats import Difference, PhaseSummary, RunResult, Spread, Summary


def _fmt(cell: Spread) -> str:
    return f"{100 * cell.mean:.1f} ± {100 * cell.sd:.1f}"


def _fmt_difference(d: Difference) -> str:
    ci = f"[{100 * d.ci95[0]:+.1f}, {100 * d.ci95[1]:+.1f}]" if d.has_interval else "(one seed)"
    return f"{100 * d.mean:+.1f} {ci}"


def plot_dice(path: Path, table: dict[str, dict[str, Spread]], inits: tuple[str, ...], labeled: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    organs = list(next(iter(table.values())))
    x = np.arange(len(organs))
    width = 0.8 / len(inits)
    fig, ax = plt.subplots(figsize=(1.4 * len(organs) + 2, 4))
    for k, init in enumerate(inits):
        means = [100 * table[init][o].mean for o in organs]
        sds = [100 * table[init][o].sd for o in organs]
        ax.bar(x + (k - (len(inits) - 1) / 2) * width, means, width, yerr=sds, capsize=2, label=init)
    ax.set_xticks(x, organs)
    ax.set_ylabel("Dice (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"Test Dice per organ, {labeled} labelled scan(s), mean ± SD over seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_losses(path: Path, out: Path, inits: tuple[str, ...], results: list[RunResult]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for init in inits:
        log = out / "models" / init / TRAIN_LOG_FILE
        if log.is_file():
            records = [json.loads(line) for line in log.read_text().splitlines()]
            left.plot([r["step"] for r in records], [r["loss"] for r in records], label=init)
        curves = [r.loss_curve for r in results if r.init == init]
        if curves:
            length = min(len(c) for c in curves)
            right.plot(np.arange(1, length + 1), np.mean([c[:length] for c in curves], axis=0), label=init)
    left.set_title("pretraining loss")
    right.set_title("fine-tuning loss (mean over runs)")
    if not left.lines:  # random init only: nothing was pretrained
        left.text(0.5, 0.5, "no pretrained init", ha="center", va="center", transform=left.transAxes)
    for ax in (left, right):
        ax.set_xlabel("step")
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def phase_note(phases: tuple[str, ...]) -> str:
    if tuple(phases) == ("venous",):
        return ", all portal-venous"
    return f"; unlabeled and test scans in turn {', '.join(phases)}, labelled ones portal-venous"


def phase_lines(by_phase: PhaseSummary | None) -> list[str]:
    """The report's table of organ-mean Dice per contrast phase of the test scans (none for one phase)."""
    if not by_phase:
        return []
    phases = list(next(iter(by_phase.table.values())))
    lines = ["", "Organ mean by contrast phase of the test scans (the labelled scans are venous):", "",
             "| init | " + " | ".join(phases) + " |", "|---" * (len(phases) + 1) + "|"]
    lines += [f"| {init} | " + " | ".join(_fmt(cells[p]) for p in phases) + " |"
              for init, cells in by_phase.table.items()]
    lines += [f"| {name} | " + " | ".join(_fmt_difference(d[p]) for p in phases) + " |"
              for name, d in by_phase.differences.items()]
    return lines


def held_steps(config) -> int:
    """Fine-tuning steps during which the pretrained weights stay fixed in this comparison's runs."""
    given = config.finetune_options.get("head_first_steps", FinetuneConfig.head_first_steps)
    return resolve_head_first(int(given), config.finetune_steps)


def write_report(out: Path, config, summary: Summary, results: list[RunResult]) -> Path:
    held = held_steps(config)
    lines = ["# PGL comparison report", "",
             f"Engine {__version__}, torch {torch.__version__}, {platform.machine()}, device `{config.device}`; "
             f"{summary.seconds / 60:.1f} min in all (pieces reused from earlier runs are not counted again).",
             "",
             f"Data: synthetic abdominal CT phantoms — {config.unlabeled} unlabeled (pretraining), "
             f"{max(config.labeled)} labelled (fine-tuning), {config.test} test{phase_note(config.phases)}; "
             f"resampled to {config.spacing} mm, "
             f"patch {config.patch_size}. Pretraining {config.pretrain_steps} steps, fine-tuning "
             f"{config.finetune_steps} steps (batch {config.batch_size}), {config.seeds} paired seed(s): the same "
             f"seed gives the same head initialisation and patch sequence for every initialisation. "
             + (f"Pretrained weights stay fixed for the first {held} fine-tuning steps while the rest "
                f"trains (`--head-first-steps`)." if held else
                "Every weight trains from the first fine-tuning step (no `--head-first-steps`)."), ""]
    options = [f"`--{kind}-option {key}={value if isinstance(value, str) else json.dumps(value)}`"
               for kind, given in (("pretrain", config.pretrain_options), ("finetune", config.finetune_options))
               for key, value in given.items()]
    if options:
        lines += ["Options given to every run of their kind: " + ", ".join(options) + ".", ""]
    for n in config.labeled:
        measured = summary.by_labelled[n]
        table = measured.table
        organs = list(next(iter(table.values())))
        lines += [f"## {n} labelled scan(s): test Dice (%), mean ± SD over seeds", "",
                  "| init | " + " | ".join(organs) + " |", "|---" * (len(organs) + 1) + "|"]
        lines += [f"| {init} | " + " | ".join(_fmt(table[init][o]) for o in organs) + " |" for init in table]
        by_metric = measured.differences  # metric -> "a - b" -> difference
        lines += ["", "Paired differences (Dice points), 95% t-interval over seeds. *organ mean*: liver, spleen "
                  "and kidneys (the paper's mean over organs); *mean*: every label, the tumour included.", "",
                  "| difference | " + " | ".join(by_metric) + " |", "|---" * (len(by_metric) + 1) + "|"]
        for name in next(iter(by_metric.values())):
            cells = [_fmt_difference(by_pair[name]) for by_pair in by_metric.values()]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += phase_lines(measured.by_phase)
        plot_dice(out / f"dice_n{n}.png", table, config.inits, n)
        lines += ["", f"![Dice per organ](dice_n{n}.png)", ""]
    lines += ["## Feature effective rank", "",
              "Effective rank of the backbone's voxel features on the test scans (of "
              f"{NetworkConfig().feature_channels} channels; collapse shows as a low rank), and at the end of "
              "pretraining (aligned features):", "",
              "| init | test features | end of pretraining |", "|---|---|---|"]
    for init, r in summary.ranks.items():
        pre = "—" if r.pretraining is None else f"{r.pretraining:.1f}"
        lines.append(f"| {init} | {r.test_features:.1f} | {pre} |")
    plot_losses(out / "loss_curves.png", out, config.inits, results)
    lines += ["", "![Loss curves](loss_curves.png)", ""]
    path = out / "report.md"
    write_text_atomically(path, "\n".join(lines) + "\n")
    return path
