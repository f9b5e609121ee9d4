"""Labelled data: pairing scans with label maps (or Slicer `.seg.nrrd` segmentations), label names and colours,
labels on the scan's cached grid."""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..atomic import write_text_atomically
from ..contract import LABEL_TABLE_SUFFIX
from ..errors import PGLError
from ..progress import ProgressCallback, emit
from .cache import CachedScan
from .imaging import (LABEL_SUFFIXES, image_affine_ras, is_segmentation_file, list_scans, read_geometry, read_image,
                      resample, scan_name)
from .imaging import strip_scan_suffix as strip_suffix
from .seg_nrrd import label_image, overlaps, read_segmentation, segments_of, voxel_counts
from .segment_table import StructureTable
from .structures import find_structure

# known structures take Slicer's standard colour (structures.py); other names cycle through PALETTE
PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]


def colour_for(name: str, index: int) -> tuple[int, int, int]:
    """The standard colour of a known structure, matched by its whole name ("liver tumour" is not the liver, so it
    does not look like one); else the palette's."""
    structure = find_structure(name)
    return structure.colour if structure else PALETTE[(index - 1) % len(PALETTE)]


class LabelNames(dict):
    """Label value -> name, with the colours the labels came with ({value: (r, g, b)}: a `.seg.nrrd`'s segment
    colours), which label_table keeps."""

    def __init__(self, names=(), colours: dict[int, tuple[int, int, int]] | None = None):
        super().__init__(names)
        self.colours = dict(colours or {})


def label_table(names: dict[int, str]) -> dict[str, dict]:
    """{"1": {"name": ..., "color": [r, g, b]}, ...} as stored in model metadata and beside outputs.

    A label keeps the colour it came with (LabelNames.colours); the others each get their own colour: a second
    structure of a known kind (left/right kidney) takes a palette one.
    """
    given = getattr(names, "colours", {})
    table, used = {}, set(given.values())
    for i, name in sorted(names.items()):
        colour = given.get(i) or colour_for(name, i)
        if colour in used and i not in given:
            colour = next((c for c in PALETTE if c not in used), colour)
        used.add(colour)
        table[str(i)] = {"name": name, "color": list(colour)}
    return table


def sidecar_path(label_map: Path) -> Path:
    """Where the names and colours of a written label map go: beside it, `<name>.labels.json`."""
    return label_map.with_name(strip_suffix(label_map.name) + LABEL_TABLE_SUFFIX)


def write_sidecar(label_map: Path, table: dict[str, dict], written_by: str = "") -> Path:
    """Names and colours beside a label map; `written_by` marks the maps a command may later replace."""
    path = sidecar_path(label_map)
    text = json.dumps({"labels": table, **({"written_by": written_by} if written_by else {})}, indent=2)
    write_text_atomically(path, text)
    return path


