"""Synthetic abdominal CT phantoms: the embedded data of the demo and the tests.

Each subject (one seed) has its own body size, fat thickness, organ shapes, positions and enhancement,
scanner spacing (0.7-0.9 mm in-plane, 2-5 mm slices), texture, partial volume and noise. Organ intensities
overlap as in portal-venous CT (liver ~ spleen ~ pancreas, kidney cortex ~ aorta ~ oral contrast), so a
segmentation needs shape and context. A scan can instead be drawn in the late arterial phase or without
contrast (`PHASES`), where the organs take other, literature-typical intensities. Coordinates are RAS
millimetres (+x Right, +y Anterior, +z Superior) with the origin at the body centre.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..data.imaging import write_nifti
from ..data.labels import label_table, write_sidecar
from ..progress import ProgressCallback, emit

LABELS = {1: "liver", 2: "spleen", 3: "right kidney", 4: "left kidney", 5: "tumour"}
ORGANS = ("liver", "spleen", "right kidney", "left kidney")  # the labels that are organs (not lesions)
FIELD_OF_VIEW_MM = (360.0, 300.0, 200.0)

# HU ranges per contrast phase. "*_drop" are subtracted from the organ's value, "hepatic_vein" is added to the
# liver's; venous is the phantoms' original (and default) phase.
PHASES = {
    "venous": {"liver": (95, 135), "spleen": (100, 140), "kidney": (140, 200), "pancreas": (80, 115),
               "medulla_drop": (30, 60), "aorta": (150, 220), "ivc": (110, 160), "hepatic_vein": (35, 70),
               "liver_lesion_drop": (25, 60), "kidney_lesion_drop": (40, 90)},
    "arterial": {"liver": (65, 85), "spleen": (110, 150), "kidney": (180, 260), "pancreas": (100, 135),
                 "medulla_drop": (90, 140), "aorta": (250, 350), "ivc": (70, 110), "hepatic_vein": (-25, -5),
                 "liver_lesion_drop": (10, 35), "kidney_lesion_drop": (60, 120)},
    "native": {"liver": (50, 70), "spleen": (40, 55), "kidney": (28, 40), "pancreas": (35, 50),
               "medulla_drop": (0, 8), "aorta": (35, 50), "ivc": (35, 50), "hepatic_vein": (-25, -10),
               "liver_lesion_drop": (10, 30), "kidney_lesion_drop": (5, 25)},
}


@dataclass
class PhantomCase:
    image: np.ndarray  # int16 HU, (x, y, z)
    labels: np.ndarray  # uint8, same grid
    affine: np.ndarray  # voxel -> RAS mm


def _rotation(rng: np.random.Generator, max_deg: float, about_z: float = 0.0) -> np.ndarray:
    """Small random rotation plus a chosen rotation about z (degrees)."""
    angles = np.deg2rad(rng.uniform(-max_deg, max_deg, 3) + np.array([0.0, 0.0, about_z]))
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass
class Blob:
    """A rotated ellipsoid whose surface is bumped by a smooth random field."""

    center: np.ndarray
    radii: np.ndarray
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    bump: float = 0.0
    waves: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    phases: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @classmethod
    def random(cls, rng, center, radii, max_rot=10.0, about_z=0.0, bump=0.12) -> "Blob":
        waves = rng.normal(size=(3, 3))
        waves *= (2 * np.pi / rng.uniform(40, 90, (3, 1))) / np.linalg.norm(waves, axis=1, keepdims=True)
        return cls(np.asarray(center, float), np.asarray(radii, float), _rotation(rng, max_rot, about_z), bump,
                   waves, rng.uniform(0, 2 * np.pi, 3))

    def scaled(self, factor: float) -> "Blob":
        return Blob(self.center, self.radii * factor, self.rotation, self.bump, self.waves, self.phases)

    def mask(self, grid: "Grid") -> tuple[tuple[slice, ...], np.ndarray]:
        """(slices of the bounding box, boolean mask inside it)."""
        reach = self.radii.max() * (1 + self.bump)
        sl = grid.box(self.center - reach, self.center + reach)
        d = [c[s] - self.center[i] for i, (c, s) in enumerate(zip(grid.axes(), sl))]
        d = [d[0][:, None, None], d[1][None, :, None], d[2][None, None, :]]
        q = sum((sum(self.rotation[j, k] * d[j] for j in range(3)) / self.radii[k]) ** 2 for k in range(3))
        if self.bump:
            wobble = sum(np.sin(sum(w[j] * d[j] for j in range(3)) + ph) for w, ph in zip(self.waves, self.phases))
            q = np.sqrt(q) * (1.0 + self.bump * wobble / len(self.phases))
        return sl, q <= 1.0


@dataclass
class Grid:
    shape: tuple[int, int, int]
    spacing: np.ndarray
    origin: np.ndarray  # RAS of voxel (0, 0, 0)

    def axes(self) -> list[np.ndarray]:
        return [self.origin[i] + np.arange(self.shape[i]) * self.spacing[i] for i in range(3)]

    def box(self, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, ...]:
        i0 = np.clip(np.floor((lo - self.origin) / self.spacing).astype(int), 0, self.shape)
        i1 = np.clip(np.ceil((hi - self.origin) / self.spacing).astype(int) + 1, 0, self.shape)
        return tuple(slice(int(a), int(b)) for a, b in zip(i0, i1))


class Canvas:
    """HU and label volumes painted structure by structure (later structures win)."""

    KEEP = -1

    def __init__(self, grid: Grid, background: float):
        self.grid = grid
        self.hu = np.full(grid.shape, background, dtype=np.float32)
        self.labels = np.zeros(grid.shape, dtype=np.uint8)

    def paint(self, blob: Blob, hu: float, label: int = 0, within: np.ndarray | None = None) -> np.ndarray:
        sl, m = blob.mask(self.grid)
        if within is not None:
            m = m & within[sl]
        self.hu[sl][m] = hu
        if label != self.KEEP:
            self.labels[sl][m] = label
        return (sl, m)


def phase_of(seed: int, phases: tuple[str, ...] = ("venous",)) -> str:
    """The contrast phase of subject `seed`: `phases` in turn by seed, so any run of seeds is balanced."""
    unknown = [p for p in phases if p not in PHASES]
    if not phases or unknown:
        from ..errors import PGLError

        raise PGLError(f"contrast phases: unknown {unknown or 'none given'}; choose from {', '.join(PHASES)}.")
    return phases[seed % len(phases)]


@dataclass
class Body:
    """A subject's build, drawn first: the masks of the body and its abdominal cavity, and what places organs."""

    a: float  # semi-axes of the body's outline (mm, x and y)
    b: float
    fat: float  # subcutaneous fat thickness (mm)
    rv: float  # vertebral body radius (mm)
    outline: np.ndarray  # inside the skin
    cavity: np.ndarray  # inside the muscle wall
    X: np.ndarray  # RAS coordinates of the grid, broadcastable to its shape
    Y: np.ndarray
    Z: np.ndarray

    @property
    def sx(self) -> float:
        """Body width relative to the average build (300 mm): the x that organs placed by the body follow."""
        return self.a / 150.0

    @property
    def sy(self) -> float:
        """Body depth relative to the average build (224 mm)."""
        return self.b / 112.0

    @property
    def yv(self) -> float:
        """y of the vertebral bodies' centre (posterior = -y)."""
        return -0.45 * self.b

    def anchor(self, name: str, x_side: float) -> np.ndarray:
        """Origin of a Part's centre: the body's centre, the front of the spine, or the spine's side toward x_side."""
        if name == "spine front":
            return np.array((0.0, self.yv + self.rv, 0.0))
        if name == "spine side":
            return np.array((np.copysign(self.rv, x_side), self.yv, 0.0))
        return np.zeros(3)

    def fit(self, axes: str) -> np.ndarray:
        """Per-axis factors that make average-build millimetres follow this body along `axes` ("x", "y", "xy")."""
        return np.array((self.sx if "x" in axes else 1.0, self.sy if "y" in axes else 1.0, 1.0))


