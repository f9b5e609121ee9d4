"""Reading scans in any orientation and resampling them onto an axis-aligned RAS grid.

Arrays are indexed (x, y, z) along increasing RAS x (towards the patient's Right), y (Anterior) and
z (Superior): the grid's voxel-to-RAS affine is diagonal and positive.
Geometry is handled by SimpleITK (LPS internally); the conversion to RAS happens here and only here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from ..atomic import atomic_write
from ..errors import PGLError
from .dicom import DicomSeries, Skipped, find_series, read_series

SCAN_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
SEGMENTATION_SUFFIX = ".seg.nrrd"  # Slicer's segmentation file: a label map (segments), never a scan
LABEL_SUFFIXES = (SEGMENTATION_SUFFIX, *SCAN_SUFFIXES)  # what a folder of label maps may hold
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass
class Volume:
    """A 3D array indexed (x, y, z) on an axis-aligned RAS grid, with its voxel-to-RAS affine."""

    array: np.ndarray
    affine: np.ndarray
    non_finite: int = 0  # NaN/inf voxels of the scan that were replaced at read time

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.abs(np.diag(self.affine)[:3]))


def is_segmentation_file(path) -> bool:
    """A Slicer segmentation (`.seg.nrrd`): segments with names, colours and terminology, not a scan."""
    return isinstance(path, Path) and path.name.lower().endswith(SEGMENTATION_SUFFIX)


def is_scan_file(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and not name.startswith(".") and name.endswith(SCAN_SUFFIXES) and \
        not is_segmentation_file(path)


LABEL_FOLDERS = {"labels", "labelstr", "labelsts", "segmentations"}  # label maps, not scans, in a cohort tree


@dataclass
class ScanSearch:
    """What a folder tree holds: the scans to use, what was skipped and why, and how many other files."""

    folder: Path
    scans: list  # Path for a scan file, DicomSeries for a series
    skipped: list[Skipped]
    other_files: int

    def required(self) -> list:
        """The scans; a clear error, with the first reasons for skipping, when there are none."""
        if not self.scans:
            reasons = "".join(f"\n  skipped {s}" for s in self.skipped[:10])
            raise PGLError(
                f"{self.folder}: holds no scans. Put 3D CT files ({', '.join(SCAN_SUFFIXES)}) or DICOM series in it, "
                f"or generate a test cohort with `pgl phantom --out {self.folder.parent / 'phantoms'}`.{reasons}")
        return self.scans


def find_scans(folder: str | Path, modalities: tuple[str, ...] = ("CT",), exclude: tuple = ()) -> ScanSearch:
    """Scan files and DICOM series anywhere under `folder` (hidden folders, label-map folders and `exclude` aside).

    Scan files keep their file name, so two with one name in different subfolders are refused (outputs and label
    maps pair with scans by name)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PGLError(f"{folder}: no such folder. Give a folder that holds CT scans ({', '.join(SCAN_SUFFIXES)}) "
                       f"or DICOM series.")
    excluded = {Path(p).resolve() for p in exclude}
    files, others, skipped = [], [], []
    for here, subfolders, names in os.walk(folder):
        here_path = Path(here)
        keep = []
        for sub in sorted(subfolders):
            path = here_path / sub
            if sub.startswith(".") or path.resolve() in excluded:
                continue
            if sub.lower() in LABEL_FOLDERS:
                skipped.append(Skipped(str(path), "a folder of label maps, not scans"))
                continue
            keep.append(sub)
        subfolders[:] = keep
        for name in sorted(names):
            path = here_path / name
            if name.startswith("."):
                continue
            if is_segmentation_file(path):  # ends in .nrrd, but holds segments: pretraining must not see it
                skipped.append(Skipped(str(path), "a Slicer segmentation (.seg.nrrd), i.e. labels, not a scan"))
                continue
            (files if is_scan_file(path) else others).append(path)
    series, dicom_skipped, not_dicom = find_series(others, folder, modalities)
    by_name: dict[str, Path] = {}
    for path in files:
        if path.name in by_name:
            raise PGLError(f"{by_name[path.name]} and {path}: two scans named {path.name}; outputs and label maps are "
                           f"paired with scans by file name, so rename one of them.")
        by_name[path.name] = path
    not_scans = [p for p in not_dicom if not p.name.lower().endswith((".json", ".txt", ".csv", ".md"))]
    return ScanSearch(folder, sorted(files) + series, skipped + dicom_skipped, len(not_scans))


