"""Progress events: one dict per event, shown as a terminal bar or printed as JSON lines.

Events: {"event": "progress", "stage", "step", "total", "loss", "eta_s", ...}, {"event": "warning", "message"},
{"event": "done", ...}, {"event": "cancelled", ...}, {"event": "error", "message"}.
"""
from __future__ import annotations

import json
import math
import sys
import time
from typing import Callable, TextIO

ProgressCallback = Callable[[dict], None]


def _finite(value):
    """JSON has no NaN/inf: report them as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class JsonLinesReporter:
    """Print every event as one JSON object per line (machine-readable, for the Slicer modules)."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout

    def __call__(self, event: dict) -> None:
        self.stream.write(json.dumps({k: _finite(v) for k, v in event.items()}) + "\n")
        self.stream.flush()


class TerminalReporter:
    """tqdm bar per stage on stderr; warnings and the summary as plain lines."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.bar = None
        self.stage = None

    def __call__(self, event: dict) -> None:
        from tqdm import tqdm

        kind = event.get("event")
        if kind == "progress":
            if event.get("stage") != self.stage:
                self.close()
                self.stage = event.get("stage")
                self.bar = tqdm(total=event.get("total"), desc=self.stage, file=self.stream,
                                initial=event.get("step", 1) - 1, dynamic_ncols=True)
            self.bar.n = event.get("step", 0)
            shown = {k: f"{event[k]:.3g}" for k in ("loss", "effective_rank") if isinstance(event.get(k), float)}
            self.bar.set_postfix(shown, refresh=False)
            self.bar.refresh()
        elif kind in ("info", "warning", "done", "cancelled"):
            self.close()
            text = event.get("message") or ", ".join(f"{k}={v}" for k, v in event.items() if k != "event")
            self.stream.write(f"{kind}: {text}\n")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            self.stage = None


class EtaClock:
    """Seconds left from the mean time per step so far."""

    def __init__(self, first_step: int):
        self.start = time.perf_counter()
        self.first_step = first_step

    def eta(self, step: int, total: int) -> float:
        done = step - self.first_step
        if done <= 0:
            return float("nan")
        return (time.perf_counter() - self.start) / done * (total - step)


def emit(callback: ProgressCallback | None, event: str, **fields) -> None:
    if callback is not None:
        callback({"event": event, **fields})
