"""Fine-tuning's labelled data: pairing scans with label maps, reading them into the cache, mapping label values
to the network's classes, and setting the validation cases apart."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import FinetuneConfig
from ..data.cache import CachedScan, ScanCache
from ..data.components import one_piece_values
from ..data.imaging import scan_name
from ..data.labels import (MAX_LABEL, LabelledPair, label_values, labelled_values, load_label_on_grid, match_segments,
                           pair_folders, read_dataset_json)
from ..errors import PGLError
from ..progress import ProgressCallback, emit
from .patches import LabelledCase


BELOW_WINDOW_SHARE = 0.5  # of a structure's voxels below the HU window: warned about


@dataclass
class FinetuneData:
    names: dict[int, str]  # label value -> name
    class_names: dict[int, str]  # class k (1..K, the k-th smallest label value) -> name
    train_cases: list[LabelledCase]
    val_cases: list[LabelledCase]
    scans: list[CachedScan]  # every case's scan, validation ones included
    case_names: list[str]  # the training cases'
    one_piece: list[int]  # label values that are one piece in every case labelling them (segment keeps their largest)


def labelled_pairs(config: FinetuneConfig, progress: ProgressCallback | None
                   ) -> tuple[list[LabelledPair], dict[int, str]]:
    """The labelled pairs to use (after --label-fraction / --max-labeled) and the label names."""
    if config.dataset:
        pairs, names = read_dataset_json(config.dataset)
    else:
        pairs, notes = pair_folders(config.images, config.labels, tuple(config.modalities))
        for note in notes:
            emit(progress, "warning", message=note)
        names = {}
    if config.label_names:
        names = {i + 1: n for i, n in enumerate(config.label_names)}
    count = max(1, int(round(config.label_fraction * len(pairs))))
    if config.max_labeled:
        count = min(count, config.max_labeled)
    chosen = pairs[:count + config.val_count] if config.val_count else pairs[:count]
    return match_segments(chosen, names, progress)  # .seg.nrrd: segments become labels by name/terminology


def read_finetune_data(config: FinetuneConfig, progress: ProgressCallback | None) -> FinetuneData:
    """The labelled cases, read and checked, split into training and validation (the last --val-count)."""
    pairs, names = labelled_pairs(config, progress)
    scans = read_scans(pairs, config, progress)
    names = checked_names(names, pairs, config)
    class_values = [0] + sorted(names)  # the network predicts classes 0..K; class k is the k-th smallest value
    class_names = {k: names[v] for k, v in enumerate(class_values) if k}
    to_class = np.zeros(256, dtype=np.uint8)
    to_class[class_values] = np.arange(len(class_values))
    cases = []
    for pair, scan in zip(pairs, scans):
        classes = to_class[load_label_on_grid(pair, scan, names)]
        cases.append(LabelledCase.build(scan, classes, config.seed, labelled_classes(pair, classes, class_values)))
    describe_partial_labels(pairs, cases, class_names, progress)
    require_every_label(cases, names, class_values)
    warn_below_window(cases, class_names, config.hu_window, progress)
    train = len(cases) - config.val_count if config.val_count else len(cases)
    if not train:
        raise PGLError(f"--val-count {config.val_count} leaves no scan to train on ({len(cases)} labelled).")
    one_piece = one_piece_values([c.labels for c in cases], [c.labelled for c in cases], class_values)
    return FinetuneData(names, class_names, cases[:train], cases[train:], scans,
                        [scan_name(pair.image) for pair in pairs[:train]], one_piece)


def read_scans(pairs: list[LabelledPair], config: FinetuneConfig, progress: ProgressCallback | None
               ) -> list[CachedScan]:
    """Each pair's scan through the cache, with progress and the cache's notes."""
    cache = ScanCache(config.cache_dir or None, config.spacing, config.hu_window)
    scans = []
    for i, pair in enumerate(pairs):
        scans.append(cache.get(pair.image))
        emit(progress, "progress", stage="preprocess", step=i + 1, total=len(pairs), file=pair.image.name)
    for note in cache.notes(scans):
        emit(progress, "warning", message=note)
    return scans


def checked_names(names: dict[int, str], pairs: list[LabelledPair], config: FinetuneConfig) -> dict[int, str]:
    """The label names; without any, every value found becomes a label named after its number."""
    if not names:
        present = set()
        for pair in pairs:
            present |= set(label_values(pair.label)) - {0}
        names = {v: f"label {v}" for v in sorted(present)}
    too_large = sorted(v for v in names if not 0 < v <= MAX_LABEL)
    if too_large:
        where = config.dataset or "--label-names"
        raise PGLError(f"{where}: names label value(s) {too_large}; label values run from 1 to {MAX_LABEL}.")
    return names


def labelled_classes(pair: LabelledPair, classes: np.ndarray, class_values: list[int]) -> np.ndarray:
    """Which classes a case labels: those its sidecar's table lists and those its map holds (every class where the
    map has no table)."""
    listed = labelled_values(pair)  # a .seg.nrrd pair: its non-empty segments
    mask = np.ones(len(class_values), dtype=bool)
    if listed is not None:
        mask[1:] = [v in listed for v in class_values[1:]]
        mask[np.unique(classes)] = True
    return mask


def describe_partial_labels(pairs: list[LabelledPair], cases: list[LabelledCase], class_names: dict[int, str],
                            progress: ProgressCallback | None) -> None:
    """Say which case labels which structure when some case leaves one out."""
    if all(case.labelled.all() for case in cases):
        return
    lines = []
    for pair, case in zip(pairs, cases):
        have = [class_names[k] for k in class_names if case.labelled[k]]
        lacks = [class_names[k] for k in class_names if not case.labelled[k]]
        lines.append(f"{scan_name(pair.image)} labels {', '.join(have) or 'nothing'}"
                     + (f" (not {', '.join(lacks)})" if lacks else ""))
    emit(progress, "info", message="partial labels: " + "; ".join(lines) + ". A structure a case does not label is "
                                   "not taught as background there.")
    unlabelled = [class_names[k] for k in class_names if not any(c.labelled[k] for c in cases)]
    if unlabelled:
        raise PGLError(f"label(s) {', '.join(unlabelled)} are labelled in none of the cases; label them in at "
                       f"least one scan or leave them out.")


def warn_below_window(cases: list[LabelledCase], class_names: dict[int, str], hu_window: tuple[float, float],
                      progress: ProgressCallback | None) -> None:
    """Name the structures most of whose voxels lie below the HU window, where they look like air (lungs under
    a soft-tissue window): the network cannot tell them from what surrounds them by intensity."""
    classes = len(cases[0].labelled)  # background and each class
    total, low = np.zeros(classes), np.zeros(classes)
    for case in cases:  # one read of each scan: per class, its voxels and those at the window's low end
        total += np.bincount(case.labels.ravel(), minlength=classes)[:classes] * case.labelled
        low += np.bincount(case.labels[case.scan.load() <= 0], minlength=classes)[:classes] * case.labelled
    below = [name for k, name in class_names.items() if total[k] and low[k] >= BELOW_WINDOW_SHARE * total[k]]
    if below:
        lo, hi = hu_window
        emit(progress, "warning", message=f"{', '.join(below)}: most voxels lie below the HU window's low end "
                                          f"({lo:g} HU), where air, lung and gas look alike; for such structures "
                                          f"use --hu-window -1024 {hi:g} (with --init, a model pretrained with it).")


def require_every_label(cases: list[LabelledCase], names: dict[int, str], class_values: list[int]) -> None:
    found = set().union(*(c.foreground for c in cases))
    absent = [f"{names[v]} ({v})" for k, v in enumerate(class_values) if k and k not in found]
    if absent:
        raise PGLError(f"label(s) {', '.join(absent)} appear in none of the label maps; remove them from the "
                       f"label names or label them in at least one scan.")
