"""Reading scans: any orientation gives the same physical image; bad files give clear errors; caching."""
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

import pgl_engine.data.cache as cache_module
from pgl_engine.data.cache import ScanCache
from pgl_engine.data.imaging import list_scans, load_ras
from pgl_engine.errors import PGLError


def field(ras: np.ndarray) -> np.ndarray:
    """A smooth function of RAS position (mm), the 'anatomy' every file samples."""
    x, y, z = ras[..., 0], ras[..., 1], ras[..., 2]
    return 100 * np.sin(x / 17.0) + 80 * np.cos(y / 23.0 + 0.3) + 60 * np.sin(z / 29.0 + x / 41.0)


def rotation(deg_x: float, deg_z: float) -> np.ndarray:
    ax, az = np.deg2rad([deg_x, deg_z])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ rx


def write_nifti(path: Path, affine: np.ndarray, shape) -> Path:
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(float)
    ras = idx @ affine[:3, :3].T + affine[:3, 3]
    nib.save(nib.Nifti1Image(field(ras).astype(np.float32), affine), str(path))
    return path


def write_lps_nrrd(path: Path, spacing, origin_lps, shape) -> Path:
    """An LPS-oriented NRRD (identity direction in LPS, as DICOM-derived files usually are)."""
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(float)
    lps = idx * np.asarray(spacing) + np.asarray(origin_lps)
    ras = lps * np.array([-1, -1, 1])
    image = sitk.GetImageFromArray(field(ras).astype(np.float32).transpose(2, 1, 0))
    image.SetSpacing(spacing)
    image.SetOrigin(origin_lps)
    sitk.WriteImage(image, str(path))
    return path


def interior_error(volume, source_affine, source_shape, margin=3):
    """Max |resampled - truth| over voxels at least `margin` source voxels inside the source image."""
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in volume.array.shape], indexing="ij"), -1).astype(float)
    ras = idx @ volume.affine[:3, :3].T + volume.affine[:3, 3]
    src = (ras - source_affine[:3, 3]) @ np.linalg.inv(source_affine[:3, :3]).T
    inside = np.all((src >= margin) & (src <= np.array(source_shape) - 1 - margin), axis=-1)
    assert inside.sum() > 500
    return np.abs(volume.array[inside] - field(ras[inside])).max()


def test_ras_lps_and_oblique_files_give_the_same_physical_image(tmp_path):
    ras_affine = np.diag([2.0, 2.0, 3.0, 1.0])
    ras_affine[:3, 3] = [-40, -30, -50]
    oblique = np.eye(4)
    oblique[:3, :3] = rotation(12, 25) @ np.diag([1.8, 1.8, 2.5])
    oblique[:3, 3] = [-30, -35, -45]
    lps_spacing, lps_origin = (1.5, 1.5, 2.5), (40.0, 35.0, -50.0)
    lps_affine = np.diag([-1.5, -1.5, 2.5, 1.0])
    lps_affine[:3, 3] = [-40.0, -35.0, -50.0]
    files = [(write_nifti(tmp_path / "ras.nii.gz", ras_affine, (40, 30, 32)), ras_affine, (40, 30, 32)),
             (write_nifti(tmp_path / "oblique.nii", oblique, (40, 40, 36)), oblique, (40, 40, 36)),
             (write_lps_nrrd(tmp_path / "lps.nrrd", lps_spacing, lps_origin, (50, 44, 36)), lps_affine,
              (50, 44, 36))]
    for path, affine, shape in files:
        volume = load_ras(path, (2.0, 2.0, 2.0))
        assert np.allclose(np.diag(volume.affine)[:3], 2.0)  # axis-aligned RAS grid
        # trilinear interpolation of a smooth 240-HU-range field: a few HU at most
        assert interior_error(volume, affine, shape) < 6.0, path.name


def test_mha_is_read(tmp_path):
    image = sitk.GetImageFromArray(np.zeros((5, 6, 7), np.int16))
    sitk.WriteImage(image, str(tmp_path / "scan.mha"))
    assert load_ras(tmp_path / "scan.mha", (1.0, 1.0, 1.0)).array.shape == (7, 6, 5)


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "2d", "4d", "one-slice"])
def test_bad_files_name_the_file(tmp_path, kind):
    path = tmp_path / f"bad_{kind}.nii.gz"
    if kind == "corrupt":
        path.write_bytes(b"this is not an image" * 10)
    elif kind == "truncated":
        full = tmp_path / "full.nii.gz"
        nib.save(nib.Nifti1Image(np.random.rand(30, 30, 30).astype(np.float32), np.eye(4)), str(full))
        path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    elif kind == "2d":
        nib.save(nib.Nifti1Image(np.zeros((20, 20), np.float32), np.eye(4)), str(path))
    elif kind == "4d":
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 3), np.float32), np.eye(4)), str(path))
    else:
        nib.save(nib.Nifti1Image(np.zeros((20, 20, 1), np.float32), np.eye(4)), str(path))
    with pytest.raises(PGLError, match=path.name):
        load_ras(path, (1.0, 1.0, 1.0))


