"""Connected components (pgl_engine/data/components.py): which labels are one piece, and keeping the largest piece of
the chosen labels only."""
import numpy as np

from pgl_engine.data.components import keep_largest_components, largest_share, one_piece_values


def two_blobs(first: int = 6, second: int = 2) -> np.ndarray:
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[2:2 + first, 2:2 + first, 2:2 + first] = 1
    labels[15:15 + second, 15:15 + second, 15:15 + second] = 1
    return labels


def test_largest_share_counts_26_connected_pieces():
    assert largest_share(np.zeros((4, 4, 4), bool)) == 1.0
    diagonal = np.zeros((4, 4, 4), bool)
    diagonal[0, 0, 0] = diagonal[1, 1, 1] = True  # corners touching: one 26-connected piece
    assert largest_share(diagonal) == 1.0
    assert largest_share(two_blobs() == 1) == 216 / 224


def test_one_piece_values_need_every_labelling_case_and_skip_cases_that_do_not_label():
    one, split = two_blobs(second=1), two_blobs(first=3, second=3)  # 216 of 217 voxels; half and half
    everything = np.ones(2, bool)
    assert one_piece_values([one], [everything], [0, 7]) == [7]
    assert one_piece_values([one, split], [everything, everything], [0, 7]) == []
    assert one_piece_values([one, split], [everything, np.array([True, False])], [0, 7]) == [7]  # split: unlabelled
    assert one_piece_values([np.zeros_like(one)], [everything], [0, 7]) == []  # never seen: no evidence


def test_keep_largest_components_of_the_chosen_values_only():
    labels = two_blobs()
    labels[10:12, 2:4, 2:4] = 2
    labels[10:12, 15:17, 15:17] = 2
    all_kept = keep_largest_components(labels.copy())
    assert (all_kept == 1).sum() == 216 and (all_kept == 2).sum() == 8
    only_one = keep_largest_components(labels.copy(), [1])
    assert (only_one == 1).sum() == 216 and (only_one == 2).sum() == 16
    assert np.array_equal(keep_largest_components(labels.copy(), []), labels)


def test_a_removed_piece_takes_the_label_around_it():
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[0:8, 0:8, 0:8] = 2  # the "spleen", touching the array's corner
    labels[10:20, 10:20, 10:20] = 4  # the "left kidney", to the array's far edges
    labels[14:16, 14:16, 14:16] = 2  # a spleen piece inside the kidney
    labels[18:20, 0:2, 0:2] = 2  # and one in background, at the array's edge
    labels[0:2, 18:20, 18:20] = 4  # a kidney piece in background
    kept = keep_largest_components(labels.copy())
    assert (kept[14:16, 14:16, 14:16] == 4).all()  # part of the kidney again, not a hole in it
    assert (kept == 4).sum() == 1000 and (kept == 2).sum() == 512  # the background pieces are background
    # only the chosen labels lose pieces
    kept = keep_largest_components(labels.copy(), [4])
    assert (kept == 2).sum() == 512 + 8 + 8 and (kept[0:2, 18:20, 18:20] == 0).all()