@dataclass(frozen=True)
class Part:
    """One ellipsoid of an organ: centre and radii in mm for the average build, the centre from `anchor`.

    The axes in `fit_center` / `fit_radii` follow the subject's body width (x) and depth (y). Two `radii` are a
    range each radius is drawn from; `grow`, the range of a size factor drawn per subject. Every part is jittered
    (6 mm), turned by up to `max_rot` degrees (plus `about_z`) and its surface bumped by `bump`."""

    center: tuple[float, float, float]
    radii: tuple[float, ...]
    anchor: str = "body"  # or "spine front", "spine side" (see Body.anchor)
    fit_center: str = ""
    fit_radii: str = ""
    grow: tuple[float, float] | None = None
    max_rot: float = 10.0
    about_z: float = 0.0
    bump: float = 0.12


@dataclass(frozen=True)
class Organ:
    """A soft-tissue organ: its label (0: unlabelled tissue), intensity and parts.

    `hu` is a key of PHASES (drawn per subject before any organ) or a range drawn after the organ's shape;
    `size` is one factor for all its parts, drawn before them (the liver's lobes grow together)."""

    name: str
    label: int
    hu: str | tuple[float, float]
    parts: tuple[Part, ...]
    size: tuple[float, float] | None = None


# The organs in painting order: a later one covers an earlier one where they meet, all inside the abdominal cavity.
# This is also the order of the random draws, so editing a row or reordering them changes every phantom (and the
# figures measured on them; see Testing/test_phantom_pins.py).
_KIDNEY = dict(radii=(28, 30, 55), anchor="spine side", grow=(0.85, 1.15), max_rot=15, bump=0.06)
ORGAN_TABLE = (
    Organ("pancreas", 0, "pancreas", (
        Part((-10, 35, 5), (65, 13, 12), "spine front", fit_radii="x", max_rot=8, about_z=15),)),
    Organ("stomach", 0, (5, 30), (
        Part((-45, 35, 55), (35, 48), fit_center="xy", max_rot=20),)),
    Organ("liver", 1, "liver", (
        Part((60, 5, 35), (70, 80, 65), fit_center="xy", fit_radii="xy"),  # right lobe
        Part((5, 40, 45), (50, 40, 40), fit_center="y", fit_radii="y", max_rot=15)), size=(0.85, 1.15)),  # left
    Organ("gallbladder", 0, (0, 20), (
        Part((40, 55, -5), (12, 20), fit_center="xy", max_rot=20),)),
    Organ("spleen", 2, "spleen", (
        Part((-75, -35, 45), (28, 55, 50), fit_center="xy", fit_radii="y", grow=(0.8, 1.2), about_z=-30),)),
    Organ("right kidney", 3, "kidney", (
        Part((48, 8, -25), about_z=20, **_KIDNEY),)),
    Organ("left kidney", 4, "kidney", (
        Part((-48, 8, -15), about_z=-20, **_KIDNEY),)),
)