def test_empty_and_missing_folders(tmp_path):
    with pytest.raises(PGLError, match="holds no scans"):
        list_scans(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(PGLError, match="holds no scans"):
        list_scans(tmp_path)
    with pytest.raises(PGLError, match="no such folder"):
        list_scans(tmp_path / "missing")


def test_cache_decodes_once_and_serves_memory_maps(tmp_path, cohort, monkeypatch):
    scan = sorted((cohort / "images").iterdir())[0]
    first = ScanCache(tmp_path / "cache", (8.0, 8.0, 8.0), (-1024, 325))
    entry = first.get(scan)
    assert (first.hits, first.misses) == (0, 1)
    array = entry.load()
    assert isinstance(array, np.memmap) and array.dtype == np.float16
    assert 0.0 <= float(array.min()) and float(array.max()) <= 1.0

    def no_decoding(*args, **kwargs):
        raise AssertionError("the scan was decoded again")

    monkeypatch.setattr(cache_module, "load_ras", no_decoding)
    second = ScanCache(tmp_path / "cache", (8.0, 8.0, 8.0), (-1024, 325))
    again = second.get(scan)
    assert (second.hits, second.misses) == (1, 0)
    assert np.array_equal(again.load(), array)
    # other preprocessing settings are another entry
    other = ScanCache(tmp_path / "cache", (6.0, 6.0, 6.0), (-1024, 325))
    with pytest.raises(AssertionError, match="decoded again"):
        other.get(scan)


def lps_image(array_zyx: np.ndarray, spacing) -> sitk.Image:
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing(spacing)
    return image


def test_downsampling_averages_noise_like_a_coarse_detector():
    """4x fewer voxels per axis in-plane, 2x along z: noise std falls by about sqrt(4*4*2), as a box average."""
    from pgl_engine.data.imaging import ras_grid_covering, resample

    noise = np.random.default_rng(0).normal(0, 100, (40, 96, 96)).astype(np.float32)
    image = lps_image(noise, (0.8, 0.8, 2.5))
    affine, size = ras_grid_covering(image, (3.2, 3.2, 5.0))
    coarse = resample(image, affine, size, fill=0)
    plain = resample(image, affine, size, fill=0, antialias=False)
    interior = coarse[2:-2, 2:-2, 2:-2].std()
    assert plain.std() > 1.8 * interior  # linear interpolation alone averages 8 voxels at most
    assert 100 / np.sqrt(32) * 0.8 < interior < 100 / np.sqrt(32) * 1.25, interior


def test_a_size_that_is_not_a_multiple_of_the_block_keeps_its_edges():
    """Blocks of 4 on 99 voxels: the last block repeats the edge instead of dropping voxels or filling."""
    from pgl_engine.data.imaging import ras_grid_covering, resample

    image = lps_image(np.full((6, 99, 99), 40.0, np.float32), (0.8, 0.8, 2.5))
    affine, size = ras_grid_covering(image, (3.2, 3.2, 2.5))
    coarse = resample(image, affine, size, fill=-1000)
    assert np.allclose(coarse, 40.0, atol=1e-3)


def test_block_averaging_matches_the_gaussian_prefilter_on_smooth_anatomy():
    """The cheap pre-filter and a Gaussian of the same width agree on smooth anatomy (HU)."""
    from pgl_engine.data.imaging import ras_grid_covering, resample

    shape = (40, 128, 128)
    z, y, x = np.meshgrid(*[np.arange(s, dtype=float) for s in shape], indexing="ij")
    ras = np.stack([-x * 0.8, -y * 0.8, z * 2.5], -1)
    image = lps_image(field(ras).astype(np.float32), (0.8, 0.8, 2.5))
    affine, size = ras_grid_covering(image, (3.2, 3.2, 6.0))
    sigma = [np.sqrt(3.2 ** 2 - 0.8 ** 2) / np.sqrt(12)] * 2 + [np.sqrt(6.0 ** 2 - 2.5 ** 2) / np.sqrt(12)]
    gaussian = resample(sitk.SmoothingRecursiveGaussian(image, sigma), affine, size, fill=0, antialias=False)
    ours = resample(image, affine, size, fill=0)
    assert np.abs(ours - gaussian)[2:-2, 2:-2, 2:-2].max() < 3.0
