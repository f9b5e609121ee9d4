"""A held-out family of synthetic torso CTs, drawn by a generator separate from `pgl phantom`'s (tuning.py).

Why a second family: the engine's defaults are tuned on `pgl phantom`'s scans, so a verdict there rewards what that
generator happens to draw. This family shares only the output contract with it (folder layout, label values and
names 1 liver, 2 spleen, 3 right kidney, 4 left kidney, `<name>.labels.json` sidecars, dataset.json) and draws
everything else its own way:

- organs are unions and differences of random superquadrics in coordinates warped by smooth random displacement
  fields (one for the subject, one per organ), placed per subject relative to the spine, the diaphragm and the
  body wall;
- the diaphragm is two domes with the lung bases and the heart above them; ribs, vertebrae, psoas, bowel (a
  thresholded smooth random field with gas and sometimes oral contrast), colon, stomach, pancreas, vessels and
  the gallbladder are unlabelled tissue; liver vessels and cysts belong to their organ;
- organ intensities follow a per-subject enhancement, so their ranges overlap across subjects (liver 40-110 HU,
  spleen 40-120, kidney cortex 60-200; heart, bowel, pancreas and muscle in the same range);
- body size and fat vary, the scanner spacing is 0.7-0.9 mm in-plane and 2.5-5 mm between slices, and the noise
  is correlated, with a per-subject grain and strength.

Shapes are approximate signed distances in mm, evaluated on a coarse grid (about COARSE_MM in-plane, every slice)
and interpolated linearly to the scan's grid: a full-size subject takes a few seconds on one CPU core and its
outlines stay smooth at 0.7 mm. Coordinates are RAS millimetres (+x Right, +y Anterior, +z Superior) with x, y
from the body's centre and z = 0 at the top of the right diaphragm dome.

FROZEN. This family is for verdicts only: nothing is tuned on it. Testing/test_phantom_heldout.py pins the label
maps and image statistics of a few seeds, so any change here that moves one voxel fails that test. Do not update
the pins to let a change pass: a changed generator is a new family (its own name and pins), and results on the
two are not comparable.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..data.imaging import write_nifti
from ..data.labels import label_table, write_sidecar
from ..progress import ProgressCallback, emit

LABELS = {1: "liver", 2: "spleen", 3: "right kidney", 4: "left kidney"}
COARSE_MM = 2.7  # in-plane spacing the shapes are drawn at before interpolation to the scan's grid
_STREAM = 0x48454C44  # "HELD": keeps this family's random streams apart from tuning.py's


@dataclass
class HeldoutCase:
    image: np.ndarray  # int16 HU, (x, y, z)
    labels: np.ndarray  # uint8, same grid
    affine: np.ndarray  # voxel -> RAS mm


# ----------------------------------------------------------------------------------------------- grids

class _Lattice:
    """The scan's grid and the coarse grid shapes are drawn on: every `factor`-th voxel in-plane, every slice."""

    def __init__(self, shape: tuple[int, int, int], spacing: np.ndarray, origin: np.ndarray, factor: int):
        self.shape, self.spacing, self.origin, self.factor = shape, spacing, origin, factor
        self.coarse_shape = (-(-(shape[0] - 1) // factor) + 1, -(-(shape[1] - 1) // factor) + 1, shape[2])
        self.coarse_spacing = spacing * np.array([factor, factor, 1])
        self.axes = [origin[i] + np.arange(shape[i]) * spacing[i] for i in range(3)]
        self.coarse_axes = [origin[i] + np.arange(self.coarse_shape[i]) * self.coarse_spacing[i] for i in range(3)]

    def box(self, lo, hi) -> tuple[slice, ...]:
        """Coarse slices covering the mm box [lo, hi] (clipped to the grid)."""
        out = []
        for i in range(3):
            a = self.coarse_axes[i]
            i0 = int(np.searchsorted(a, lo[i], side="left")) - 1
            i1 = int(np.searchsorted(a, hi[i], side="right")) + 1
            out.append(slice(max(i0, 0), min(max(i1, 0), len(a))))
        return tuple(out)

    def region(self, box: tuple[slice, ...], phi: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray] | None:
        """Where the coarse signed distance `phi` (on coarse `box`) is negative, on the scan's grid: (fine slices,
        mask there). Linear interpolation in-plane, so only cells touching a negative coarse point can be inside."""
        inside = phi < 0
        if not inside.any():
            return None
        fine, sub = [], []
        for axis in range(3):
            hits = np.flatnonzero(inside.any(axis=tuple(a for a in range(3) if a != axis)))
            c0, c1 = box[axis].start + hits[0], box[axis].start + hits[-1]
            f = self.factor if axis < 2 else 1
            reach = 1 if f > 1 else 0
            lo, hi = max(c0 - reach, box[axis].start), min(c1 + reach, box[axis].stop - 1)
            sub.append(slice(lo - box[axis].start, hi - box[axis].start + 1))
            fine.append(slice(lo * f, min(hi * f + 1, self.shape[axis])))
        field = phi[tuple(sub)]
        for axis in (0, 1):
            field = _interpolate(field, axis, sub[axis].start + box[axis].start, fine[axis], self.factor)
        return tuple(fine), field < 0


def _interpolate(a: np.ndarray, axis: int, start: int, fine: slice, factor: int) -> np.ndarray:
    """Linear interpolation along `axis` from coarse points start, start+1, ... to the fine indices `fine`.

    In float32 (half the memory traffic of the largest arrays); +, - and * round the same on every machine."""
    a = a.astype(np.float32, copy=False)
    pos = np.arange(fine.start, fine.stop) / factor - start
    if a.shape[axis] == 1:
        return np.repeat(a, len(pos), axis=axis)
    i0 = np.clip(np.floor(pos).astype(int), 0, a.shape[axis] - 2)
    shape = [1, 1, 1]
    shape[axis] = len(pos)
    w = (pos - i0).astype(np.float32).reshape(shape)
    lo, hi = np.take(a, i0, axis=axis), np.take(a, i0 + 1, axis=axis)
    return lo + (hi - lo) * w


class _Warp:
    """A smooth random displacement field: a few plane waves of random direction, wavelength and amplitude (mm)."""

    def __init__(self, rng: np.random.Generator, modes: int, amplitude: float, wavelengths: tuple[float, float]):
        direction = rng.normal(size=(modes, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        self.k = direction * (2 * np.pi / rng.uniform(*wavelengths, (modes, 1)))
        self.phase = rng.uniform(0, 2 * np.pi, modes)
        self.amp = rng.normal(size=(modes, 3)) * amplitude / np.sqrt(modes)
        self.reach = float(np.abs(self.amp).sum(axis=0).max())  # the largest displacement it can give

    def __call__(self, X, Y, Z):
        dx = dy = dz = 0.0
        for k, ph, amp in zip(self.k, self.phase, self.amp):
            s = np.sin(X * k[0] + Y * k[1] + Z * k[2] + ph)
            dx, dy, dz = dx + amp[0] * s, dy + amp[1] * s, dz + amp[2] * s
        return X + dx, Y + dy, Z + dz


def _rotation(rng: np.random.Generator, degrees: tuple[float, float, float]) -> np.ndarray:
    """Rotation by random angles up to `degrees` about x, y and z."""
    ax, ay, az = np.deg2rad(rng.uniform(-1, 1, 3) * np.asarray(degrees))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass
class _Superquadric:
    """|u/a|^e + |v/b|^e + |w/c|^e <= 1 in a rotated frame; e = 2 is an ellipsoid, larger e is boxier."""

    centre: np.ndarray
    radii: np.ndarray
    rotation: np.ndarray
    exponent: float

    def distance(self, X, Y, Z) -> np.ndarray:
        """Approximate signed distance (mm): exact on the surface, scaled by the smallest radius elsewhere."""
        d = (X - self.centre[0], Y - self.centre[1], Z - self.centre[2])
        q = 0.0
        for k in range(3):
            u = d[0] * self.rotation[0, k] + d[1] * self.rotation[1, k] + d[2] * self.rotation[2, k]
            q = q + np.abs(u / self.radii[k]) ** self.exponent
        return (q ** (1.0 / self.exponent) - 1.0) * float(self.radii.min())

    def extent(self) -> float:
        return float(self.radii.max()) * 3 ** 0.5


def _segment_distance(X, Y, Z, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance (mm) to the segment from a to b."""
    ab = b - a
    t = ((X - a[0]) * ab[0] + (Y - a[1]) * ab[1] + (Z - a[2]) * ab[2]) / float(ab @ ab)
    t = np.clip(t, 0.0, 1.0)
    return np.sqrt((X - a[0] - t * ab[0]) ** 2 + (Y - a[1] - t * ab[1]) ** 2 + (Z - a[2] - t * ab[2]) ** 2)


# ----------------------------------------------------------------------------------------------- the subject

class _Subject:
    """One subject: its grids, its coarse coordinates (warped by the subject's displacement) and the canvas."""

    def __init__(self, rng: np.random.Generator, lattice: _Lattice):
        self.rng, self.lattice = rng, lattice
        X, Y, Z = (lattice.coarse_axes[0][:, None, None], lattice.coarse_axes[1][None, :, None],
                   lattice.coarse_axes[2][None, None, :])
        self.plain = np.broadcast_arrays(X, Y, Z)
        self.warp = _Warp(rng, 6, rng.uniform(3, 9), (90, 220))
        self.warped = self.warp(*self.plain)
        self.hu = np.full(lattice.shape, -1000.0)
        self.labels = np.zeros(lattice.shape, np.uint8)

    def coords(self, lo, hi, warped: bool = True):
        """(coarse box, X, Y, Z) over the mm box [lo, hi], widened by the subject's displacement."""
        margin = self.warp.reach if warped else 0.0
        box = self.lattice.box(np.asarray(lo) - margin, np.asarray(hi) + margin)
        return (box, *(c[box] for c in (self.warped if warped else self.plain)))

    def paint(self, box, phi, hu, label: int | None = 0, within: np.ndarray | None = None):
        """Set HU (and the label; None keeps the labels) where phi < 0; returns (fine slices, mask) or None."""
        region = self.lattice.region(box, phi)
        if region is None:
            return None
        sl, mask = region
        if within is not None:
            mask &= within[sl]
        self.hu[sl][mask] = hu
        if label is not None:
            self.labels[sl][mask] = label
        return sl, mask

    def fine_mask(self, region) -> np.ndarray:
        out = np.zeros(self.lattice.shape, bool)
        if region is not None:
            out[region[0]] = region[1]
        return out

    def noise(self, box, sigma_mm: float) -> np.ndarray:
        """Smooth random field with unit std on a coarse box (Gaussian-filtered white noise)."""
        shape = tuple(s.stop - s.start for s in box)
        field = ndimage.gaussian_filter(self.rng.standard_normal(shape), sigma_mm / self.lattice.coarse_spacing,
                                        mode="reflect")
        return field / max(float(field.std()), 1e-9)


def _organ(subject: _Subject, parts: list[_Superquadric], organ_warp: _Warp, cut=()):
    """Union of superquadrics in the subject's and the organ's own warped coordinates, minus the `cut` fields.

    Returns (coarse box, signed distance on it)."""
    reach = max(p.extent() for p in parts) + organ_warp.reach
    centres = np.array([p.centre for p in parts])
    box, X, Y, Z = subject.coords(centres.min(axis=0) - reach, centres.max(axis=0) + reach)
    X, Y, Z = organ_warp(X, Y, Z)
    phi = np.minimum.reduce([p.distance(X, Y, Z) for p in parts])
    for fn in cut:
        phi = np.maximum(phi, fn(box))
    return box, phi


def _under(s: _Subject, dome, margin: float = 5.0):
    """A cut field for _organ: positive less than `margin` mm under the diaphragm (its muscle) and above it."""
    def cut(box):
        return s.warped[2][box] - dome(s.warped[0][box], s.warped[1][box]) + margin
    return cut


def make_heldout(seed: int, spacing_scale: float = 1.0) -> HeldoutCase:
    """One held-out synthetic torso CT (upper abdomen and lung bases) and its label map (LABELS)."""
    rng = np.random.default_rng([seed, _STREAM])
    in_plane, thickness = rng.uniform(0.7, 0.9), rng.uniform(2.5, 5.0)

    # body: lean half-axes, fat and muscle wall; the field of view follows the body and the table
    lean_a, lean_b = rng.uniform(112, 138), rng.uniform(80, 100)
    fat = rng.uniform(5, 42)
    wall = rng.uniform(7, 14)
    a, b = lean_a + fat * rng.uniform(0.8, 1.1), lean_b + fat * rng.uniform(0.9, 1.25)
    posterior = rng.uniform(0.8, 0.95)  # the back is flatter than the belly
    shift = np.array([rng.uniform(-12, 12), rng.uniform(-25, 5)])
    fov = max(rng.uniform(320, 400), 2 * (a + abs(shift[0])) + 12, 2 * (b + abs(shift[1])) + 40)
    slices = int(np.clip(round(rng.uniform(180, 250) / thickness), 40, 72))
    top = rng.uniform(0, 20)  # mm above the right dome

    native = np.array([in_plane, in_plane, thickness])
    spacing = native * spacing_scale
    extent = np.array([fov, fov, slices * thickness])
    shape = tuple(max(int(round(e / s)), 8 if i < 2 else 4) for i, (e, s) in enumerate(zip(extent, spacing)))
    origin = np.array([-(shape[0] - 1) / 2 * spacing[0] - shift[0], -(shape[1] - 1) / 2 * spacing[1] - shift[1],
                       top - (shape[2] - 1) * spacing[2]])
    factor = max(1, int(round(COARSE_MM / spacing[0])))
    s = _Subject(rng, _Lattice(shape, spacing, origin, factor))

    hu = draw_intensities(rng)
    enhancement, arterial = hu["enhancement"], hu["arterial"]
    torso = _body(s, hu, a, b, fat, wall, posterior)
    cavity = torso.cavity
    A, B = lean_a - wall, lean_b - wall  # the cavity's half-axes: the organs scale with them
    spine_y, spine_r = -B * rng.uniform(0.55, 0.68), rng.uniform(14, 20)
    dome = _diaphragm(rng, A, B)
    _chest(s, hu, cavity, dome, A, B)
    _bowel(s, hu, cavity, A, B, spine_y, spine_r)
    _upper_viscera(s, hu, cavity, dome, A, B, spine_y, spine_r)
    kidney_parts = _kidney_parts(rng, spine_y, spine_r)
    _liver(s, hu, cavity, dome, A, B, kidney_parts, enhancement)
    _spleen(s, hu, cavity, dome, A, B)
    for label, parts in kidney_parts:
        _kidney(s, hu, cavity, label, parts, enhancement, arterial)
    _spine_and_ribs(s, hu, torso, spine_y, spine_r)

    image = _texture_and_noise(s, rng)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    return HeldoutCase(image, s.labels, affine)


def draw_intensities(rng: np.random.Generator) -> dict[str, float]:
    """A subject's tissue HU. One portal-venous enhancement and one arterial contrast drive them all, each organ
    with its own spread, so an organ's HU overlaps other organs' across subjects and their order can change."""
    enhancement = rng.uniform(0, 1)
    arterial = rng.uniform(0, 1)
    return {
        "enhancement": enhancement, "arterial": arterial,
        "fat": rng.uniform(-120, -85), "visceral": rng.uniform(-110, -70), "muscle": rng.uniform(35, 65),
        "liver": float(np.clip(45 + 55 * enhancement + rng.normal(0, 8), 40, 110)),
        "spleen": float(np.clip(45 + 60 * enhancement + 15 * arterial + rng.normal(0, 12), 40, 120)),
        "kidney": float(np.clip(60 + 110 * enhancement + 30 * arterial + rng.normal(0, 15), 60, 200)),
        "blood": 40 + 120 * enhancement + 150 * arterial * rng.uniform(0.5, 1),
        "bowel": rng.uniform(20, 70), "pancreas": 40 + 55 * enhancement + rng.normal(0, 10),
    }


def _superellipse(X, Y, a, b_front, b_back, p, wobble=0.0):
    """Signed distance (approximate, mm) to a superellipse with a flatter back; `wobble` bends the outline."""
    bb = np.where(Y < 0, b_back, b_front)
    q = (np.abs(X / a) ** p + np.abs(Y / bb) ** p) ** (1.0 / p)
    return (q / (1.0 + wobble) - 1.0) * np.minimum(a, b_back)


@dataclass
class _Torso:
    body: np.ndarray  # on the scan's grid
    cavity: np.ndarray  # on the scan's grid
    mid_wall: np.ndarray  # coarse signed distance (mm) to the middle of the muscle wall, where the ribs run
    back: float  # y (mm) of the inner edge of the back's fat at the midline


def _body(s: _Subject, hu, a, b, fat, wall, posterior) -> _Torso:
    """Table, skin and subcutaneous fat, muscle wall, and the cavity (filled with visceral fat)."""
    rng = s.rng
    box, X, Y, Z = s.coords((-1e4,) * 3, (1e4,) * 3, warped=False)
    taper = 1.0 + rng.uniform(-0.08, 0.08) * Z / 200.0  # wider or narrower towards the chest
    theta = np.arctan2(Y, X)
    wobble = sum(rng.uniform(-0.025, 0.025) * np.cos(m * theta + rng.uniform(0, 2 * np.pi)) for m in (2, 3, 4))
    p = rng.uniform(2.0, 2.7)
    # the table: a bright curved plate under the back
    x, y = s.lattice.axes[0][:, None], s.lattice.axes[1][None, :]
    table_y = -b * posterior - rng.uniform(4, 15)
    table = (y < table_y - 0.0008 * x ** 2) & (y > table_y - 0.0008 * x ** 2 - 8) & (np.abs(x) < 0.9 * a + 40)
    s.hu[np.broadcast_to(table[:, :, None], s.lattice.shape)] = rng.uniform(150, 400)

    def outline(inset_side, inset_front, inset_back):
        return _superellipse(X, Y, (a - inset_side) * taper, (b - inset_front) * taper,
                             (b * posterior - inset_back) * taper, p, wobble)

    body = s.fine_mask(s.paint(box, outline(0, 0, 0), hu["fat"]))
    front_fat, back_fat = fat * rng.uniform(0.9, 1.4), fat * rng.uniform(0.3, 0.7)
    s.paint(box, outline(fat, front_fat, back_fat), hu["muscle"])
    cavity = s.fine_mask(s.paint(box, outline(fat + wall, front_fat + wall, back_fat + wall), hu["visceral"]))
    return _Torso(body, cavity, outline(fat + wall / 2, front_fat + wall / 2, back_fat + wall / 2),
                  -(b * posterior - back_fat))


def _diaphragm(rng: np.random.Generator, A, B):
    """Height (mm) of the diaphragm over (x, y): a right dome at z = 0, a lower left one, the heart's dip between."""
    right_x, left_x = A * rng.uniform(0.3, 0.5), -A * rng.uniform(0.3, 0.5)
    left_top, centre_top = -rng.uniform(5, 30), -rng.uniform(15, 35)
    depth = rng.uniform(55, 95)  # how far the domes fall towards the body wall (the costophrenic recesses)
    dome_y = -B * rng.uniform(0.0, 0.25)

    def height(X, Y):
        def cap(cx, top):
            return top - depth * (((X - cx) / A) ** 2 + ((Y - dome_y) / (1.2 * B)) ** 2)
        return np.maximum(np.maximum(cap(right_x, 0.0), cap(left_x, left_top)),
                          centre_top - depth * ((X / A) ** 2 + ((Y - dome_y) / B) ** 2) * 0.5)
    return height


def _bowel(s: _Subject, hu, cavity, A, B, spine_y, spine_r) -> None:
    """Small bowel as a thresholded smooth random field below the liver, with gas and sometimes oral contrast, and
    the colon's flexures as tubes of mottled stool and gas."""
    rng = s.rng
    upper = -rng.uniform(70, 110)
    box, X, Y, Z = s.coords((-A, spine_y + spine_r, -1e4), (A, B, upper + 10))
    field = s.noise(box, rng.uniform(5, 9))
    floor = np.maximum(spine_y + spine_r + 5 - Y, Z - upper)  # in front of the retroperitoneum, under `upper`
    loops = np.maximum(rng.uniform(-0.3, 0.3) - field, floor / 10.0)
    region = s.paint(box, loops, hu["bowel"], within=cavity)
    if region is None:
        return
    lumen = s.noise(box, 6.0)
    s.paint(box, np.maximum(np.maximum(rng.uniform(1.4, 2.2) - lumen, -field), floor), -rng.uniform(850, 950),
            within=s.fine_mask(region))
    if rng.random() < 0.5:  # oral contrast in part of the loops: as bright as an enhanced kidney, or brighter
        s.paint(box, np.maximum(np.maximum(rng.uniform(0.0, 0.8) + lumen, -field), floor), rng.uniform(150, 320),
                within=s.fine_mask(region))
    for side in (1, -1):
        a = np.array([side * A * rng.uniform(0.55, 0.75), B * rng.uniform(-0.2, 0.3), -rng.uniform(80, 130)])
        b = a + np.array([-side * rng.uniform(10, 40), rng.uniform(20, 50), rng.uniform(-40, 30)])
        radius = rng.uniform(15, 24)
        box, X, Y, Z = s.coords(np.minimum(a, b) - radius, np.maximum(a, b) + radius)
        tube = _segment_distance(X, Y, Z, a, b) - radius
        stool = s.noise(box, 3.0)
        s.paint(box, tube, rng.uniform(-60, 20), within=cavity)
        s.paint(box, np.maximum(tube, rng.uniform(0.0, 0.6) - stool), -rng.uniform(600, 900), within=cavity)


def _upper_viscera(s: _Subject, hu, cavity, dome, A, B, spine_y, spine_r) -> None:
    """Stomach (gas over fluid or food), pancreas, aorta and inferior vena cava: soft tissue and blood near the
    organs, all unlabelled."""
    rng = s.rng
    stomach = _Superquadric(np.array([-A * rng.uniform(0.2, 0.45), B * rng.uniform(0.1, 0.4), -rng.uniform(25, 60)]),
                            np.array([A * rng.uniform(0.2, 0.35), B * rng.uniform(0.25, 0.4), rng.uniform(35, 55)]),
                            _rotation(rng, (15, 15, 35)), rng.uniform(2.0, 2.6))
    box, phi = _organ(s, [stomach], _Warp(rng, 3, 4, (40, 90)), cut=[_under(s, dome)])
    wall = s.paint(box, phi, hu["muscle"] + rng.uniform(-10, 10), within=cavity)
    if wall is not None:
        content = rng.uniform(0, 45)
        s.paint(box, phi + 4, content, within=cavity)
        level = stomach.centre[1] + rng.uniform(-5, 25)  # lying on the back: gas rises to the front
        s.paint(box, np.maximum(phi + 4, level - s.warped[1][box]), -rng.uniform(850, 950), within=cavity)
    head = np.array([A * rng.uniform(0.05, 0.25), spine_y + spine_r + rng.uniform(25, 45), -rng.uniform(90, 120)])
    tail = np.array([-A * rng.uniform(0.4, 0.6), -B * rng.uniform(0.1, 0.35), head[2] + rng.uniform(10, 40)])
    radius = rng.uniform(8, 13)
    box, X, Y, Z = s.coords(np.minimum(head, tail) - radius, np.maximum(head, tail) + radius)
    s.paint(box, _segment_distance(X, Y, Z, head, tail) - radius, hu["pancreas"], within=cavity)
    for cx, cy, r, blood in ((-spine_r * 0.6, spine_y + spine_r + 12, rng.uniform(9, 13), hu["blood"]),
                             (spine_r * 1.3, spine_y + spine_r + 16, rng.uniform(9, 13),
                              40 + (hu["blood"] - 40) * rng.uniform(0.5, 0.9))):
        box, X, Y, Z = s.coords((cx - r, cy - r, -1e4), (cx + r, cy + r, 1e4), warped=False)
        s.paint(box, np.sqrt((X - cx) ** 2 + (Y - cy) ** 2) - r, blood, within=cavity)


def _chest(s: _Subject, hu, cavity, dome, A, B) -> None:
    """Diaphragm muscle, lung bases and the heart above the domes."""
    rng = s.rng
    box, X, Y, Z = s.coords((-1e4,) * 3, (1e4,) * 3)
    above = dome(X, Y) - Z  # negative above the diaphragm
    s.paint(box, np.maximum(-above, above - rng.uniform(4, 7)), hu["muscle"], within=cavity)  # a band under it
    s.paint(box, above, -rng.uniform(820, 900), within=cavity)
    heart = _Superquadric(np.array([-A * rng.uniform(0.05, 0.25), B * rng.uniform(0.1, 0.3), rng.uniform(20, 45)]),
                          np.array([A * rng.uniform(0.4, 0.55), B * rng.uniform(0.4, 0.55), rng.uniform(55, 70)]),
                          _rotation(rng, (10, 10, 30)), 2.0)
    hbox, phi = _organ(s, [heart], _Warp(rng, 3, 3, (50, 100)))
    s.paint(hbox, np.maximum(phi, dome(s.warped[0][hbox], s.warped[1][hbox]) - s.warped[2][hbox]),
            40 + (hu["blood"] - 40) * rng.uniform(0.3, 0.7), within=cavity)  # blood and muscle, partial volume


def _liver(s: _Subject, hu, cavity, dome, A, B, kidney_parts, enhancement) -> None:
    """Right lobe, a left lobe reaching over the midline by a varying length, caudate lobe and sometimes a Riedel
    lobe; under the right dome, indented by the right kidney; with vessels and sometimes a cyst; the gallbladder
    under it."""
    rng = s.rng
    size = rng.uniform(1.0, 1.25)
    sq = lambda c, r, rot, e: _Superquadric(np.array(c), np.array(r) * size, _rotation(rng, rot), e)  # noqa: E731
    parts = [
        sq((A * rng.uniform(0.35, 0.5), -B * rng.uniform(0.0, 0.2), -rng.uniform(65, 85)),
           (A * rng.uniform(0.45, 0.58), B * rng.uniform(0.6, 0.8), rng.uniform(80, 100)), (10, 10, 20),
           rng.uniform(2.0, 3.0)),
        sq((-A * rng.uniform(0.0, 0.3), B * rng.uniform(0.3, 0.5), -rng.uniform(35, 60)),
           (A * rng.uniform(0.3, 0.6), B * rng.uniform(0.2, 0.35), rng.uniform(30, 45)), (10, 10, 25),
           rng.uniform(2.0, 2.8)),
        sq((A * rng.uniform(0.05, 0.2), -B * rng.uniform(0.1, 0.3), -rng.uniform(50, 75)),
           (A * 0.14, B * 0.22, rng.uniform(25, 40)), (10, 10, 10), 2.2),
    ]
    if rng.random() < 0.35:
        parts.append(sq((A * rng.uniform(0.5, 0.65), B * rng.uniform(-0.1, 0.2), -rng.uniform(120, 150)),
                        (A * 0.2, B * 0.3, rng.uniform(30, 45)), (15, 15, 15), 2.0))
    (_, right_kidney), = [k for k in kidney_parts if k[0] == 3]

    def off_kidney(box):  # the liver's underside is moulded by the right kidney
        X, Y, Z = (c[box] for c in s.warped)
        return 6 - right_kidney[0].distance(X, Y, Z)

    box, phi = _organ(s, parts, _Warp(rng, 5, rng.uniform(4, 9), (40, 110)), cut=[_under(s, dome), off_kidney])
    region = s.paint(box, phi, hu["liver"], 1, within=cavity)
    if region is None:
        return
    liver = s.fine_mask(region)
    # vessels: where two smooth random fields are both near zero, their level sets cross along branching tubes
    first, second = s.noise(box, 6.0), s.noise(box, 6.0)
    width = rng.uniform(0.08, 0.14)
    vessel_hu = hu["liver"] + (enhancement - 0.35) * rng.uniform(40, 90)
    s.paint(box, np.maximum(np.maximum(np.abs(first), np.abs(second)) - width, phi), vessel_hu, None, within=liver)
    if rng.random() < 0.3:  # a cyst: labelled liver, as organ masks usually include their lesions
        inside = np.argwhere(phi < -15)
        if len(inside):
            c = [s.lattice.coarse_axes[i][box[i].start + inside[rng.integers(len(inside))][i]] for i in range(3)]
            r = rng.uniform(6, 18)
            cbox, X, Y, Z = s.coords(np.array(c) - r, np.array(c) + r, warped=False)
            s.paint(cbox, np.sqrt((X - c[0]) ** 2 + (Y - c[1]) ** 2 + (Z - c[2]) ** 2) - r, rng.uniform(0, 20),
                    None, within=liver)
    if rng.random() < 0.75:
        gb = _Superquadric(np.array([A * rng.uniform(0.15, 0.35), B * rng.uniform(0.2, 0.45), -rng.uniform(85, 120)]),
                           np.array([rng.uniform(12, 20), rng.uniform(12, 20), rng.uniform(25, 40)]),
                           _rotation(rng, (30, 30, 30)), 2.0)
        gbox, gphi = _organ(s, [gb], _Warp(rng, 2, 2, (40, 80)))
        s.paint(gbox, gphi, rng.uniform(0, 25), 0, within=cavity)


def _spleen(s: _Subject, hu, cavity, dome, A, B) -> None:
    """A crescent: an ellipsoid hollowed on its hilar side, under the left dome, sometimes enlarged."""
    rng = s.rng
    enlarge = rng.uniform(1.25, 1.5) if rng.random() < 0.15 else rng.uniform(0.85, 1.1)
    rotation = _rotation(rng, (15, 15, 20))
    angle = np.deg2rad(rng.uniform(25, 55))  # the long axis follows the ribs, from back-outside to front-inside
    turn = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    centre = np.array([-A * rng.uniform(0.55, 0.72), -B * rng.uniform(0.25, 0.5), -rng.uniform(45, 75)])
    radii = np.array([rng.uniform(20, 28), rng.uniform(48, 65), rng.uniform(50, 70)]) * enlarge
    body = _Superquadric(centre, radii, turn @ rotation, rng.uniform(2.0, 2.4))
    hollow = _Superquadric(centre + turn @ np.array([radii[0] * rng.uniform(1.5, 1.9), 0, 0]),
                           radii * np.array([1.0, 0.8, 0.8]), turn @ rotation, 2.0)
    box, phi = _organ(s, [body], _Warp(rng, 4, rng.uniform(3, 7), (40, 100)), cut=[_under(s, dome)])
    X, Y, Z = (c[box] for c in s.warped)
    phi = np.maximum(phi, -hollow.distance(X, Y, Z))
    s.paint(box, phi, hu["spleen"] + rng.normal(0, 4), 2, within=cavity)


def _kidney_parts(rng: np.random.Generator, spine_y, spine_r):
    """(label, [outline, sinus]) for both kidneys: beside the spine, the right one usually lower, the upper pole
    tilted inwards and the hilum turned to the front."""
    out = []
    for label, side, z in ((3, 1, -rng.uniform(95, 130)), (4, -1, -rng.uniform(80, 115))):
        centre = np.array([side * (spine_r + rng.uniform(35, 55)), spine_y + rng.uniform(0, 25), z])
        radii = np.array([rng.uniform(20, 27), rng.uniform(22, 29), rng.uniform(45, 60)])
        tilt = np.deg2rad(side * rng.uniform(5, 20))  # upper pole towards the spine
        turn = np.deg2rad(-side * rng.uniform(20, 45))  # hilum towards the front
        ry = np.array([[np.cos(tilt), 0, np.sin(tilt)], [0, 1, 0], [-np.sin(tilt), 0, np.cos(tilt)]])
        rz = np.array([[np.cos(turn), -np.sin(turn), 0], [np.sin(turn), np.cos(turn), 0], [0, 0, 1]])
        rotation = rz @ ry
        outline = _Superquadric(centre, radii, rotation, rng.uniform(2.0, 2.3))
        medial = rotation @ np.array([-side * radii[0] * rng.uniform(0.35, 0.55), 0, 0])
        sinus = _Superquadric(centre + medial, radii * np.array([0.5, 0.4, 0.5]), rotation, 2.0)
        out.append((label, [outline, sinus]))
    return out


def _kidney(s: _Subject, hu, cavity, label, parts, enhancement, arterial) -> None:
    """Cortex, medullary pyramids darker by the phase, sinus fat and pelvis open to the hilum; sometimes a cyst."""
    rng = s.rng
    outline, sinus = parts
    box, phi = _organ(s, [outline], _Warp(rng, 3, rng.uniform(1.5, 4), (30, 70)))
    X, Y, Z = (c[box] for c in s.warped)
    hilum = sinus.distance(X, Y, Z)  # reaches past the medial surface: the sinus opens there
    cortex = s.paint(box, phi, hu["kidney"], label, within=cavity)
    if cortex is None:
        return
    kidney = s.fine_mask(cortex)
    d = (X - outline.centre[0], Y - outline.centre[1], Z - outline.centre[2])
    u, w = (d[0] * outline.rotation[0, k] + d[1] * outline.rotation[1, k] + d[2] * outline.rotation[2, k]
            for k in (0, 2))
    lobes = np.cos(rng.integers(5, 8) * np.arctan2(w / outline.radii[2], u / outline.radii[0]))
    pyramids = np.maximum(np.maximum(phi + outline.radii.min() * 0.28, -phi - outline.radii.min() * 0.75),
                          (0.2 - lobes) * 10)
    drop = (30 + 60 * arterial) * (1.0 - enhancement) * rng.uniform(0.5, 1.0)
    s.paint(box, pyramids, hu["kidney"] - drop, None, within=kidney)
    s.paint(box, hilum, rng.uniform(-90, -40), 0, within=cavity)
    s.paint(box, np.maximum(hilum + 4, phi), rng.uniform(0, 25), 0, within=cavity)  # pelvis, urine
    if rng.random() < 0.25:  # an exophytic cyst, labelled kidney
        c = outline.centre + outline.rotation @ (outline.radii * np.array([0.85, 0.0, rng.uniform(-0.6, 0.6)]))
        r = rng.uniform(7, 15)
        cbox, Xc, Yc, Zc = s.coords(c - r, c + r, warped=False)
        s.paint(cbox, np.sqrt((Xc - c[0]) ** 2 + (Yc - c[1]) ** 2 + (Zc - c[2]) ** 2) - r, rng.uniform(0, 15),
                label, within=cavity)


def _spine_and_ribs(s: _Subject, hu, torso: _Torso, spine_y, spine_r) -> None:
    """Vertebrae with discs, canal and posterior elements, paraspinal muscles and psoas, and the lower ribs in the
    body wall: bright, unlabelled."""
    rng = s.rng
    x, y = s.lattice.axes[0][:, None, None], s.lattice.axes[1][None, :, None]
    z = s.lattice.axes[2][None, None, :]
    shape = s.lattice.shape
    period, offset = rng.uniform(27, 34), rng.uniform(0, 34)
    disc = np.abs(((z - offset) % period) - period / 2) < rng.uniform(2.5, 4.5)
    r2 = x ** 2 + (y - spine_y) ** 2
    canal_y = spine_y - spine_r - rng.uniform(6, 10)
    back_half = max((canal_y - torso.back) / 2, 8.0)  # the paraspinal muscles fill the back between canal and fat
    for cx in (-1, 1):  # paraspinal muscles behind the spine, psoas in front, growing downwards
        muscle = ((x - cx * rng.uniform(25, 35)) / rng.uniform(20, 28)) ** 2 + (
            (y - canal_y + back_half) / back_half) ** 2 <= 1
        muscle = np.broadcast_to(muscle, shape) & torso.body
        s.hu[muscle] = hu["muscle"]
        s.labels[muscle] = 0
        psoas_r = np.clip((-rng.uniform(90, 130) - z) / 70.0, 0, 1) * rng.uniform(14, 24)
        psoas = ((x - cx * (spine_r + rng.uniform(8, 14))) ** 2 + (y - spine_y - rng.uniform(0, 8)) ** 2
                 <= psoas_r ** 2)
        s.hu[psoas] = hu["muscle"]
        s.labels[psoas] = 0
    body = np.broadcast_to(r2 <= spine_r ** 2, shape)
    s.hu[body] = rng.uniform(150, 300)
    s.hu[np.broadcast_to(r2 >= (spine_r - rng.uniform(1.5, 3)) ** 2, shape) & body] = rng.uniform(500, 900)
    s.hu[body & np.broadcast_to(disc, shape)] = rng.uniform(70, 110)
    arch = (x ** 2 + (y - canal_y) ** 2 <= 12.0 ** 2) | (
        (np.abs(x) < 4) & (y < canal_y) & (y > canal_y - 0.8 * (canal_y - torso.back)))
    arch = np.broadcast_to(arch, shape) & ~np.broadcast_to(disc, shape)
    s.hu[arch] = rng.uniform(350, 700)
    canal = np.broadcast_to(x ** 2 + (y - canal_y) ** 2 <= 7.5 ** 2, shape)
    s.hu[canal] = rng.uniform(5, 25)
    s.labels[body | arch | canal] = 0

    box, X, Y, Z = s.coords((-1e4,) * 3, (1e4,) * 3, warped=False)
    theta = np.arctan2(Y, X)
    # ribs run in the middle of the muscle wall, highest at the back, falling steeply to the front, so that a slice
    # cuts each in short arcs; the lower ones stop short of the front
    ring = torso.mid_wall
    lowest, spacing = -rng.uniform(110, 150), rng.uniform(24, 32)
    slope = rng.uniform(35, 60)
    phi = np.full(X.shape, np.inf)
    for i, level in enumerate(np.arange(lowest, s.lattice.coarse_axes[2][-1] + spacing, spacing)):
        reach = np.deg2rad(60 + min(i, 4) * 25)  # the lowest ribs are the shortest, seen only at the back
        height = level - slope * np.sin(theta)
        rib = np.sqrt(ring ** 2 + ((Z - height) * 0.9) ** 2) - rng.uniform(4, 6)
        from_back = np.abs((theta + np.pi / 2 + np.pi) % (2 * np.pi) - np.pi)
        phi = np.minimum(phi, np.where(from_back < reach, rib, np.inf))
    s.paint(box, np.where(np.isfinite(phi), phi, 1e3), rng.uniform(350, 750))


def _texture_and_noise(s: _Subject, rng: np.random.Generator) -> np.ndarray:
    """Tissue texture, cupping, partial volume and correlated noise of a per-subject grain and strength -> int16."""
    lattice = s.lattice
    box = tuple(slice(0, n) for n in lattice.coarse_shape)
    texture = s.noise(box, rng.uniform(2.5, 6.0)) * rng.uniform(3, 10)
    for axis in (0, 1):
        texture = _interpolate(texture, axis, 0, slice(0, lattice.shape[axis]), lattice.factor)
    x, y = lattice.axes[0][:, None, None], lattice.axes[1][None, :, None]
    cupping = rng.uniform(-20, 10) * (x ** 2 + y ** 2) / 180.0 ** 2  # beam hardening: edges brighter or darker
    tissue = s.hu > -500
    out = s.hu + np.where(tissue, texture + cupping, 0.0)
    out = ndimage.gaussian_filter(out, (0.6, 0.6, rng.uniform(0.3, 0.6)))  # partial volume at edges
    grain = rng.uniform(0.5, 1.5)  # correlation length of the noise, in voxels: the reconstruction kernel
    noise = ndimage.gaussian_filter(rng.standard_normal(lattice.shape), (grain, grain, 0.0))
    out += noise * (rng.uniform(8, 35) / max(float(noise.std()), 1e-9))
    return np.clip(np.round(out), -1024, 3071).astype(np.int16)


# ----------------------------------------------------------------------------------------------- cohorts

def heldout_name(seed: int) -> str:
    """File name of subject `seed` in a held-out cohort folder."""
    return f"heldout_{seed:03d}.nii.gz"


def write_heldout_cohort(out: str | Path, count: int, seed: int = 0, labels: bool = True,
                         spacing_scale: float = 1.0, progress: ProgressCallback | None = None) -> list[Path]:
    """Write `count` held-out subjects (seeds seed, seed+1, ...) to out/images and, with labels, out/labels (with
    sidecars and dataset.json), as `pgl phantom` does; returns the image paths."""
    from ..errors import PGLError

    if count < 1:
        raise PGLError(f"--count must be >= 1, got {count}.")
    if spacing_scale <= 0:
        raise PGLError(f"--spacing-scale must be > 0, got {spacing_scale}.")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    if labels:
        (out / "labels").mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        name = heldout_name(seed + i)
        case = make_heldout(seed + i, spacing_scale)
        write_nifti(case.image, case.affine, out / "images" / name)
        if labels:
            write_nifti(case.labels, case.affine, out / "labels" / name)
            write_sidecar(out / "labels" / name, label_table(LABELS))
        paths.append(out / "images" / name)
        emit(progress, "progress", stage="phantom", step=i + 1, total=count, file=name)
    if labels:
        description = {
            "name": "PGL held-out phantoms", "description": "Synthetic torso CT, held-out family (pgl phantom "
            "--family heldout)", "modality": {"0": "CT"},
            "labels": {"0": "background", **{str(k): v for k, v in LABELS.items()}},
            "numTraining": len(paths),
            "training": [{"image": f"./images/{p.name}", "label": f"./labels/{p.name}"} for p in paths],
        }
        (out / "dataset.json").write_text(json.dumps(description, indent=2))
    return paths