def make_phantom(seed: int, spacing_scale: float = 1.0, phase: str = "venous") -> PhantomCase:
    """One synthetic abdominal CT in the given contrast phase (see PHASES) and its label map."""
    hu_range = PHASES[phase]
    rng = np.random.default_rng([seed, 7321])
    grid = _scanner_grid(rng, spacing_scale)
    canvas = Canvas(grid, background=-1000.0)
    body = _paint_body(canvas, rng)
    _paint_back_muscles(canvas, rng, body)
    _paint_bowel(canvas, rng, body)
    organ_hu = {key: rng.uniform(*hu_range[key]) for key in ("liver", "spleen", "kidney", "pancreas")}
    organs = {organ.name: _paint_organ(canvas, rng, body, organ, organ_hu, hu_range) for organ in ORGAN_TABLE}
    _paint_vessels(canvas, rng, body, organs["liver"][0], organ_hu["liver"], hu_range)
    _paint_bones(canvas, rng, body)
    _paint_lesions(canvas, rng, body, [organs["right kidney"][0], organs["left kidney"][0]], organ_hu, hu_range)
    image = _texture_and_noise(canvas.hu, np.broadcast_to(body.outline, grid.shape), grid.spacing, rng)
    affine = np.diag([*grid.spacing, 1.0])
    affine[:3, 3] = grid.origin
    return PhantomCase(image, canvas.labels, affine)


