"""DICOM archives: the image series in a folder tree, each checked and read as one 3D image in HU.

Headers are read with pydicom (tag by tag, without pixel data, so memory does not grow with the archive):
files are grouped by SeriesInstanceUID, slices sorted along their normal and the geometry checked. The voxels
are read with SimpleITK's GDCM series reader, in that order: it decodes the compressed transfer syntaxes
(JPEG, JPEG 2000, RLE) that pydicom needs extra plugins for, and applies the rescale slope and intercept (HU).
"""
from __future__ import annotations

import os
import re
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import PGLError

# objects that hold no image of the patient's anatomy
NON_IMAGE_MODALITIES = {"SR", "SEG", "RTSTRUCT", "RTPLAN", "RTRECORD", "RTDOSE", "PR", "KO", "DOC", "REG",
                        "RWV", "FID", "PLAN", "AU", "ECG"}
MIN_SLICES = 5  # fewer is a localizer, a scout or a partial transfer, not a volume
DIRECTION_TOLERANCE = 1e-3  # |1 - cos| between slice orientations (about 2.5 degrees)
TILT_TOLERANCE_DEG = 0.5
SPACING_TOLERANCE = 0.05  # relative deviation of one slice gap from the median gap
HEADER_TAGS = ["SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription",
               "Modality", "ImageType", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows",
               "Columns", "NumberOfFrames", "BitsAllocated", "SamplesPerPixel"]
DICOM_MARKER = (128, b"DICM")  # after the preamble of every DICOM file (Part 10)
DICOMDIR = "1.2.840.10008.1.3.10"  # a media directory: DICOM, but no image and no series
# uncompressed transfer syntaxes -> bytes of the pixel data element's own header (tag, [VR], length)
NATIVE_SYNTAXES = {"1.2.840.10008.1.2": 8, "1.2.840.10008.1.2.1": 12, "1.2.840.10008.1.2.2": 12}


@dataclass(frozen=True)
class SliceHeader:
    path: Path
    series_uid: str
    modality: str
    image_type: tuple[str, ...]
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None
    rows: int
    columns: int
    frames: int
    series_number: str
    description: str


@dataclass(frozen=True)
class DicomSeries:
    """One checked series: its files in slice order and its geometry (ITK's LPS convention)."""

    name: str  # unique among the scans of a search, usable as a file name
    uid: str
    modality: str
    description: str
    files: tuple[Path, ...]
    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]  # row-major 3x3, columns = image axes

    def __str__(self) -> str:
        return f"{self.files[0].parent} [DICOM series {self.name}, {len(self.files)} slices]"


@dataclass(frozen=True)
class Skipped:
    what: str
    reason: str

    def __str__(self) -> str:
        return f"{self.what}: {self.reason}"


class UnreadableDicom(Exception):
    """A file marked as DICOM that cannot be read (the message is the reason)."""


def has_dicom_marker(path: Path) -> bool:
    offset, marker = DICOM_MARKER
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(len(marker)) == marker
    except OSError:
        return False


def _read_tags(path: Path, force: bool):
    """The header tags, and how many bytes the file holds from where reading stopped on: from the pixel data
    element on, or < 0 when the reader skipped past the end of a truncated file."""
    import pydicom

    with open(path, "rb") as fp:
        with warnings.catch_warnings():  # a damaged file is reported by name below, not as pydicom's warnings
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=HEADER_TAGS, force=force)
        return ds, os.fstat(fp.fileno()).st_size - fp.tell()


