"""Writing small DICOM series from phantom volumes (pydicom), including the awkward objects of real archives."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


def _dataset(path: Path, sop_class: str, modality: str, series_uid: str, study_uid: str, number: int,
             description: str) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID = modality, series_uid, study_uid
    ds.SeriesNumber, ds.SeriesDescription = number, description
    ds.PatientID, ds.PatientName = "PHANTOM", "Phantom^Test"
    return ds


def _save(ds: FileDataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        ds.save_as(str(path), enforce_file_format=True)  # pydicom >= 3
    except TypeError:
        ds.save_as(str(path), write_like_original=False)


def write_series(image: sitk.Image, folder: Path, *, modality: str = "CT", number: int = 1, description: str = "AXIAL",
                 slope: float = 1.0, intercept: float = -1024.0, image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
                 tilt_mm_per_slice: float = 0.0, drop_slices: tuple[int, ...] = (), tilt_orientation_of: int = -1,
                 study_uid: str | None = None) -> list[Path]:
    """One file per slice of `image` (values in HU), stored as int16 with `slope`/`intercept`; returns the files.

    tilt_mm_per_slice shifts each slice along the column direction (gantry tilt); drop_slices leaves slices out
    (missing files); tilt_orientation_of gives that one slice another orientation (non-parallel slices)."""
    folder.mkdir(parents=True, exist_ok=True)
    hu = sitk.GetArrayFromImage(image).astype(np.float64)  # (z, y, x)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    spacing, origin = np.array(image.GetSpacing()), np.array(image.GetOrigin())
    series_uid, study_uid = generate_uid(), study_uid or generate_uid()
    sop_class = CTImageStorage if modality == "CT" else MR_IMAGE_STORAGE
    files = []
    for k in range(hu.shape[0]):
        if k in drop_slices:
            continue
        path = folder / f"IM{k + 1:04d}.dcm"
        ds = _dataset(path, sop_class, modality, series_uid, study_uid, number, description)
        position = origin + k * spacing[2] * direction[:, 2] + k * tilt_mm_per_slice * direction[:, 1]
        orientation = np.concatenate([direction[:, 0], direction[:, 1]])
        if k == tilt_orientation_of:
            orientation = np.array([1.0, 0.0, 0.0, 0.0, np.cos(0.3), np.sin(0.3)])
        ds.ImageType = list(image_type)
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]  # row gap, column gap
        ds.SliceThickness = f"{spacing[2]:.6f}"
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = f"{slope:g}", f"{intercept:g}", "HU"
        stored = np.clip(np.rint((hu[k] - intercept) / slope), -32768, 32767).astype(np.int16)
        ds.PixelData = stored.tobytes()
        _save(ds, path)
        files.append(path)
    return files


def write_localizer(image: sitk.Image, folder: Path, number: int = 100) -> list[Path]:
    """A two-slice scout, marked LOCALIZER as scanners do."""
    single = image[:, :, :2]
    return write_series(single, folder, number=number, description="SCOUT",
                        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))


def write_report(path: Path) -> Path:
    """A structured report (no pixel data), as archives mix in with the images."""
    ds = _dataset(path, BASIC_TEXT_SR, "SR", generate_uid(), generate_uid(), 900, "Dose report")
    _save(ds, path)
    return path