def _scanner_grid(rng, spacing_scale: float) -> Grid:
    """The subject's scanner spacing (0.7-0.9 mm in-plane, 2-5 mm slices, times spacing_scale), centred on the body."""
    in_plane, thickness = rng.uniform(0.7, 0.9), rng.uniform(2.0, 5.0)
    spacing = np.array([in_plane, in_plane, thickness]) * spacing_scale
    shape = tuple(int(round(f / s)) for f, s in zip(FIELD_OF_VIEW_MM, spacing))
    origin = -(np.array(shape) - 1) / 2 * spacing
    return Grid(shape, spacing, origin)


def _paint_body(canvas: Canvas, rng) -> Body:
    """Elliptic cylinder slowly varying along z: subcutaneous fat, muscle wall, abdominal cavity (visceral fat)."""
    shape = canvas.grid.shape
    x, y, z = canvas.grid.axes()
    X, Y, Z = x[:, None, None], y[None, :, None], z[None, None, :]
    a, b = rng.uniform(135, 170), rng.uniform(100, 125)
    taper = 1.0 + 0.04 * np.sin(Z / 60.0 + rng.uniform(0, 6))
    fat, wall = rng.uniform(8, 30), rng.uniform(6, 12)
    outline = (X / (a * taper)) ** 2 + (Y / (b * taper)) ** 2 <= 1.0
    muscle = (X / (a * taper - fat)) ** 2 + (Y / (b * taper - fat)) ** 2 <= 1.0
    cavity = np.broadcast_to((X / (a * taper - fat - wall)) ** 2 + (Y / (b * taper - fat - wall)) ** 2 <= 1.0,
                             shape)
    canvas.hu[np.broadcast_to(outline, shape)] = rng.uniform(-115, -85)
    canvas.hu[np.broadcast_to(muscle, shape)] = rng.uniform(40, 60)
    canvas.hu[cavity] = rng.uniform(-95, -65)
    return Body(a, b, fat, rng.uniform(17, 22), outline, cavity, X, Y, Z)


def _paint_back_muscles(canvas: Canvas, rng, body: Body) -> None:
    """The paraspinal muscles, either side behind the spine."""
    for side in (-1, 1):
        muscle = Blob.random(rng, (side * 38, body.yv - body.rv - 12, 0), (24, 20, 150), 3, bump=0.05)
        canvas.paint(muscle, rng.uniform(45, 60))


def _paint_bowel(canvas: Canvas, rng, body: Body) -> None:
    """Bowel loops, some with gas, some with oral contrast (as bright as kidneys and vessels)."""
    for _ in range(int(rng.integers(12, 26))):
        c = (rng.uniform(-100, 100) * body.sx, rng.uniform(-20, 70) * body.sy, rng.uniform(-100, 20))
        blob = Blob.random(rng, c, rng.uniform(10, 25, 3), 40, bump=0.15)
        kind = rng.random()
        canvas.paint(blob, rng.uniform(150, 260) if kind < 0.2 else rng.uniform(20, 70), within=body.cavity)
        if kind > 0.75:
            canvas.paint(blob.scaled(0.7), -900.0, within=body.cavity)