def read_header(path: Path) -> SliceHeader | None:
    """The tags this module needs; None when the file is not DICOM; UnreadableDicom when it is marked as DICOM
    (DICM after the preamble) but truncated or corrupt, so that it is named instead of ignored."""
    from pydicom.errors import InvalidDicomError

    marked = has_dicom_marker(path)
    try:
        ds, left = _read_tags(path, force=False)
    except InvalidDicomError:
        if path.suffix.lower() not in (".dcm", ".ima", ".dicom"):
            return None
        try:  # some exports omit the 128-byte preamble
            ds, left = _read_tags(path, force=True)
        except Exception:
            return None
    except Exception as e:
        if marked:
            detail = (str(e).strip().splitlines() or [type(e).__name__])[-1]
            raise UnreadableDicom(f"marked as DICOM but cannot be read ({detail[:200]})") from e
        return None
    file_meta = getattr(ds, "file_meta", None) or {}
    if marked and left < 0:
        raise UnreadableDicom("truncated or garbled: its header runs past the end of the file")
    if marked and "SeriesInstanceUID" not in ds and str(file_meta.get("MediaStorageSOPClassUID", "")) != DICOMDIR:
        raise UnreadableDicom("marked as DICOM but has no series UID: its header is damaged (truncated or corrupt) "
                              "or it is not part of an image series")
    if "SOPClassUID" not in ds and "SeriesInstanceUID" not in ds:
        return None

    def floats(name: str, count: int):
        value = ds.get(name)
        try:
            values = tuple(float(v) for v in value)
        except (TypeError, ValueError):
            return None
        return values if len(values) == count else None

    try:
        header = SliceHeader(
            path=path, series_uid=str(ds.get("SeriesInstanceUID", "")), modality=str(ds.get("Modality", "")),
            image_type=tuple(str(v).upper() for v in (ds.get("ImageType") or ())),
            position=floats("ImagePositionPatient", 3), orientation=floats("ImageOrientationPatient", 6),
            pixel_spacing=floats("PixelSpacing", 2), rows=int(ds.get("Rows") or 0),
            columns=int(ds.get("Columns") or 0), frames=int(ds.get("NumberOfFrames") or 1),
            series_number=str(ds.get("SeriesNumber", "") or ""),
            description=str(ds.get("SeriesDescription", "") or ""))
    except (TypeError, ValueError) as e:
        if marked:
            raise UnreadableDicom(f"marked as DICOM but holds unreadable values ({str(e)[:200]})") from e
        return None
    if marked:
        problem = _pixel_data_problem(ds, file_meta, header, left)
        if problem:
            raise UnreadableDicom(problem)
    return header


