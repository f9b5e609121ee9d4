"""The results of a comparison, typed: one fine-tuning run's scores, and their summary over paired seeds.

Every type converts to and from the JSON written in result.json and results.json (`to_json` / `from_json`),
whose layout is that of earlier versions, so finished runs are reused.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..phantoms.tuning import LABELS, ORGANS

HEADLINES = ("organ mean", "mean")  # mean over the organs (the paper's figure) and over every label


def organ_mean(dice: dict) -> float:
    """Mean Dice over the organs, leaving lesions out (NaN-aware)."""
    return float(np.nanmean([dice[o] for o in ORGANS if o in dice]))


def organ_mean_by_phase(cases: list[dict], phase_by_file: dict[str, str]) -> dict[str, float]:
    """Organ-mean Dice over the test scans of each contrast phase (`evaluate`'s per-case rows)."""
    by_phase = {}
    for phase in sorted(set(phase_by_file.values())):
        rows = [r for r in cases if phase_by_file.get(r["case"]) == phase]
        by_phase[phase] = organ_mean({o: np.nanmean([r["dice"] for r in rows if r["name"] == o] or [np.nan])
                                      for o in ORGANS})
    return by_phase


@dataclass
class RunResult:
    """One fine-tuning run (init, labelled count, seed) evaluated on the test cohort."""

    init: str
    labeled: int
    seed: int
    dice: dict[str, float]  # per label name, "mean" (every label) and, once scored, "organ mean"
    hd95_mm: dict[str, float]
    loss_curve: list[float]
    organ_mean_by_phase: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def scored(self) -> "RunResult":
        """A copy whose Dice also holds the organ mean."""
        return RunResult(**{**asdict(self), "dice": {**self.dice, "organ mean": organ_mean(self.dice)}})

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "RunResult":
        return cls(**data)


@dataclass
class Spread:
    """Mean and SD over seeds."""

    mean: float
    sd: float

    @classmethod
    def of(cls, values: list[float]) -> "Spread":
        """NaN-aware; SD 0 for one seed."""
        return cls(float(np.nanmean(values)), float(np.nanstd(values, ddof=1)) if len(values) > 1 else 0.0)


@dataclass
class Difference:
    """Mean of a - b over paired seeds with its 95% t-interval (NaN with one seed)."""

    mean: float
    ci95: list[float]
    n: int

    @property
    def has_interval(self) -> bool:
        return self.n >= 2 and not np.isnan(self.ci95[0])


def paired_difference(a: list[float], b: list[float]) -> Difference:
    """Mean of a - b over paired seeds with a 95% t-interval (NaN interval with one seed)."""
    from scipy import stats

    d = np.asarray(a) - np.asarray(b)
    if len(d) < 2:
        return Difference(float(d.mean()), [float("nan"), float("nan")], len(d))
    half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return Difference(float(d.mean()), [float(d.mean() - half), float(d.mean() + half)], len(d))


@dataclass
class PhaseSummary:
    """Organ mean per contrast phase of the test scans."""

    table: dict[str, dict[str, Spread]]  # init -> phase -> spread over seeds
    differences: dict[str, dict[str, Difference]]  # "a - b" -> phase -> paired difference


@dataclass
class LabelledSummary:
    """Everything measured with one number of labelled scans."""

    table: dict[str, dict[str, Spread]]  # init -> label name (and the headlines) -> spread over seeds
    differences: dict[str, dict[str, Difference]]  # headline -> "a - b" -> paired difference
    by_phase: PhaseSummary | None = None


@dataclass
class Ranks:
    """Effective rank of a backbone's features: on the test scans, and at the end of pretraining."""

    test_features: float
    pretraining: float | None


@dataclass
class Summary:
    by_labelled: dict[int, LabelledSummary]
    ranks: dict[str, Ranks]
    seconds: float

    def to_json(self) -> dict:
        """results.json's layout: table / differences / by_phase keyed by the labelled count as a string."""
        items = self.by_labelled.items()
        return {"table": {str(n): _plain(s.table) for n, s in items},
                "differences": {str(n): _plain(s.differences) for n, s in items},
                "by_phase": {str(n): asdict(s.by_phase) for n, s in items if s.by_phase},
                "ranks": {i: asdict(r) for i, r in self.ranks.items()}, "seconds": self.seconds}


def _plain(nested: dict) -> dict:
    return {k: {kk: asdict(v) for kk, v in inner.items()} for k, inner in nested.items()}


def compared_pairs(inits, baselines: list[str]) -> list[tuple[str, str]]:
    """(init, baseline) pairs of the paired differences: each init but random against random and BYOL."""
    return [(a, b) for a in inits if a != "random" for b in baselines if a != b]


def summarise(labeled: tuple[int, ...], inits: tuple[str, ...], results: list[RunResult], ranks: dict[str, Ranks],
              seconds: float) -> Summary:
    """Per labelled count: Dice per label per init over seeds, and paired differences of the headlines; each
    result must be scored (`RunResult.scored`)."""
    labels = list(LABELS.values()) + list(HEADLINES)
    by_labelled = {}
    for n in labeled:
        runs = [r for r in results if r.labeled == n]
        by_init = {i: sorted((r for r in runs if r.init == i), key=lambda r: r.seed) for i in inits}
        baselines = [b for b in ("random", "byol") if b in by_init]
        table = {i: {o: Spread.of([r.dice[o] for r in rs]) for o in labels} for i, rs in by_init.items()}
        differences = {metric: {f"{a} - {b}": paired_difference([r.dice[metric] for r in by_init[a]],
                                                                [r.dice[metric] for r in by_init[b]])
                                for a, b in compared_pairs(inits, baselines)}
                       for metric in HEADLINES}
        phases = summarise_phases(by_init, baselines) if all(len(r.organ_mean_by_phase) > 1 for r in runs) else None
        by_labelled[n] = LabelledSummary(table, differences, phases)
    return Summary(by_labelled, ranks, seconds)


def summarise_phases(by_init: dict[str, list[RunResult]], baselines: list[str]) -> PhaseSummary:
    """Organ mean per contrast phase of the test scans: spread over seeds and paired differences per init."""
    phases = list(next(iter(by_init.values()))[0].organ_mean_by_phase)
    values = {i: {p: [r.organ_mean_by_phase[p] for r in rs] for p in phases} for i, rs in by_init.items()}
    table = {i: {p: Spread.of(v) for p, v in by_phase.items()} for i, by_phase in values.items()}
    differences = {f"{a} - {b}": {p: paired_difference(values[a][p], values[b][p]) for p in phases}
                   for a, b in compared_pairs(by_init, baselines)}
    return PhaseSummary(table, differences)