def _paint_organ(canvas: Canvas, rng, body: Body, organ: Organ, organ_hu: dict, hu_range: dict) -> list[Blob]:
    """Draw an organ's parts as ORGAN_TABLE says, paint them and what is inside; returns its parts' blobs."""
    size = rng.uniform(*organ.size) if organ.size else 1.0
    blobs = []
    for part in organ.parts:
        center = np.array(part.center, float) * body.fit(part.fit_center) + body.anchor(part.anchor, part.center[0])
        center = center + rng.normal(0, 6, 3)
        radii = rng.uniform(*part.radii, 3) if len(part.radii) == 2 else np.array(part.radii, float)
        radii = radii * body.fit(part.fit_radii) * size
        if part.grow:
            radii = radii * rng.uniform(*part.grow)
        blobs.append(Blob.random(rng, center, radii, part.max_rot, part.about_z, part.bump))
    hu = organ_hu[organ.hu] if isinstance(organ.hu, str) else rng.uniform(*organ.hu)
    for blob in blobs:
        canvas.paint(blob, hu, organ.label, within=body.cavity)
    if organ.name == "stomach":
        _paint_stomach_gas(canvas, rng, body, blobs[0])
    elif organ.name.endswith("kidney"):
        _paint_kidney_inside(canvas, rng, body, blobs[0], np.sign(organ.parts[0].center[0]), hu, hu_range)
    return blobs


def _paint_stomach_gas(canvas: Canvas, rng, body: Body, stomach: Blob) -> None:
    """Gas in the stomach's front part: the patient lies supine, so gas rises anteriorly."""
    sl, m = stomach.mask(canvas.grid)
    gas_level = stomach.center[1] + rng.uniform(10, 25)
    y = canvas.grid.axes()[1]
    canvas.hu[sl][m & body.cavity[sl] & (y[sl[1]][None, :, None] > gas_level)] = -900.0


def _paint_kidney_inside(canvas: Canvas, rng, body: Body, kidney: Blob, side: float, kidney_hu: float,
                         hu_range: dict) -> None:
    """Medulla and renal pelvis (kept in the kidney's label), and the renal hilum's fat toward the spine."""
    medulla_hu = kidney_hu - rng.uniform(*hu_range["medulla_drop"])
    canvas.paint(kidney.scaled(0.55), medulla_hu, Canvas.KEEP, within=body.cavity)
    pelvis = Blob(kidney.center - np.array((side * 14, 0, 0)), np.array((8, 10, 18)))
    canvas.paint(pelvis, rng.uniform(0, 25), Canvas.KEEP, within=body.cavity)
    notch = Blob(kidney.center - np.array((side * 30, 0, 0)), np.array((12, 12, 22)))
    canvas.paint(notch, rng.uniform(-95, -65), 0, within=body.cavity)


def _paint_vessels(canvas: Canvas, rng, body: Body, right_lobe: Blob, liver_hu: float, hu_range: dict) -> None:
    """Aorta and IVC in front of the spine; hepatic veins in the right lobe, kept inside the liver label."""
    front = body.yv + body.rv
    canvas.paint(Blob(np.array((-12, front + 12, 0)), np.array((12, 12, 300)) * rng.uniform(0.85, 1.1)),
                 rng.uniform(*hu_range["aorta"]))
    canvas.paint(Blob(np.array((22, front + 15, 0)), np.array((14, 10, 300)) * rng.uniform(0.85, 1.1)),
                 rng.uniform(*hu_range["ivc"]))
    for _ in range(int(rng.integers(2, 5))):
        c = right_lobe.center + rng.normal(0, 20, 3)
        vessel = Blob(c, np.array((3.5, 3.5, 40)) * rng.uniform(0.8, 1.3), _rotation(rng, 60))
        vein_hu = liver_hu + rng.uniform(*hu_range["hepatic_vein"])
        canvas.paint(vessel, vein_hu, Canvas.KEEP, within=canvas.labels == 1)


