"""Uncompressed NIfTI-1 files written and read a slab of slices at a time (numpy only: runs in Slicer's Python).

Arrays are indexed (k, j, i) as slicer.util.arrayFromVolume gives them; NIfTI stores i fastest, so the array's
bytes are the file's voxels. Geometry is the IJK-to-RAS matrix, which NIfTI keeps as is (sform), with the same
rotation as a quaternion (qform) when it is orthonormal. The engine reads these files with nibabel.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from .steps import StepGenerator, slabs

HEADER_BYTES = 352  # the 348-byte header and 4 bytes saying "no extensions"
DATATYPES = {np.dtype(np.uint8): 2, np.dtype(np.int16): 4, np.dtype(np.int32): 8, np.dtype(np.float32): 16,
             np.dtype(np.float64): 64, np.dtype(np.int8): 256, np.dtype(np.uint16): 512, np.dtype(np.uint32): 768,
             np.dtype(np.int64): 1024, np.dtype(np.uint64): 1280}
DTYPES = {code: dtype for dtype, code in DATATYPES.items()}


class NiftiError(ValueError):
    """A file is not an uncompressed 3D NIfTI-1 image this module can read."""


def quaternion(rotation: np.ndarray) -> tuple[float, float, float, float] | None:
    """(b, c, d, qfac) of NIfTI's qform for a 3x3 matrix of unit direction columns; None if not orthonormal."""
    r = np.array(rotation, dtype=float)
    if not np.allclose(r.T @ r, np.eye(3), atol=1e-4):
        return None
    qfac = 1.0
    if np.linalg.det(r) < 0:  # NIfTI stores a left-handed frame as a flipped third axis
        qfac, r[:, 2] = -1.0, -r[:, 2]
    trace = np.trace(r)
    if trace > 0:
        a = 0.5 * np.sqrt(1 + trace)
        b, c, d = (r[2, 1] - r[1, 2]) / (4 * a), (r[0, 2] - r[2, 0]) / (4 * a), (r[1, 0] - r[0, 1]) / (4 * a)
    elif r[0, 0] >= r[1, 1] and r[0, 0] >= r[2, 2]:
        b = 0.5 * np.sqrt(1 + r[0, 0] - r[1, 1] - r[2, 2])
        a, c, d = (r[2, 1] - r[1, 2]) / (4 * b), (r[0, 1] + r[1, 0]) / (4 * b), (r[0, 2] + r[2, 0]) / (4 * b)
    elif r[1, 1] >= r[2, 2]:
        c = 0.5 * np.sqrt(1 - r[0, 0] + r[1, 1] - r[2, 2])
        a, b, d = (r[0, 2] - r[2, 0]) / (4 * c), (r[0, 1] + r[1, 0]) / (4 * c), (r[1, 2] + r[2, 1]) / (4 * c)
    else:
        d = 0.5 * np.sqrt(1 - r[0, 0] - r[1, 1] + r[2, 2])
        a, b, c = (r[1, 0] - r[0, 1]) / (4 * d), (r[0, 2] + r[2, 0]) / (4 * d), (r[1, 2] + r[2, 1]) / (4 * d)
    sign = -1.0 if a < 0 else 1.0  # NIfTI keeps a >= 0
    return sign * b, sign * c, sign * d, qfac


def header(shape_kji: tuple[int, int, int], dtype, ijk_to_ras: np.ndarray) -> bytes:
    """A little-endian NIfTI-1 header for voxels of `dtype` on the grid `ijk_to_ras` (4x4)."""
    dtype = np.dtype(dtype).newbyteorder("=")
    if dtype not in DATATYPES:
        raise NiftiError(f"voxels of type {dtype} cannot be written as NIfTI")
    matrix = np.asarray(ijk_to_ras, dtype=float)
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    q = quaternion(matrix[:3, :3] / spacing)
    out = bytearray(HEADER_BYTES)
    nk, nj, ni = (int(n) for n in shape_kji)
    struct.pack_into("<i", out, 0, 348)
    struct.pack_into("<8h", out, 40, 3, ni, nj, nk, 1, 1, 1, 1)
    struct.pack_into("<2h", out, 70, DATATYPES[dtype], dtype.itemsize * 8)
    struct.pack_into("<8f", out, 76, q[3] if q else 1.0, *spacing, 0, 0, 0, 0)
    struct.pack_into("<3f", out, 108, float(HEADER_BYTES), 1.0, 0.0)  # vox_offset, scl_slope, scl_inter
    out[123] = 2  # xyzt_units: mm
    struct.pack_into("<2h", out, 252, 1 if q else 0, 1)  # qform_code, sform_code: scanner coordinates
    if q:
        struct.pack_into("<6f", out, 256, *q[:3], *matrix[:3, 3])
    struct.pack_into("<12f", out, 280, *matrix[:3, :4].ravel())
    out[344:348] = b"n+1\0"
    return bytes(out)


