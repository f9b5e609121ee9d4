"""Connected components of label maps: which labels come in one piece, and keeping only each label's largest
piece. Fine-tuning records the labels that are one piece in every labelled case; `pgl segment` then keeps only the
largest piece of those (nnU-Net decides the same post-processing from its training data) and gives the voxels of
the other pieces the label around them."""
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
    """Per label (each of `values`, default all), keep only its largest 26-connected component; in place.

    The voxels of a label's other pieces take the label that most of the voxels touching the piece have
    (background for a piece in background): a piece of spleen predicted inside the left kidney becomes left
    kidney, not a hole in it (nnU-Net sets them to background)."""
    present = [int(v) for v in np.unique(labels) if v != 0]
    pieces = []  # (box around the piece and its neighbours, the piece's voxels in that box)
    for value in present if values is None else [v for v in present if v in set(values)]:
        mask = labels == value
        # label only around the label (large inputs stay fast), one voxel wider to see what touches its pieces
        box = grown(ndimage.find_objects(mask.astype(np.uint8))[0], labels.shape)
        components, count = ndimage.label(mask[box], structure=_CONNECTIVITY)
        if count > 1:
            keep = np.bincount(components.ravel())[1:].argmax() + 1
            for index, piece in enumerate(ndimage.find_objects(components), start=1):
                if index != keep:
                    local = grown(piece, components.shape)
                    around = tuple(slice(b.start + a.start, b.start + a.stop) for a, b in zip(local, box))
                    pieces.append((around, components[local] == index))
    removed = np.zeros(labels.shape, dtype=bool)
    for around, piece in pieces:
        removed[around] |= piece
    fills = [surrounding_label(labels[around], piece, removed[around]) for around, piece in pieces]
    for (around, piece), fill in zip(pieces, fills):
        labels[around][piece] = fill
    return labels


def grown(box: tuple[slice, ...], shape: tuple[int, ...]) -> tuple[slice, ...]:
    """`box` one voxel wider on every side, within an array of `shape`."""
    return tuple(slice(max(0, b.start - 1), min(n, b.stop + 1)) for b, n in zip(box, shape))


def surrounding_label(labels: np.ndarray, piece: np.ndarray, removed: np.ndarray) -> int:
    """The most common label on the voxels touching `piece` (26-connected) that are not themselves removed pieces;
    background where there are none."""
    touching = ndimage.binary_dilation(piece, _CONNECTIVITY) & ~piece & ~removed
    values = labels[touching]
    return int(np.bincount(values).argmax()) if values.size else 0