def sidecar_writer(label_map: Path) -> str:
    """Which command wrote the label map, from its sidecar ("" if none says so)."""
    try:
        return str(json.loads(sidecar_path(label_map).read_text()).get("written_by", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def names_from_sidecar(label_map: Path) -> dict[int, str] | None:
    path = sidecar_path(label_map)
    if not path.is_file():
        return None
    try:
        return {int(k): v["name"] for k, v in json.loads(path.read_text())["labels"].items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def labelled_values(label_map: Path | LabelledPair) -> set[int] | None:
    """The label values a case labels: those of its `.seg.nrrd`'s non-empty segments (a pair from
    match_segments), else those of its sidecar's table: a structure the table leaves out is not labelled in that
    case (partial labels), so it is not background there. None without either: the case labels every
    structure."""
    if isinstance(label_map, LabelledPair):
        if label_map.segments is not None:
            return set(label_map.segments.values())
        label_map = label_map.label
    path = sidecar_path(Path(label_map))
    if not path.is_file():
        return None
    try:
        return {int(k) for k in json.loads(path.read_text())["labels"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise PGLError(f"{path}: cannot be read as the label table of {Path(label_map).name} ({e}). It lists what the "
                       f"label map labels ({{\"labels\": {{\"1\": {{\"name\": \"liver\"}}}}}}); fix or remove "
                       f"it.") from e


@dataclass
class LabelledPair:
    image: Path  # a scan file or a DicomSeries
    label: Path
    segments: dict[str, int] | None = None  # a .seg.nrrd's segment ID -> label value (set by match_segments)


def pair_folders(images: str | Path, labels: str | Path, modalities: tuple[str, ...] = ("CT",)
                 ) -> tuple[list[LabelledPair], list[str]]:
    """Scans (files or DICOM series) and label maps with the same name (suffix aside); also returns notes on the
    unpaired."""
    labels = Path(labels)
    if not labels.is_dir():
        raise PGLError(f"{labels}: no such folder of label maps.")
    scans = {scan_name(p): p for p in list_scans(images, modalities, exclude=(labels,))}
    label_files: dict[str, Path] = {}
    for p in sorted(labels.iterdir()):
        if not p.name.startswith(".") and p.name.lower().endswith(LABEL_SUFFIXES):
            if strip_suffix(p.name) in label_files:  # case_1.nii.gz and case_1.seg.nrrd: which one is meant?
                raise PGLError(f"{label_files[strip_suffix(p.name)]} and {p}: two label maps for the scan "
                               f"{strip_suffix(p.name)}; keep one of them in {labels}.")
            label_files[strip_suffix(p.name)] = p
    pairs = [LabelledPair(scans[k], label_files[k]) for k in sorted(scans) if k in label_files]
    notes = [f"{label_files[k]}: no scan named like it in {images}" for k in sorted(set(label_files) - set(scans))]
    unlabelled = sorted(set(scans) - set(label_files))
    if unlabelled and set(scans) & set(label_files):
        shown = ", ".join(unlabelled[:10]) + (f" and {len(unlabelled) - 10} more" if len(unlabelled) > 10 else "")
        notes.append(f"{labels}: has no label map for {len(unlabelled)} scan(s) of {images}, which are not used: "
                     f"{shown}")
    if not pairs:
        raise PGLError(f"{images} and {labels}: no scan has a label map with the same file name. Name each label "
                       f"map like its scan (e.g. images/case_001.nii.gz and labels/case_001.nii.gz).")
    return pairs, notes


def read_dataset_json(path: str | Path) -> tuple[list[LabelledPair], dict[int, str]]:
    """Medical Segmentation Decathlon dataset.json: training pairs and label names (both label-map styles)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise PGLError(f"{path}: cannot be read as a dataset.json ({e}).") from e
    root = path.parent
    try:
        entries = data["training"]
        raw = data["labels"]
        pairs = [LabelledPair(root / e["image"], root / e["label"]) for e in entries]
    except (KeyError, TypeError) as e:
        raise PGLError(f"{path}: needs 'training' (list of image/label entries) and 'labels'.") from e
    # MSD: {"0": "background", "1": "liver"}; nnU-Net v2: {"background": 0, "liver": 1}
    items = [(int(k), str(v)) for k, v in raw.items()] if all(str(k).isdigit() for k in raw) else \
        [(int(v), str(k)) for k, v in raw.items()]
    names = {i: n for i, n in items if i != 0}
    missing = [str(p.image) for p in pairs if not p.image.is_file()] + [str(p.label) for p in pairs
                                                                       if not p.label.is_file()]
    if missing:
        raise PGLError(f"{path}: lists files that do not exist: {', '.join(missing[:5])}.")
    if not pairs:
        raise PGLError(f"{path}: lists no training cases.")
    return pairs, names


MAX_LABEL = 255  # label maps are stored as 8-bit class indices


def check_label_values(path: Path, values: np.ndarray) -> None:
    """Refuse a label map whose values are not integers 0..MAX_LABEL, naming the file and the values."""
    values = np.asarray(values, dtype=np.float64)
    bad = values[~np.isfinite(values) | (np.mod(values, 1) != 0) | (values < 0) | (values > MAX_LABEL)]
    if bad.size:
        shown = ", ".join(f"{v:g}" for v in bad[:8]) + (f" and {bad.size - 8} more" if bad.size > 8 else "")
        raise PGLError(f"{path}: holds values other than the integers 0-{MAX_LABEL} of a label map ({shown}). A label "
                       f"map holds 0 (background) and 1, 2, ... for the structures; renumber them, or export the "
                       f"segmentation as a label map.")


def label_values(path: Path) -> list[int]:
    """The distinct values of a label map (to name labels when no names are given); refuses non-label values."""
    image = read_image(path)  # keep a reference: an array view dies with its image
    values = np.unique(sitk.GetArrayViewFromImage(image))
    check_label_values(path, values)
    return [int(v) for v in values]


def same_grid(a: tuple, b: tuple, spacing: np.ndarray) -> bool:
    size_a, affine_a = a
    size_b, affine_b = b
    return tuple(size_a) == tuple(size_b) and np.allclose(affine_a, affine_b, atol=1e-3 * float(spacing.min()))


def checked_label_image(pair: LabelledPair, names: dict[int, str]) -> sitk.Image:
    """The pair's label map with named values only, not empty: a label map on its scan's grid, or a `.seg.nrrd`
    as a label map on its own grid (segments to values by pair.segments, else matched to `names`)."""
    if is_segmentation_file(pair.label):
        return _segmentation_label_image(pair, names)
    label_image = read_image(pair.label)
    geometry = (label_image.GetSize(), image_affine_ras(label_image))
    scan_geometry = read_geometry(pair.image)
    if not same_grid(geometry, scan_geometry, np.array(label_image.GetSpacing())):
        raise PGLError(
            f"{pair.label}: has another grid than its scan {pair.image.name} (size {geometry[0]} vs "
            f"{tuple(scan_geometry[0])}, or different spacing/origin/orientation). Export the label map on the "
            f"scan's grid (in Slicer: Segmentations > Export to label map with the scan as reference).")
    values = np.unique(sitk.GetArrayViewFromImage(label_image))
    check_label_values(pair.label, values)
    unknown = sorted(int(v) for v in values if int(v) != 0 and int(v) not in names)
    if unknown:
        raise PGLError(f"{pair.label}: holds label values {unknown} that are not among the named labels "
                       f"{sorted(names)} ({', '.join(names.values())}). Name them (--label-names or dataset.json) "
                       f"or fix the label map.")
    if values.max() == 0:
        raise PGLError(f"{pair.label}: is empty (only background); remove it or draw its labels.")
    return label_image


def _segmentation_label_image(pair: LabelledPair, names: dict[int, str]) -> sitk.Image:
    """A `.seg.nrrd` as a label map on its own grid (the later segment wins where segments overlap)."""
    values = pair.segments
    if values is None:  # a pair that did not go through match_segments: match its segments to the names alone
        values = match_segments([pair], names)[0][0].segments
    segmentation = read_segmentation(pair.label)
    image = label_image(segmentation, values)
    if not np.any(sitk.GetArrayViewFromImage(image)):
        raise PGLError(f"{pair.label}: none of its segments ({', '.join(s.name for s in segments_of(segmentation))}"
                       f") holds a voxel of the labels {', '.join(names.values())}; draw them, or remove the file.")
    return image


def load_label_on_grid(pair: LabelledPair, scan: CachedScan, names: dict[int, str]) -> np.ndarray:
    """The label map resampled (nearest) onto the scan's cached RAS grid, checked against its scan. A `.seg.nrrd`
    may lie on another grid than its scan (Slicer crops or oversamples segmentations): its segments are resampled
    (nearest), as Slicer does when it exports them onto a volume."""
    label_image = checked_label_image(pair, names)
    array = resample(label_image, np.asarray(scan.affine), scan.shape, fill=0, interpolator=sitk.sitkNearestNeighbor)
    if is_segmentation_file(pair.label) and not array.any():
        raise PGLError(f"{pair.label}: its segments lie outside its scan {pair.image.name} (no labelled voxel on "
                       f"the scan's grid); save the segmentation drawn on that scan.")
    return np.rint(array).astype(np.uint8)


def label_on_scan_grid(pair: LabelledPair, scan_image: sitk.Image, names: dict[int, str]) -> np.ndarray:
    """The label map on the scan's own grid, ITK order (z, y, x) uint8: a label map as stored, a `.seg.nrrd`
    resampled (nearest) onto the scan's grid."""
    label_image = checked_label_image(pair, names)
    if is_segmentation_file(pair.label):
        label_image = sitk.Resample(label_image, scan_image, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                                    sitk.sitkUInt8)
        if not np.any(sitk.GetArrayViewFromImage(label_image)):
            raise PGLError(f"{pair.label}: its segments lie outside its scan {pair.image.name}; save the "
                           f"segmentation drawn on that scan.")
    return sitk.GetArrayFromImage(label_image).astype(np.uint8, copy=False)


def match_segments(pairs: list[LabelledPair], names: dict[int, str], progress: ProgressCallback | None = None
                   ) -> tuple[list[LabelledPair], dict[int, str]]:
    """Label values for the segments of `.seg.nrrd` label maps, by what each segment is (segment_table): the
    pairs with their segment -> value table, and the label names (LabelNames, with the segments' colours). With
    `names`, segments join the named labels and others are left out; without, each structure met becomes the
    next label. A case labels the structures of its non-empty segments. Overlaps, empty segments, the segments
    left out and how differently spelt segments were matched are reported as info events."""
    if not any(is_segmentation_file(p.label) for p in pairs):
        return pairs, names
    plain = [p.label for p in pairs if not is_segmentation_file(p.label)]
    if plain and not names:
        raise PGLError(f"{plain[0]}: label maps and Slicer segmentations (.seg.nrrd) are mixed, and nothing names "
                       f"the label maps' values. Give the label names in value order (--label-names or "
                       f"dataset.json): segments are matched to them by name, or save every case the same way.")
    table = StructureTable(names)
    matched = []
    for pair in pairs:
        if not is_segmentation_file(pair.label):
            matched.append(pair)
            continue
        segmentation = read_segmentation(pair.label)
        segments = segments_of(segmentation)
        counts = voxel_counts(segmentation, segments)
        drawn = [s for s in segments if counts[s.id]]
        empty = [s.name for s in segments if not counts[s.id]]
        if empty:
            emit(progress, "info", message=f"{pair.label}: segment(s) {', '.join(empty)} are empty, so this case "
                                           f"does not label them.")
        values, left_out = table.assign(pair.label, drawn)
        if left_out:
            emit(progress, "info", message=f"{pair.label}: segment(s) {', '.join(s.name for s in left_out)} are not "
                                           f"among the label names ({', '.join(names.values())}) and are left out "
                                           f"(their voxels count as background).")
        for first, later, count in overlaps(segmentation, [s for s in drawn if s.id in values]):
            emit(progress, "info", message=f"{pair.label}: segments '{first.name}' and '{later.name}' overlap in "
                                           f"{count} voxel(s); there the later segment in the file, '{later.name}', "
                                           f"is taken, as Slicer's Export to label map does.")
        matched.append(replace(pair, segments=values))
    report = table.report()
    if report:
        emit(progress, "info", message=report)
    found, colours = table.names()
    return matched, LabelNames(found, colours)
