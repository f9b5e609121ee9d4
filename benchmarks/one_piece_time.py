"""What `pgl segment`'s one-piece step costs on a CT-sized label map: `keep_largest_components` on a 512 x 512 x 200
map with four organ-sized labels, each with a few islands to remove (the shapes are boxes; the cost is the
labelling of each label's bounding box).

Usage: python benchmarks/one_piece_time.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from pgl_engine.data.components import keep_largest_components

ORGANS = {1: (slice(40, 140), slice(100, 300), slice(80, 300)), 2: (slice(50, 110), slice(150, 260), slice(330, 420)),
          3: (slice(90, 140), slice(300, 370), slice(150, 220)), 4: (slice(90, 140), slice(300, 370), slice(300, 370))}


def label_map(seed: int = 0) -> np.ndarray:
    labels = np.zeros((200, 512, 512), np.uint8)
    rng = np.random.default_rng(seed)
    for value, box in ORGANS.items():
        labels[box] = value
        for _ in range(5):  # islands
            z, y, x = rng.integers(0, 190), rng.integers(0, 500), rng.integers(0, 500)
            labels[z:z + 3, y:y + 3, x:x + 3] = value
    return labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    labels, times = label_map(), []
    for _ in range(args.repeats):
        copy = labels.copy()
        started = time.perf_counter()
        keep_largest_components(copy, list(ORGANS))
        times.append(time.perf_counter() - started)
    print(f"keep_largest_components, 512x512x200, {len(ORGANS)} labels: median {float(np.median(times)):.2f} s "
          f"(runs {[round(t, 2) for t in times]})")


if __name__ == "__main__":
    main()