def list_scans(folder: str | Path, modalities: tuple[str, ...] = ("CT",), exclude: tuple = ()) -> list:
    """The scans of a folder tree, sorted; a clear error when there are none."""
    return find_scans(folder, modalities, exclude).required()


def scan_name(scan) -> str:
    """The name outputs and label maps take after a scan: its file name without suffix, or the series' name."""
    return scan.name if isinstance(scan, DicomSeries) else strip_scan_suffix(scan.name)


def strip_scan_suffix(name: str) -> str:
    """"case_1.nii.gz" -> "case_1"; "case_1.seg.nrrd" -> "case_1" (the .seg is no part of the name)."""
    lowered = name.lower()
    for suffix in LABEL_SUFFIXES:
        if lowered.endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_image(path) -> sitk.Image:
    """Read one 3D scalar image (a file or a DICOM series); PGLError naming it if it is corrupt, truncated, 2D
    or 4D."""
    if isinstance(path, DicomSeries):
        return read_series(path)
    path = Path(path)
    try:
        image = _read_nifti(path) if path.name.lower().endswith((".nii", ".nii.gz")) else sitk.ReadImage(str(path))
    except PGLError:
        raise
    except Exception as e:  # each reader has its own exception types; all mean "unreadable file"
        detail = (str(e).strip().splitlines() or [type(e).__name__])[-1]
        raise PGLError(
            f"{path}: cannot be read as a medical image ({detail[:200]}). The file may be corrupt or truncated; "
            f"re-export it or remove it from the folder."
        ) from e
    size = image.GetSize()
    components = image.GetNumberOfComponentsPerPixel()
    if image.GetDimension() != 3 or components != 1:
        what = f"{image.GetDimension()}D" + (f" with {components} components" if components > 1 else "")
        raise PGLError(f"{path}: is a {what} image of size {size}; PGL needs single-channel 3D scans.")
    if min(size) < 2:
        raise PGLError(f"{path}: has size {size}, i.e. a single slice; PGL needs 3D scans.")
    return image


def _read_nifti(path: Path) -> sitk.Image:
    """NIfTI through nibabel: ITK's reader silently accepts truncated .nii/.nii.gz files, nibabel does not."""
    nifti = nib.load(str(path))
    proxy = nifti.dataobj
    unscaled = getattr(proxy, "slope", 1.0) == 1.0 and getattr(proxy, "inter", 0.0) == 0.0
    # keep integer voxels as stored (half the memory of float32 for int16 CT); scaled data becomes float32
    data = np.asarray(proxy.get_unscaled()) if unscaled and hasattr(proxy, "get_unscaled") else \
        np.asarray(proxy, dtype=np.float32)
    if data.dtype.kind not in "iuf" or data.dtype == np.float64:
        data = data.astype(np.float32)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise PGLError(f"{path}: is a {data.ndim}D image of size {data.shape}; PGL needs single-channel 3D scans.")
    affine = nifti.affine
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(v) for v in _LPS_TO_RAS @ affine[:3, 3]))
    image.SetDirection(tuple(float(v) for v in (_LPS_TO_RAS @ affine[:3, :3] / spacing).ravel()))
    return image


def _affine_ras(direction: tuple, spacing: tuple, origin: tuple) -> np.ndarray:
    """Voxel index (i, j, k) -> RAS mm affine from ITK's LPS geometry."""
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ np.array(direction).reshape(3, 3) @ np.diag(spacing)
    affine[:3, 3] = _LPS_TO_RAS @ np.array(origin)
    return affine


def image_affine_ras(image: sitk.Image) -> np.ndarray:
    return _affine_ras(image.GetDirection(), image.GetSpacing(), image.GetOrigin())