def write_steps(path: Path, array: np.ndarray, ijk_to_ras: np.ndarray) -> StepGenerator:
    """Write a (k, j, i) array as `path`, a slab per step; a partial file is removed if the writing stops."""
    if array.ndim != 3:
        raise NiftiError(f"a 3D array is needed, got shape {array.shape}")
    little = array.dtype.newbyteorder("<")  # the header says little-endian
    finished = False
    try:
        with open(path, "wb") as f:
            f.write(header(array.shape, array.dtype, ijk_to_ras))
            for start, stop in slabs(array.shape[0], array.shape[1] * array.shape[2]):
                f.write(memoryview(np.ascontiguousarray(array[start:stop], dtype=little)).cast("B"))
                yield
        finished = True
    finally:
        if not finished:
            Path(path).unlink(missing_ok=True)


class Header:
    """What reading a NIfTI-1 file back needs: shape (k, j, i), voxel type, where the voxels start, scaling,
    and the IJK-to-RAS matrix."""

    def __init__(self, path: Path):
        raw = Path(path).open("rb").read(348)
        if len(raw) < 348:
            raise NiftiError(f"{path}: is too short for a NIfTI header")
        order = "<" if struct.unpack("<i", raw[:4])[0] == 348 else ">"
        if struct.unpack(order + "i", raw[:4])[0] != 348 or raw[344:347] != b"n+1":
            raise NiftiError(f"{path}: is not an uncompressed single-file NIfTI-1 image")
        dim = struct.unpack(order + "8h", raw[40:56])
        if dim[0] < 3 or any(n > 1 for n in dim[4:1 + dim[0]]):
            raise NiftiError(f"{path}: is not a 3D image (dimensions {dim[1:1 + dim[0]]})")
        code = struct.unpack(order + "h", raw[70:72])[0]
        if code not in DTYPES:
            raise NiftiError(f"{path}: has voxel type code {code}, which is not read here")
        self.dtype = DTYPES[code].newbyteorder(order)
        self.shape = (dim[3], dim[2], dim[1])
        self.offset = int(struct.unpack(order + "f", raw[108:112])[0])
        self.slope, self.inter = struct.unpack(order + "2f", raw[112:120])
        qform_code, sform_code = struct.unpack(order + "2h", raw[252:256])
        self.ijk_to_ras = np.eye(4)
        if sform_code > 0:
            self.ijk_to_ras[:3] = np.array(struct.unpack(order + "12f", raw[280:328])).reshape(3, 4)
        else:
            self.ijk_to_ras = _qform(order, raw)


def _qform(order: str, raw: bytes) -> np.ndarray:
    b, c, d, x, y, z = struct.unpack(order + "6f", raw[256:280])
    pixdim = struct.unpack(order + "4f", raw[76:92])
    a = np.sqrt(max(0.0, 1.0 - (b * b + c * c + d * d)))
    rotation = np.array([[a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                         [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
                         [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b]])
    scale = np.array(pixdim[1:4]) * np.array([1, 1, -1.0 if pixdim[0] < 0 else 1.0])
    matrix = np.eye(4)
    matrix[:3, :3] = rotation * scale
    matrix[:3, 3] = (x, y, z)
    return matrix


def read_steps(path: Path, head: Header, out: np.ndarray) -> StepGenerator:
    """Read the voxels of `path` into `out` (shape head.shape), a slab per step, scaled if the header says so."""
    if out.shape != head.shape:
        raise NiftiError(f"{path}: holds {head.shape[::-1]} voxels, not {out.shape[::-1]}")
    plane = head.shape[1] * head.shape[2]
    slope = head.slope if np.isfinite(head.slope) and head.slope != 0 else 1.0  # nibabel writes NaN for "none"
    inter = head.inter if np.isfinite(head.inter) else 0.0
    scaled = slope != 1.0 or inter != 0.0
    with open(path, "rb") as f:
        f.seek(head.offset)
        for start, stop in slabs(head.shape[0], plane):
            count = (stop - start) * plane
            values = np.frombuffer(f.read(count * head.dtype.itemsize), dtype=head.dtype)
            if values.size != count:
                raise NiftiError(f"{path}: is truncated")
            values = values.reshape(stop - start, *head.shape[1:])
            if scaled:
                values = values * slope + inter
            out[start:stop] = np.rint(values) if out.dtype.kind in "iu" and values.dtype.kind == "f" else values
            yield
