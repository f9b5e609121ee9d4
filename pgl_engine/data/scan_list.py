"""`pgl scan-list`: what a folder tree gives `--images` (scan files and DICOM series) and what is skipped, why."""
from __future__ import annotations

from pathlib import Path

from ..errors import PGLError
from .imaging import DicomSeries, find_scans, read_geometry, scan_name


def scan_listing(folder: str | Path, modalities: tuple[str, ...] = ("CT",)) -> dict:
    """{"folder", "scans": [{name, kind, source, size, spacing, ...}], "skipped": [{what, reason}], "counts"}."""
    search = find_scans(folder, modalities)
    scans = []
    for scan in search.scans:
        entry = {"name": scan_name(scan), "kind": "dicom" if isinstance(scan, DicomSeries) else "file"}
        if isinstance(scan, DicomSeries):
            entry.update(source=str(scan.files[0].parent), modality=scan.modality, description=scan.description,
                         size=list(scan.size), spacing=[round(v, 4) for v in scan.spacing], files=len(scan.files))
        else:
            entry["source"] = str(scan)
            try:
                size, affine = read_geometry(scan)
                entry.update(size=list(size), spacing=[round(float(abs(affine[i, :3]).max()), 4) for i in range(3)])
            except PGLError as e:
                entry["problem"] = str(e)
        scans.append(entry)
    series = sum(1 for s in scans if s["kind"] == "dicom")
    return {"folder": str(folder), "scans": scans,
            "skipped": [{"what": s.what, "reason": s.reason} for s in search.skipped],
            "counts": {"scans": len(scans), "files": len(scans) - series, "series": series,
                       "skipped": len(search.skipped), "other_files": search.other_files}}


def describe_search(listing: dict) -> str:
    """The listing as a short table for a terminal."""
    c = listing["counts"]
    lines = [f"{listing['folder']}: {c['scans']} scan(s) to use ({c['files']} file(s), {c['series']} DICOM series), "
             f"{c['skipped']} skipped" + (f", {c['other_files']} other file(s) ignored" if c["other_files"] else "")]
    for s in listing["scans"]:
        size = "x".join(map(str, s.get("size", []))) or "?"
        spacing = "x".join(f"{v:.2f}" for v in s.get("spacing", [])) or "?"
        detail = f"DICOM {s['modality']}, {s['files']} slices" if s["kind"] == "dicom" else "file"
        lines.append(f"  use   {s['name']:<40} {detail}, {size} voxels, {spacing} mm"
                     + (f"  (problem: {s['problem']})" if "problem" in s else ""))
    lines += [f"  skip  {s['what']}: {s['reason']}" for s in listing["skipped"]]
    return "\n".join(lines)