def _paint_lesions(canvas: Canvas, rng, body: Body, kidneys: list[Blob], organ_hu: dict, hu_range: dict) -> None:
    """Tumours: hypodense liver lesions, sometimes an exophytic kidney lesion."""
    grid = canvas.grid
    liver_voxels = np.argwhere(canvas.labels == 1)
    for _ in range(int(rng.integers(0, 4)) if len(liver_voxels) else 0):
        c = grid.origin + liver_voxels[rng.integers(len(liver_voxels))] * grid.spacing
        canvas.paint(Blob.random(rng, c, np.full(3, rng.uniform(5, 18)), 0, bump=0.1),
                     organ_hu["liver"] - rng.uniform(*hu_range["liver_lesion_drop"]), 5, within=canvas.labels == 1)
    if rng.random() < 0.3:
        kidney = kidneys[int(rng.integers(2))]
        c = kidney.center + kidney.rotation @ (kidney.radii * np.array((0.8, 0.3, 0.2)))
        canvas.paint(Blob.random(rng, c, np.full(3, rng.uniform(8, 16)), 0, bump=0.1),
                     organ_hu["kidney"] - rng.uniform(*hu_range["kidney_lesion_drop"]), 5, within=body.cavity)


def _paint_bones(canvas: Canvas, rng, body: Body) -> None:
    """Vertebrae with discs and canal, and ribs as rings in the muscle wall of the upper abdomen."""
    X, Y, Z, a, b, fat, rv, yv = body.X, body.Y, body.Z, body.a, body.b, body.fat, body.rv, body.yv
    shape = canvas.hu.shape
    r2 = (X ** 2 + (Y - yv) ** 2)
    period, offset = rng.uniform(26, 32), rng.uniform(0, 30)
    disc = np.abs(((Z - offset) % period) - period / 2) < 3.0
    body_mask = np.broadcast_to(r2 <= rv ** 2, shape)
    cortex = np.broadcast_to((r2 <= rv ** 2) & (r2 >= (rv - 2.5) ** 2), shape)
    canvas.hu[body_mask] = rng.uniform(200, 320)
    canvas.hu[cortex] = rng.uniform(600, 900)
    canvas.hu[body_mask & np.broadcast_to(disc, shape)] = rng.uniform(70, 100)
    canvas.labels[body_mask] = 0
    canal = np.broadcast_to(X ** 2 + (Y - yv + rv + 10) ** 2 <= 8.0 ** 2, shape)
    arch = np.broadcast_to((X ** 2 + (Y - yv + rv + 10) ** 2 <= 13.0 ** 2) | (
        (np.abs(X) < 5) & (Y < yv - rv - 18) & (Y > yv - rv - 40)), shape) & ~np.broadcast_to(disc, shape)
    canvas.hu[arch] = rng.uniform(400, 700)
    canvas.hu[canal] = rng.uniform(5, 20)
    canvas.labels[arch | canal] = 0
    angle = np.degrees(np.arctan2(Y, X))
    sector = (np.abs(angle - 90) > 35) & (np.abs(angle + 90) > 25)
    ring = (X / (a - fat - 4)) ** 2 + (Y / (b - fat - 4)) ** 2
    inner = (X / (a - fat - 11)) ** 2 + (Y / (b - fat - 11)) ** 2
    rib_plane = (ring <= 1.0) & (inner >= 1.0) & sector
    rib_period = rng.uniform(22, 28)
    ribs = (((Z + rng.uniform(0, 20)) % rib_period) < 10.0) & (Z > rng.uniform(-40, -10))
    bone = np.broadcast_to(rib_plane, shape) & np.broadcast_to(ribs, shape)
    canvas.hu[bone] = rng.uniform(500, 800)
    canvas.labels[bone] = 0


