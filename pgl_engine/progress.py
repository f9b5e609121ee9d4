"""Progress events: one dict per event, shown as a terminal bar or printed as JSON lines.

Events: {"event": "progress", "stage", "step", "total", "loss", "eta_s", ...}, {"event": "warning", "message"},
{"event": "done", ...}, {"event": "cancelled", ...}, {"event": "error", "message"}.
"""
from __future__ import annotations

import errno
import json
import math
import os
import sys
import time
from typing import Callable, TextIO

from .contract import EVENTS

ProgressCallback = Callable[[dict], None]


def _finite(value):
    """JSON has no NaN/inf: report them as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def is_closed_pipe(error: OSError) -> bool:
    """A write to a pipe nobody reads any more: EPIPE on POSIX, EINVAL on Windows."""
    return isinstance(error, BrokenPipeError) or error.errno in (errno.EPIPE, errno.EINVAL)


def discard(stream: TextIO) -> None:
    """Send the stream's file descriptor to the null device, so that what is still buffered, and the interpreter's
    flush at exit, do not raise again on the closed pipe."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, stream.fileno())
        os.close(null)
    except (OSError, ValueError, AttributeError):
        pass  # no file descriptor (a test's StringIO): nothing will flush it at exit


class JsonLinesReporter:
    """Print every event as one JSON object per line (machine-readable, for the Slicer modules).

    When the reader has gone (Slicer quit, so the pipe closed) the events are dropped and `on_closed` is called
    once: the engine takes it as a request to stop, so the run keeps its checkpoint instead of dying on the write.
    """

    def __init__(self, stream: TextIO | None = None, on_closed: Callable[[], None] | None = None):
        self.stream = stream or sys.stdout
        self.on_closed = on_closed
        self.closed = False

    def __call__(self, event: dict) -> None:
        if self.closed:
            return
        try:
            self.stream.write(json.dumps({k: _finite(v) for k, v in event.items()}) + "\n")
            self.stream.flush()
        except OSError as e:
            if not is_closed_pipe(e):
                raise
            self.closed = True
            discard(self.stream)
            if self.on_closed is not None:
                self.on_closed()


class TerminalReporter:
    """tqdm bar per stage on stderr; warnings and the summary as plain lines."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.bar = None
        self.stage = None
        self.shown: dict[str, str] = {}

    def __call__(self, event: dict) -> None:
        from tqdm import tqdm

        kind = event.get("event")
        if kind == "progress":
            if event.get("stage") != self.stage:
                self.close()
                self.stage, self.shown = event.get("stage"), {}
                self.bar = tqdm(total=event.get("total"), desc=self.stage, file=self.stream,
                                initial=event.get("step", 1) - 1, dynamic_ncols=True)
            self.bar.n = event.get("step", 0)
            # the rank is measured every few steps: the bar keeps the last value
            self.shown.update({k: f"{event[k]:.3g}" for k in ("loss", "effective_rank")
                               if isinstance(event.get(k), float)})
            self.bar.set_postfix(self.shown, refresh=False)
            self.bar.refresh()
        elif kind in ("info", "warning", "done", "cancelled"):
            self.close()
            self.stream.write(f"{kind}: {event.get('message') or describe_fields(event)}\n")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            self.stage = None


class LogLinesReporter:
    """Plain lines for a log file (stderr not a terminal: cron, SLURM, `2>run.log`): every info, warning and
    result, and a progress line per stage at its first and last step and at most every `interval_s` between."""

    def __init__(self, stream: TextIO | None = None, interval_s: float = 10.0):
        self.stream = stream or sys.stderr
        self.interval_s = interval_s
        self.last: dict[str, float] = {}

    def __call__(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "progress":
            stage, step, total = event.get("stage", ""), event.get("step", 0), event.get("total") or 0
            now = time.monotonic()
            due = now - self.last.get(stage, -math.inf) >= self.interval_s
            if not (due or step == total or stage not in self.last):
                return
            self.last[stage] = now
            self._write(f"progress: {describe_progress(event)}")
        elif kind in ("info", "warning", "done", "cancelled"):
            self._write(f"{kind}: {event.get('message') or describe_fields(event)}")

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()


def describe_fields(event: dict) -> str:
    """An event without a message as key=value pairs, numbers to 4 significant digits; nested records (shown by
    their own info lines) left out."""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in event.items()
                     if k != "event" and not isinstance(v, dict))


def describe_progress(event: dict) -> str:
    """One progress event as words: 'pretrain step 120/800 (15%), loss 0.523, about 3 min left'."""
    step, total = event.get("step", 0), event.get("total") or 0
    parts = [f"{event.get('stage', '')} {step}/{total}" + (f" ({100 * step / total:.0f}%)" if total else "")]
    if event.get("file"):
        parts.append(str(event["file"]))
    for key in ("loss", "effective_rank", "val_dice"):
        if isinstance(event.get(key), float) and math.isfinite(event[key]):
            parts.append(f"{key.replace('_', ' ')} {event[key]:.3g}")
    eta = event.get("eta_s")
    if isinstance(eta, float) and math.isfinite(eta) and eta >= 1 and step < total:
        parts.append(f"about {eta / 60:.0f} min left" if eta >= 90 else f"about {eta:.0f} s left")
    return ", ".join(parts)


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
    if event not in EVENTS:  # a name the Slicer side would not know (pgl_engine.contract)
        raise ValueError(f"unknown event {event!r}; the events are {EVENTS}")
    if callback is not None:
        callback({"event": event, **fields})