def read_geometry(path) -> tuple[tuple[int, ...], np.ndarray]:
    """(size, voxel-to-RAS affine) from the header only, without reading the voxels."""
    if isinstance(path, DicomSeries):
        return tuple(path.size), _affine_ras(path.direction, path.spacing, path.origin)
    path = Path(path)
    try:
        if path.name.lower().endswith((".nii", ".nii.gz")):
            nifti = nib.load(str(path))
            return tuple(int(s) for s in nifti.shape[:3]), nifti.affine
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        return tuple(reader.GetSize()), _affine_ras(reader.GetDirection(), reader.GetSpacing(), reader.GetOrigin())
    except Exception as e:  # any reader failure means an unreadable header
        raise PGLError(f"{path}: cannot read its header ({str(e).strip()[:200]}).") from e


def image_ras_corners(image: sitk.Image) -> np.ndarray:
    """RAS coordinates of the 8 outer corners of the image's voxel extent (8, 3)."""
    size = np.array(image.GetSize(), dtype=float)
    corners_index = np.array([[a, b, c] for a in (-0.5, size[0] - 0.5)
                              for b in (-0.5, size[1] - 0.5) for c in (-0.5, size[2] - 0.5)])
    corners_lps = np.array([image.TransformContinuousIndexToPhysicalPoint(tuple(c)) for c in corners_index])
    return corners_lps @ _LPS_TO_RAS.T


def ras_grid_covering(image: sitk.Image, spacing: tuple[float, float, float]) -> tuple[np.ndarray, tuple]:
    """(affine, size) of the axis-aligned RAS grid with `spacing` that covers the image's extent."""
    corners = image_ras_corners(image)
    lo, hi = corners.min(0), corners.max(0)
    spacing = np.asarray(spacing, dtype=float)
    size = np.maximum(np.ceil((hi - lo) / spacing - 1e-6), 1).astype(int)
    affine = np.eye(4)
    affine[:3, :3] = np.diag(spacing)
    # centre the grid on the image extent so rounding is shared equally by both ends
    affine[:3, 3] = (lo + hi) / 2 - (size - 1) / 2 * spacing
    return affine, tuple(int(s) for s in size)


def resample(image: sitk.Image, affine: np.ndarray, size: tuple[int, int, int], *, fill: float,
             interpolator: int = sitk.sitkLinear, antialias: bool = True) -> np.ndarray:
    """Sample `image` on the RAS grid (affine diagonal, size) and return an (x, y, z) float32 array.

    The input keeps its stored pixel type (no full-size float copy); only the output is float32.
    """
    target_spacing = np.abs(np.diag(affine)[:3])
    if antialias and interpolator == sitk.sitkLinear:
        image = _smooth_before_downsampling(image, target_spacing)
    origin_lps = _LPS_TO_RAS @ affine[:3, 3]
    direction_lps = _LPS_TO_RAS @ np.diag(np.sign(np.diag(affine)[:3]))
    resampler = sitk.ResampleImageFilter()
    resampler.SetOutputOrigin(tuple(float(v) for v in origin_lps))
    resampler.SetOutputSpacing(tuple(float(v) for v in target_spacing))
    resampler.SetOutputDirection(tuple(float(v) for v in direction_lps.ravel()))
    resampler.SetSize(tuple(int(s) for s in size))
    resampler.SetInterpolator(interpolator)
    resampler.SetDefaultPixelValue(float(fill))
    resampler.SetOutputPixelType(sitk.sitkFloat32)
    out = resampler.Execute(image)
    return np.ascontiguousarray(sitk.GetArrayFromImage(out).transpose(2, 1, 0))


