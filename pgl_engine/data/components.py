"""Connected components of label maps: which labels come in one piece, and keeping only each label's largest
piece. Fine-tuning records the labels that are one piece in every labelled case; `pgl segment` then keeps only the
largest piece of those (nnU-Net decides the same post-processing from its training data)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

# a label is one piece in a case when its largest 26-connected component holds at least this share of its voxels
# (resampling a drawn label to the model's grid may leave a few voxels apart)
ONE_PIECE_SHARE = 0.9
_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


def largest_share(mask: np.ndarray) -> float:
    """The share of `mask`'s voxels in its largest 26-connected component (1.0 for an empty mask)."""
    components, count = ndimage.label(mask, structure=_CONNECTIVITY)
    if count <= 1:
        return 1.0
    sizes = np.bincount(components.ravel())[1:]
    return float(sizes.max() / sizes.sum())


def one_piece_values(label_maps: list[np.ndarray], labelled: list[np.ndarray], values: list[int]) -> list[int]:
    """The values (class k stands for values[k]) that are one piece in every map that holds them; `labelled[i][k]`
    says whether map i labels class k at all (partial labels)."""
    one_piece = []
    for k, value in enumerate(values):
        if k == 0:
            continue
        holding = [labels == k for labels, marks in zip(label_maps, labelled) if marks[k]]
        holding = [mask for mask in holding if mask.any()]
        if holding and all(largest_share(mask) >= ONE_PIECE_SHARE for mask in holding):
            one_piece.append(int(value))
    return one_piece


def keep_largest_components(labels: np.ndarray, values=None) -> np.ndarray:
    """Per label (each of `values`, default all), keep only its largest 26-connected component; in place."""
    present = [int(v) for v in np.unique(labels) if v != 0]
    for value in present if values is None else [v for v in present if v in set(values)]:
        mask = labels == value
        box = ndimage.find_objects(mask.astype(np.uint8))[0]  # label only where the label is: large inputs stay fast
        components, count = ndimage.label(mask[box], structure=_CONNECTIVITY)
        if count > 1:
            sizes = np.bincount(components.ravel())
            sizes[0] = 0
            labels[box][mask[box] & (components != sizes.argmax())] = 0
    return labels