def _pixel_data_problem(ds, file_meta, header: SliceHeader, left: int) -> str | None:
    """Why an uncompressed image's pixel data is cut short (`left`: bytes from the pixel data element on), else
    None. A truncated slice would otherwise fail its whole series at decoding time, without its name."""
    element_header = NATIVE_SYNTAXES.get(str(file_meta.get("TransferSyntaxUID", "")))
    try:
        bits, samples = int(ds.get("BitsAllocated") or 0), int(ds.get("SamplesPerPixel") or 1)
    except (TypeError, ValueError):
        return None
    if element_header is None or bits < 8 or samples != 1 or not header.rows or not header.columns:
        return None  # compressed, packed or colour (maybe subsampled) pixel data: the decoder checks it
    expected = header.rows * header.columns * header.frames * (bits // 8)
    if left <= 0:
        return "truncated: the file ends before its pixel data"
    if left - element_header < expected:
        return f"truncated: {max(left - element_header, 0)} of the {expected} bytes of its pixel data are there"
    return None


def find_series(files: list[Path], root: Path, modalities: tuple[str, ...] = ("CT",)
                ) -> tuple[list[DicomSeries], list[Skipped], list[Path]]:
    """(usable series, skipped series, objects and unreadable DICOM files with the reason, files that are not
    DICOM)."""
    groups: dict[str, list[SliceHeader]] = defaultdict(list)
    not_dicom, unreadable = [], []
    for path in files:
        try:
            header = read_header(path)
        except UnreadableDicom as e:
            unreadable.append(Skipped(str(path), f"{e}; copy it again from the archive or remove it"))
            continue
        if header is None:
            not_dicom.append(path)
        else:
            groups[header.series_uid or f"(no series UID) {path}"].append(header)
    wanted = {m.upper() for m in modalities}
    checked, skipped = [], []
    for uid, headers in groups.items():
        try:
            checked.append((uid, headers, series_geometry(headers, wanted)))
        except SeriesRefused as refusal:
            skipped.append(Skipped(describe(headers, root), str(refusal)))
    names = series_names([headers for _, headers, _ in checked], root)
    series = [DicomSeries(name, uid, headers[0].modality, headers[0].description, *geometry)
              for name, (uid, headers, geometry) in zip(names, checked)]
    return sorted(series, key=lambda s: s.name), unreadable + skipped, not_dicom


class SeriesRefused(Exception):
    """Why a series is not used (the message is the reason)."""


def series_geometry(headers: list[SliceHeader], modalities: set[str]):
    """(files in slice order, size, spacing, origin, direction) of a usable series; SeriesRefused otherwise."""
    first = headers[0]
    modality = first.modality.upper()
    if modality in NON_IMAGE_MODALITIES or not first.rows or not first.columns:
        raise SeriesRefused(f"not an image ({modality or 'no modality'}: reports, segmentations, structure sets, "
                            f"presentation states and dose objects are not scans)")
    if modality not in modalities:
        raise SeriesRefused(f"modality {modality or 'unknown'}, not {'/'.join(sorted(modalities))} "
                            f"(add it with --modalities {' '.join(sorted(modalities | {modality}))})")
    if "LOCALIZER" in first.image_type:
        raise SeriesRefused("a localizer (scout) image, not a volume")
    if any(h.frames > 1 for h in headers):
        raise SeriesRefused("a multi-frame (enhanced) object; export the series as single-frame slices or as "
                            "NIfTI/NRRD (e.g. from Slicer's DICOM module)")
    if len(headers) < MIN_SLICES:
        raise SeriesRefused(f"only {len(headers)} slice(s): a localizer, a scout or an incomplete transfer")
    if any(h.position is None or h.orientation is None or h.pixel_spacing is None for h in headers):
        raise SeriesRefused("slices without position, orientation or pixel spacing")
    if any((h.rows, h.columns, h.pixel_spacing) != (first.rows, first.columns, first.pixel_spacing)
           for h in headers):
        raise SeriesRefused("slices of different sizes or pixel spacings")
    row, column = np.array(first.orientation[:3]), np.array(first.orientation[3:])
    normal = np.cross(row, column)
    for h in headers[1:]:
        other = np.array(h.orientation)
        if np.abs(other - np.array(first.orientation)).max() > DIRECTION_TOLERANCE:
            raise SeriesRefused("slices are not parallel (several orientations in one series: a localizer?)")
    ordered = sorted(headers, key=lambda h: float(np.dot(h.position, normal)))
    positions = np.array([h.position for h in ordered])
    along = positions @ normal
    gaps = np.diff(along)
    if np.any(gaps < 1e-3):
        raise SeriesRefused("several slices share one position (two acquisitions or a duplicated file)")
    median = float(np.median(gaps))
    worst = int(np.argmax(np.abs(gaps - median)))
    if abs(gaps[worst] - median) > SPACING_TOLERANCE * median:
        missing = gaps[worst] > 1.5 * median
        raise SeriesRefused((f"missing slices: a gap of {gaps[worst]:.2f} mm after slice {worst + 1} where the "
                             f"others are {median:.2f} mm apart" if missing else
                             f"uneven slice spacing ({gaps.min():.2f} to {gaps.max():.2f} mm)")
                            + "; re-export the complete series or convert it with Slicer's DICOM module")
    displacement = positions[-1] - positions[0]
    tilt = float(np.degrees(np.arccos(min(1.0, abs(np.dot(displacement, normal)) / np.linalg.norm(displacement)))))
    if tilt > TILT_TOLERANCE_DEG:
        raise SeriesRefused(f"gantry tilt of {tilt:.1f} degrees (slices are sheared); load it in Slicer's DICOM "
                            f"module with acquisition geometry regularization and save it as NIfTI or NRRD")
    spacing = (first.pixel_spacing[1], first.pixel_spacing[0], median)  # PixelSpacing is (row gap, column gap)
    direction = np.stack([row, column, normal], axis=1)
    return (tuple(h.path for h in ordered), (first.columns, first.rows, len(ordered)), spacing,
            tuple(float(v) for v in positions[0]), tuple(float(v) for v in direction.ravel()))


def describe(headers: list[SliceHeader], root: Path) -> str:
    first = headers[0]
    folder = _relative(first.path.parent, root)
    label = " ".join(p for p in (f"series {first.series_number}" if first.series_number else "",
                                 repr(first.description) if first.description else "") if p)
    return f"{folder} [{label or 'DICOM'}, {len(headers)} file(s)]"


def series_names(groups: list[list[SliceHeader]], root: Path) -> list[str]:
    """A file-name-safe name per series: its folder's relative path, with the series number where a folder holds
    several; unique among the series found."""
    per_folder: dict[Path, int] = defaultdict(int)
    for headers in groups:
        per_folder[headers[0].path.parent] += 1
    names, used = [], set()
    for headers in groups:
        first = headers[0]
        folder = _relative(first.path.parent, root)
        parts = [] if folder == "." else [folder]
        if per_folder[first.path.parent] > 1 or not parts:
            parts.append(f"series_{first.series_number or 'x'}")
        name = _safe("_".join(parts))
        candidate, n = name, 2
        while candidate in used:
            candidate, n = f"{name}_{n}", n + 1
        used.add(candidate)
        names.append(candidate)
    return names


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "series"


def read_series(series: DicomSeries):
    """The series as one SimpleITK image in HU, slices in the checked order."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in series.files])
    try:
        image = reader.Execute()
    except RuntimeError as e:
        detail = (str(e).strip().splitlines() or ["unreadable"])[-1]
        raise PGLError(f"{series}: cannot be decoded ({detail[:200]}); re-export the series.") from e
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise PGLError(f"{series}: is not a single-channel 3D image (colour or multi-frame DICOM).")
    return image
