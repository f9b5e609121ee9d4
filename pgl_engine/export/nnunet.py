"""`pgl export-dataset --format nnunet`: labelled cases as an nnU-Net v2 raw dataset.

`DatasetNNN_NAME/imagesTr/<case>_0000.nii.gz`, `labelsTr/<case>.nii.gz` (on the scan's own grid, labels
renumbered 1..K in the order of their values) and `dataset.json` (`channel_names`, `labels` name -> value,
`numTraining`, `file_ending`). nnU-Net learns every unlabelled voxel as background, so a case that does not
label every structure (partial labels) is left out and listed, never exported as if complete. The folder is
written under a hidden temporary name and renamed when whole: nnU-Net never sees half a dataset.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .. import __version__
from ..data.imaging import is_segmentation_file, non_finite_note, read_scan, scan_name
from ..data.labels import (LabelledPair, label_on_scan_grid, label_values, labelled_values, match_segments,
                           names_from_sidecar, pair_folders, read_dataset_json)
from ..errors import PGLError
from ..progress import ProgressCallback, emit

FORMATS = ("nnunet",)
FILE_ENDING = ".nii.gz"
AIR_HU = -1024.0  # what a NaN/inf voxel becomes: nnU-Net refuses images with NaN
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def export_dataset(out: str | Path, name: str, dataset_id: int, images: str | Path | None = None,
                   labels: str | Path | None = None, dataset: str | Path | None = None,
                   pairs: list[tuple] | None = None, label_names: list[str] | tuple[str, ...] = (),
                   format: str = "nnunet", keep_case_names: bool = False, modalities: tuple[str, ...] = ("CT",),
                   progress: ProgressCallback | None = None) -> Path:
    """Write the labelled cases (images + labels folders, a dataset.json, or (scan, label map) pairs) as
    `out/DatasetNNN_NAME`; returns that folder. Cases are named NAME_001, ... (their scan names with
    keep_case_names). label_names names the label values 1, 2, ... (else dataset.json, the label maps' sidecars,
    a .seg.nrrd's segments, or "label N")."""
    if format not in FORMATS:
        raise PGLError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}.")
    if not isinstance(dataset_id, int) or not 1 <= dataset_id <= 999:
        raise PGLError(f"--id must be a whole number from 1 to 999 (nnU-Net's dataset ID), got {dataset_id!r}.")
    if not _NAME.match(str(name)):
        raise PGLError(f"--name must be letters, digits, '_' or '-' (it becomes the folder Dataset"
                       f"{dataset_id:03d}_NAME), got {name!r}.")
    target = check_target(Path(out), name, dataset_id)
    cases, names = labelled_cases(images, labels, dataset, pairs, list(label_names), modalities, progress)
    complete, partial = split_complete(cases, names)
    if partial:
        emit(progress, "warning", message=f"{len(partial)} case(s) do not label every structure and are left out "
                                          f"(nnU-Net would learn what they leave out as background): "
                                          f"{'; '.join(partial)}.", skipped=partial)
    if not complete:
        raise PGLError(f"no case labels every structure ({', '.join(names.values())}), so there is nothing to "
                       f"export for nnU-Net; label every structure in some cases, or export fewer structures "
                       f"(--label-names).")
    ids = case_ids(complete, name, keep_case_names)
    work = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    try:
        write_cases(work, complete, ids, names, progress)
        write_json(work / "dataset.json", dataset_json(name, names, len(complete)))
        if target.exists():
            target.rmdir()  # empty (check_target): replaced by the whole dataset at once
        os.replace(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    emit(progress, "done", out=str(target), cases=len(complete), left_out=partial,
         labels={n: k + 1 for k, n in enumerate(names[v] for v in sorted(names))},
         case_sources={i: str(p.image) for i, p in zip(ids, complete)})
    return target


def check_target(out: Path, name: str, dataset_id: int) -> Path:
    """out/DatasetNNN_NAME, refused if it holds anything or another dataset has the ID (nnU-Net finds by ID)."""
    target = out / f"Dataset{dataset_id:03d}_{name}"
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise PGLError(f"{target}: exists and is not empty; nothing of it is replaced. Choose another --name or "
                       f"--id, or another --out.")
    if out.is_dir():
        taken = [p.name for p in out.iterdir() if p.name.startswith(f"Dataset{dataset_id:03d}_") and p != target]
        if taken:
            raise PGLError(f"{out}: already holds {taken[0]} with the ID {dataset_id}; nnU-Net finds datasets by "
                           f"ID, so choose another --id.")
    elif out.exists():
        raise PGLError(f"{out}: is a file; --out is the folder (nnUNet_raw) the dataset folder goes into.")
    return target


def labelled_cases(images, labels, dataset, pairs, label_names: list[str], modalities: tuple[str, ...],
                   progress: ProgressCallback | None) -> tuple[list[LabelledPair], dict[int, str]]:
    """The pairs (segments matched) and the label names, from whichever source was given."""
    given = [what for what, value in (("--dataset", dataset), ("pairs", pairs), ("--images", images)) if value]
    if len(given) != 1 or (images and not labels) or (labels and not images):
        raise PGLError("Give the labelled cases one way: --images with --labels, or --dataset (a dataset.json).")
    names: dict[int, str] = {}
    if dataset:
        found, names = read_dataset_json(dataset)
    elif pairs:
        found = [LabelledPair(Path(image), Path(label)) for image, label in pairs]
        missing = [str(p) for pair in found for p in (pair.image, pair.label) if not p.exists()]
        if missing:
            raise PGLError(f"{missing[0]}: no such file.")
    else:
        found, notes = pair_folders(images, labels, tuple(modalities))
        for note in notes:
            emit(progress, "warning", message=note)
    if label_names:
        if len(set(label_names)) != len(label_names):
            raise PGLError(f"--label-names: each structure once, got {', '.join(label_names)}.")
        names = {i + 1: n for i, n in enumerate(label_names)}
    found, names = match_segments(found, names, progress)
    if not names:
        names = sidecar_names(found) or {v: f"label {v}" for v in sorted(set().union(
            *(set(label_values(p.label)) for p in found)) - {0})}
    if len({n.casefold() for n in names.values()}) != len(names):
        raise PGLError(f"the label names repeat a name ({', '.join(names.values())}); nnU-Net needs each once.")
    if "background" in (n.casefold() for n in names.values()):
        raise PGLError("a label is named 'background', the name nnU-Net gives 0; rename it (--label-names).")
    return found, names


def sidecar_names(pairs: list[LabelledPair]) -> dict[int, str]:
    """The names the label maps' sidecars give (the Slicer panel and `pgl phantom` write them), if every map has
    one and they agree; else {}."""
    names: dict[int, str] = {}
    for pair in pairs:
        found = names_from_sidecar(pair.label)
        if found is None:
            return {}
        for value, name in found.items():
            if names.setdefault(value, name) != name:
                raise PGLError(f"{pair.label}: its table names label {value} '{name}', another case's "
                               f"'{names[value]}'; give the names with --label-names.")
    return names


def split_complete(cases: list[LabelledPair], names: dict[int, str]) -> tuple[list[LabelledPair], list[str]]:
    """(cases that label every structure, "case: lacks a, b" for the others). A `.seg.nrrd` labels the
    structures of its non-empty segments; a label map those of its sidecar's table and the values it holds
    (every one without a table)."""
    complete, partial = [], []
    for pair in cases:
        listed = labelled_values(pair)
        if listed is not None and not is_segmentation_file(pair.label):
            listed |= set(label_values(pair.label))
        lacking = [] if listed is None else [n for v, n in sorted(names.items()) if v not in listed]
        if lacking:
            partial.append(f"{scan_name(pair.image)} lacks {', '.join(lacking)}")
        else:
            complete.append(pair)
    return complete, partial


def case_ids(cases: list[LabelledPair], name: str, keep_case_names: bool) -> list[str]:
    if not keep_case_names:  # neutral IDs: a dataset is made to be shared, scan names may name patients
        return [f"{name}_{i + 1:03d}" for i in range(len(cases))]
    ids = [scan_name(p.image) for p in cases]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise PGLError(f"--keep-case-names: several cases are named {twice[0]}; leave the option out to number "
                       f"them.")
    return ids


def write_cases(folder: Path, cases: list[LabelledPair], ids: list[str], names: dict[int, str],
                progress: ProgressCallback | None) -> None:
    """Each scan as `imagesTr/<id>_0000.nii.gz` and its labels, renumbered 1..K, on the scan's grid."""
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    to_class = np.zeros(256, dtype=np.uint8)
    to_class[sorted(names)] = np.arange(1, len(names) + 1)
    for i, (pair, case) in enumerate(zip(cases, ids)):
        image, non_finite = read_scan(pair.image, AIR_HU)
        if non_finite:
            emit(progress, "warning", message=non_finite_note(pair.image, non_finite, AIR_HU))
        label = sitk.GetImageFromArray(to_class[label_on_scan_grid(pair, image, names)])
        label.CopyInformation(image)  # the scan's exact geometry: nnU-Net compares them
        sitk.WriteImage(image, str(folder / "imagesTr" / f"{case}_0000{FILE_ENDING}"), useCompression=True)
        sitk.WriteImage(label, str(folder / "labelsTr" / f"{case}{FILE_ENDING}"), useCompression=True)
        emit(progress, "progress", stage="export", step=i + 1, total=len(cases), file=scan_name(pair.image))


def dataset_json(name: str, names: dict[int, str], count: int) -> dict:
    """nnU-Net v2's dataset.json: labels consecutive from 0 (background), in the order of their values."""
    return {"name": name, "description": f"exported by pgl_engine {__version__} (pgl export-dataset)",
            "channel_names": {"0": "CT"},
            "labels": {"background": 0, **{names[v]: k + 1 for k, v in enumerate(sorted(names))}},
            "numTraining": count, "file_ending": FILE_ENDING}


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2))