def _smooth_before_downsampling(image: sitk.Image, target_spacing: np.ndarray) -> sitk.Image:
    """Anti-aliasing on axes that shrink by > 1.5x, so noise averages out as on a real coarse scan: the voxels
    are first averaged in blocks of floor(target / source) along each such axis (what a coarse detector does,
    and one cheap pass), then a Gaussian takes the rest of the way to a box average over `target` (std
    target/sqrt(12), less what the blocks already average). The edge voxels are repeated to fill the last block.
    """
    source = np.array(image.GetSpacing())
    direction = np.abs(np.array(image.GetDirection()).reshape(3, 3))
    target = target_spacing[direction.argmax(axis=0)]  # the RAS axis each image axis runs along
    shrinks = target > 1.5 * source
    if not np.any(shrinks):
        return image
    factors = np.where(shrinks, np.floor(target / source), 1).astype(int)
    size = np.array(image.GetSize())
    short = (-size) % factors
    if np.any(short):
        image = sitk.ZeroFluxNeumannPad(image, [0, 0, 0], [int(v) for v in short])
    image = sitk.BinShrink(image, [int(f) for f in factors])
    binned = source * factors
    sigma = np.where(shrinks, np.sqrt(np.maximum(target ** 2 - binned ** 2, 0.0) / 12.0), 0.0)
    for axis in np.flatnonzero(sigma > 0.1 * binned):  # under a tenth of a voxel: nothing left to smooth
        gaussian = sitk.RecursiveGaussianImageFilter()
        gaussian.SetSigma(float(sigma[axis]))
        gaussian.SetDirection(int(axis))
        image = gaussian.Execute(image)
    return image


def read_scan(path, fill: float) -> tuple[sitk.Image, int]:
    """read_image, with NaN/inf voxels (e.g. padding outside the field of view) set to `fill`; returns the image
    and how many voxels were replaced."""
    image = read_image(path)
    if image.GetPixelID() not in (sitk.sitkFloat32, sitk.sitkFloat64):
        return image, 0  # integer voxels are always finite
    view = sitk.GetArrayViewFromImage(image)
    bad = ~np.isfinite(view)
    count = int(bad.sum())
    if not count:
        return image, 0
    fixed = sitk.GetImageFromArray(np.where(bad, np.asarray(fill, view.dtype), view))
    fixed.CopyInformation(image)
    return fixed, count


def non_finite_note(path, count: int, fill: float) -> str:
    return (f"{path}: {count} voxel(s) are NaN or infinite (often padding outside the field of view); they were set "
            f"to {fill:g}, the low end of the HU window.")


def load_ras(path: str | Path, spacing: tuple[float, float, float], fill: float = -1024.0) -> Volume:
    """Read a scan (non-finite voxels set to `fill`) and resample it onto the axis-aligned RAS grid with `spacing`
    covering it."""
    image, non_finite = read_scan(path, fill)
    affine, size = ras_grid_covering(image, spacing)
    return Volume(resample(image, affine, size, fill=fill), affine, non_finite)


def normalise_hu(array: np.ndarray, hu_window: tuple[float, float]) -> np.ndarray:
    """Clip to the HU window and map it linearly to [0, 1] (float32)."""
    lo, hi = hu_window
    return ((np.clip(array, lo, hi) - lo) / (hi - lo)).astype(np.float32)


def write_nifti(array: np.ndarray, affine: np.ndarray, path: Path, like: nib.Nifti1Image | None = None) -> None:
    """Write an (x, y, z) array as NIfTI atomically; with `like`, copy its qform/sform codes."""
    image = nib.Nifti1Image(array, affine)
    image.header.set_xyzt_units("mm")
    if like is not None:
        image.set_qform(affine, int(like.header["qform_code"]) or 1)
        image.set_sform(affine, int(like.header["sform_code"]) or 1)
    else:
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
    atomic_write(path, lambda tmp: nib.save(image, str(tmp)), size_hint=array.nbytes)


def write_image_like(array_zyx: np.ndarray, reference: sitk.Image, path: Path) -> None:
    """Write an ITK-ordered (z, y, x) array with the reference's geometry (NRRD, MHA, ...) atomically."""
    image = sitk.GetImageFromArray(array_zyx)
    image.CopyInformation(reference)
    atomic_write(path, lambda tmp: sitk.WriteImage(image, str(tmp), useCompression=True), size_hint=array_zyx.nbytes)


def ras_image(array_xyz: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A SimpleITK image of an (x, y, z) array on an axis-aligned RAS grid (diagonal affine)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_xyz.transpose(2, 1, 0)))
    image.SetSpacing(tuple(float(v) for v in np.abs(np.diag(affine)[:3])))
    image.SetOrigin(tuple(float(v) for v in _LPS_TO_RAS @ affine[:3, 3]))
    image.SetDirection(tuple(float(v) for v in (_LPS_TO_RAS @ np.diag(np.sign(np.diag(affine)[:3]))).ravel()))
    return image