def _texture_and_noise(hu: np.ndarray, body: np.ndarray, spacing: np.ndarray, rng) -> np.ndarray:
    """Tissue texture, partial volume (slice profile blur) and correlated quantum noise -> int16 HU."""
    texture = ndimage.gaussian_filter(rng.standard_normal(hu.shape, dtype=np.float32), sigma=3.0 / spacing)
    texture *= rng.uniform(5, 9) / max(float(texture.std()), 1e-6)
    out = hu + np.where(body, texture, 0.0).astype(np.float32)
    out = ndimage.gaussian_filter(out, sigma=(0.5, 0.5, 0.45))  # partial volume across voxel edges
    noise = ndimage.gaussian_filter(rng.standard_normal(hu.shape, dtype=np.float32), sigma=(0.8, 0.8, 0.0))
    noise *= rng.uniform(8, 20) / max(float(noise.std()), 1e-6)
    out += noise
    return np.clip(np.round(out), -1024, 3071).astype(np.int16)


def write_cohort(out: str | Path, count: int, labels: bool = False, seed: int = 0, spacing_scale: float = 1.0,
                 phases: tuple[str, ...] = ("venous",), progress: ProgressCallback | None = None) -> list[Path]:
    """Write `count` phantoms to out/images (and out/labels) and each one's phase to out/phases.json.

    Each subject's contrast phase is drawn from `phases`; returns the image paths."""
    from ..errors import PGLError

    if count < 1:
        raise PGLError(f"--count must be >= 1, got {count}.")
    if spacing_scale <= 0:
        raise PGLError(f"--spacing-scale must be > 0, got {spacing_scale}.")
    phase_of(seed, tuple(phases))  # refuses unknown phases before anything is written
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    if labels:
        (out / "labels").mkdir(parents=True, exist_ok=True)
    paths, phase_by_file = [], {}
    for i in range(count):
        name = phantom_name(seed + i)
        phase_by_file[name] = phase_of(seed + i, tuple(phases))
        case = make_phantom(seed + i, spacing_scale, phase_by_file[name])
        write_nifti(case.image, case.affine, out / "images" / name)
        if labels:
            write_nifti(case.labels, case.affine, out / "labels" / name)
            write_sidecar(out / "labels" / name, label_table(LABELS))
        paths.append(out / "images" / name)
        emit(progress, "progress", stage="phantom", step=i + 1, total=count, file=name)
    write_phases(out, phase_by_file)
    if labels:
        write_dataset_json(out, [p.name for p in paths])
    return paths


def phantom_name(seed: int) -> str:
    """File name of subject `seed` in a cohort folder."""
    return f"phantom_{seed:03d}.nii.gz"


def write_phases(out: Path, phase_by_file: dict[str, str]) -> Path:
    path = out / "phases.json"
    path.write_text(json.dumps(phase_by_file, indent=1))
    return path


def read_phases(folder: str | Path) -> dict[str, str]:
    """File name -> contrast phase of a cohort folder; cohorts written before phases existed are all venous."""
    path = Path(folder) / "phases.json"
    if path.is_file():
        return json.loads(path.read_text())
    return {p.name: "venous" for p in (Path(folder) / "images").glob("*.nii.gz")}


def write_dataset_json(out: Path, names: list[str]) -> Path:
    """A Medical Segmentation Decathlon style description of the cohort (label names, training pairs)."""
    description = {
        "name": "PGL phantoms", "description": "Synthetic abdominal CT (pgl phantom)", "modality": {"0": "CT"},
        "labels": {"0": "background", **{str(k): v for k, v in LABELS.items()}},
        "numTraining": len(names),
        "training": [{"image": f"./images/{n}", "label": f"./labels/{n}"} for n in names],
    }
    path = out / "dataset.json"
    path.write_text(json.dumps(description, indent=2))
    return path
