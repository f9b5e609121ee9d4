"""What a model folder says about itself, for the panel: labels, what it was trained from, validation, warnings.
Read from pgl_model.json only (no torch, no weights)."""
from __future__ import annotations

import json
from pathlib import Path

from pgl_engine.contract import SEGMENT_RATES_KEY, describe_seconds, segment_seconds
from pgl_engine.models.learnt import describe_learnt

from .output_folders import MODEL_FILE


def read_model_metadata(model_dir: str) -> dict:
    try:
        data = json.loads((Path(model_dir) / MODEL_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def label_names(metadata: dict) -> list[str]:
    """The model's label names in label-value order (value 1 first)."""
    labels = metadata.get("labels") or {}
    return [labels[k]["name"] for k in sorted(labels, key=int)]


def describe_model(model_dir: str) -> tuple[str, list[str]]:
    """(one paragraph on the model, warnings a user should see before trusting it)."""
    meta = read_model_metadata(model_dir)
    if not meta:
        return f"{model_dir}: no PGL model here.", []
    if meta.get("kind") != "segmentation":
        return f"{Path(model_dir).name}: a pretrained model ({meta.get('method', '?')}); fine-tune it first.", []
    init = meta.get("init") or {}
    start = "Trained from random initialisation" if init.get("path", "none") == "none" else \
        f"{'Continued from' if init.get('transfer') == 'continued' else 'Initialised from'} {Path(init['path']).name}" \
        f" ({init.get('method') or init.get('kind', '?')})"
    cases = meta.get("cases") or []
    steps = (meta.get("training") or {}).get("steps", "?")
    lineage = meta.get("lineage") or []
    parts = [f"Labels: {', '.join(label_names(meta)) or 'none'}.",
             f"{start}, on {len(cases) or meta.get('num_scans', '?')} case(s)"
             + (f" ({', '.join(cases[:6])}{', ...' if len(cases) > 6 else ''})" if cases else "")
             + f", {steps} steps" + (f"; round {len(lineage)} of refinement" if len(lineage) > 1 else "") + "."]
    validation = meta.get("validation")
    parts.append(f"Validation Dice {validation['dice']:.3f} (step {validation['step']})." if validation and
                 validation.get("dice") is not None and validation["dice"] >= 0 else "No validation case.")
    configuration = meta.get("configuration")
    if isinstance(configuration, dict) and configuration.get("why"):  # chosen for the machine and the budget
        parts.append(f"Configuration chosen for its time budget: {configuration['why']}.")
    learnt, not_learnt = describe_learnt(meta.get("learnt"))
    parts += [learnt] if learnt else []
    warnings = []
    if (len(cases) or meta.get("num_scans")) == 1:
        warnings.append("Trained on one scan only: expect it to fail on scans unlike that one; add pairs.")
    return " ".join(parts), warnings + not_learnt


def expected_segment_seconds(metadata: dict, size, spacing) -> float | None:
    """Seconds `pgl segment` should take on a volume of `size` voxels at `spacing` mm, from the rates the engine
    measured after fine-tuning (pgl_model.json "segment_rates", docs/formats.md); None for models without them.
    The formula is the engine's own (pgl_engine.contract.segment_seconds)."""
    return segment_seconds(metadata, size, spacing)


def describe_segment_time(metadata: dict, size, spacing) -> str:
    """The panel's line under the model: the expected time on the chosen volume, or why there is none."""
    seconds = expected_segment_seconds(metadata, size, spacing)
    if seconds is None:
        return "Expected time: not measured for this model (fine-tuned with an older version of PGL)."
    device = metadata[SEGMENT_RATES_KEY].get("device", "?")
    return (f"Expected time on this volume: {describe_seconds(seconds)} (measured on {device} when the model was "
            f"fine-tuned).")


ENGINE_STARTUP_S = 5.0  # starting the engine process (Python, torch) before it reads the scans


def describe_finetune_time(minutes: float, scans: int, recent: list[dict]) -> str:
    """The panel's line under the training budget: what "train for about N minutes" will amount to here, from the
    timing the engine recorded in the newest of `recent` (model metadata, newest first) that has one."""
    timing = next((m["timing"] for m in recent if isinstance(m.get("timing"), dict)
                   and m["timing"].get("seconds_per_step")), None)
    if timing is None:
        return (f"Trains for about {minutes:g} min; the number of steps is set from how long the first steps take. "
                f"Preparing the scans and measuring the model's speed come on top. Stop at any time: the model so "
                f"far is kept.")
    per_scan = timing.get("prepare_s", 0.0) / max(1, timing.get("scans") or 1)
    total = ENGINE_STARTUP_S + per_scan * max(1, scans) + minutes * 60 + timing.get("measure_s", 0.0)
    return (f"Trains for about {minutes:g} min: about {max(1, round(minutes * 60 / timing['seconds_per_step']))} "
            f"steps at the {timing['seconds_per_step']:.2f} s per step of the latest fine-tuning here "
            f"({timing.get('device', '?')}); about {format_duration(total)} in all with preparing {max(1, scans)} "
            f"scan(s) and measuring the model's speed. Stop at any time: the model so far is kept.")


def format_duration(seconds: float) -> str:
    return f"{max(1, round(seconds))} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def next_free_folder(model_dir: str, word: str = "refined") -> str:
    """`<model> refined 1`, `<model> refined 2`, ...: the first that does not exist (a new model never replaces
    one)."""
    base = str(model_dir).rstrip("/\\")
    n = 1
    while Path(f"{base} {word} {n}").exists():
        n += 1
    return f"{base} {word} {n}"
