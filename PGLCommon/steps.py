"""Long GUI-thread work done a slice at a time, so Slicer's event loop never waits long.

In Slicer a Python worker thread does not help (PythonQt holds the GIL while the event loop runs), so work that
must touch MRML or numpy on the main thread is written as a generator that yields between short pieces (a slab of
slices, one segment), and whoever polls it (a QTimer, a wait loop) advances it for a few tens of milliseconds at a
time. Plain Python: no Qt here.
"""
from __future__ import annotations

import time
from typing import Any, Generator, Iterator

SLICE_S = 0.04  # work per advance; the event loop runs between advances
SLAB_VOXELS = 1 << 21  # voxels per piece of a whole-volume pass (a few ms of numpy each)

StepGenerator = Generator[None, None, Any]


class Steps:
    """A generator run to its end a slice at a time; `value` is what it returned."""

    def __init__(self, generator: StepGenerator):
        self.generator = generator
        self.done = False
        self.value: Any = None

    def advance(self, budget_s: float = SLICE_S) -> bool:
        """Run pieces until `budget_s` has passed or the generator has ended (True). Exceptions pass through."""
        end = time.perf_counter() + budget_s
        while not self.done:
            try:
                next(self.generator)
            except StopIteration as stop:
                self.done, self.value = True, stop.value
                break
            if time.perf_counter() >= end:
                break
        return self.done

    def close(self) -> None:
        """Abandon the work (the generator's `finally` blocks run)."""
        if not self.done:
            self.generator.close()
            self.done = True


def run_all(generator: StepGenerator) -> Any:
    """Run step work at once (scripts, tests) and return its value."""
    steps = Steps(generator)
    while not steps.advance(3600.0):
        pass
    return steps.value


def slabs(depth: int, plane_voxels: int, voxels: int = SLAB_VOXELS) -> Iterator[tuple[int, int]]:
    """(start, stop) ranges over the first axis of a (depth, ...) array, about `voxels` voxels each."""
    step = max(1, voxels // max(1, plane_voxels))
    for start in range(0, depth, step):
        yield start, min(depth, start + step)
