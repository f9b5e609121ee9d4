"""On-disk cache of preprocessed scans: each scan is decoded and resampled once.

Entries are keyed by the file's content (SHA-256) and the preprocessing settings, stored as float16 .npy
files and opened memory-mapped, so memory does not grow with the number of scans. Every file is written
under a unique temporary name and renamed into place, so several processes may fill one cache at once.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..atomic import atomic_write, write_text_atomically
from ..errors import DiskFull, PGLError
from .dicom import DicomSeries
from .imaging import load_ras, non_finite_note, normalise_hu

PREPROCESS_VERSION = 2  # 2: block averaging before the anti-alias Gaussian


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pgl_engine"


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class CachedScan:
    """A preprocessed scan in the cache: values in [0, 1], indexed (x, y, z) on a RAS grid."""

    array_path: Path
    source: Path
    shape: tuple[int, int, int]
    affine: tuple[tuple[float, ...], ...]
    digest: str
    non_finite: int = 0  # NaN/inf voxels of the source, set to the HU window's low end
    constant: bool = False  # every voxel the same after the HU window: nothing to learn from

    def load(self) -> np.ndarray:
        """Memory-mapped, read-only view of the array (float16)."""
        return np.load(self.array_path, mmap_mode="r")


class ScanCache:
    """Preprocess scans once per (content, settings) and hand back memory-mapped arrays."""

    def __init__(self, root: str | Path | None, spacing: tuple[float, float, float],
                 hu_window: tuple[float, float]):
        self.root = Path(root) if root else default_cache_dir()
        self.settings = {"spacing": [float(s) for s in spacing], "hu_window": [float(v) for v in hu_window],
                         "version": PREPROCESS_VERSION}
        self.hits = 0
        self.misses = 0

    def _digest(self, scan) -> str:
        """Content hash, remembered per file (path, size, mtime) so unchanged files are not re-read; a DICOM
        series hashes its files' hashes in slice order (their SOP instances and pixel data)."""
        if isinstance(scan, DicomSeries):
            return hashlib.sha256("\n".join(["dicom-series", *map(self._file_digest, scan.files)]).encode()).hexdigest()
        return self._file_digest(scan)

    def _file_digest(self, path: Path) -> str:
        st = path.stat()
        stat_key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
        memo = self.root / "digests" / stat_key[:2] / stat_key
        if memo.is_file():
            digest = memo.read_text().strip()
            if len(digest) == 64:
                return digest
        digest = file_digest(path)
        write_text_atomically(memo, digest)
        return digest

    def get(self, path) -> CachedScan:
        """The cached, preprocessed scan for `path` (a file or a DicomSeries); decodes and stores it on the first
        call."""
        path = path if isinstance(path, DicomSeries) else Path(path)
        digest = self._digest(path)
        key = hashlib.sha256((digest + json.dumps(self.settings, sort_keys=True)).encode()).hexdigest()
        entry = self.root / "scans" / key[:2]
        array_path, meta_path = entry / f"{key}.npy", entry / f"{key}.json"
        if array_path.is_file() and meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text())
                value_range = meta.get("value_range")
                if value_range is None:  # an entry from before the field: measured once, then recorded
                    meta["value_range"] = value_range = _value_range(np.load(array_path, mmap_mode="r"))
                    write_text_atomically(meta_path, json.dumps(meta))
                self.hits += 1
                return CachedScan(array_path, path, tuple(meta["shape"]), tuple(tuple(r) for r in meta["affine"]),
                                  digest, int(meta.get("non_finite", 0)), value_range[0] == value_range[1])
            except (ValueError, KeyError, OSError):
                pass  # a damaged entry is rebuilt below
        self.misses += 1
        volume = load_ras(path, tuple(self.settings["spacing"]), fill=self.settings["hu_window"][0])
        array = normalise_hu(volume.array, tuple(self.settings["hu_window"])).astype(np.float16)
        atomic_write(array_path, lambda tmp: _save_npy(tmp, array), size_hint=array.nbytes)
        value_range = _value_range(array)
        meta = {"shape": list(array.shape), "affine": volume.affine.tolist(), "source": str(path),
                "settings": self.settings, "non_finite": volume.non_finite, "value_range": value_range}
        write_text_atomically(meta_path, json.dumps(meta))
        return CachedScan(array_path, path, tuple(array.shape), tuple(tuple(r) for r in volume.affine.tolist()),
                          digest, volume.non_finite, value_range[0] == value_range[1])

    def notes(self, scans: list[CachedScan]) -> list[str]:
        """Warnings about scans that were read but are suspect: non-finite voxels, or a constant image."""
        low = self.settings["hu_window"][0]
        notes = [non_finite_note(s.source, s.non_finite, low) for s in scans if s.non_finite]
        return notes + [f"{s.source}: every voxel has the same value within the HU window "
                        f"{tuple(self.settings['hu_window'])}, so it carries nothing to learn from; check its "
                        f"export or remove it." for s in scans if s.constant]


def _value_range(array: np.ndarray) -> list[float]:
    return [float(array.min()), float(array.max())]


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array)


def cache_scans(paths: list[Path], cache: ScanCache,
                on_scan: Callable[[int, int, Path], None] | None = None) -> tuple[list[CachedScan], list[str]]:
    """Cache every readable scan; return (cached scans, messages for the files that were skipped)."""
    cached, skipped = [], []
    for i, path in enumerate(paths):
        try:
            cached.append(cache.get(path))
        except DiskFull:
            raise  # the cache's disk, not the scan
        except PGLError as e:
            skipped.append(str(e))
        if on_scan:
            on_scan(i + 1, len(paths), path)
    return cached, skipped


def data_fingerprint(scans: list[CachedScan]) -> str:
    """One hash for the set of scans a model was trained on (order-independent)."""
    return hashlib.sha256("\n".join(sorted(s.digest for s in scans)).encode()).hexdigest()
