"""The prior-guided aligner: with average pooling as the 'network', aligned grids of two views agree."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import smooth_volume

from pgl_engine.pretraining.aligner import align_pair, overlap_boxes
from pgl_engine.pretraining.losses import local_consistency_loss
from pgl_engine.pretraining.views import ViewPrior, cut_view, sample_view_pair

PATCH = (16, 16, 16)


def prior_batch(pairs):
    """Collate (ViewPrior a, ViewPrior b) pairs the way the data loader does."""
    return {"lo_a": torch.tensor([a.lo for a, _ in pairs], dtype=torch.float32),
            "hi_a": torch.tensor([a.hi for a, _ in pairs], dtype=torch.float32),
            "flip_a": torch.tensor([a.flips for a, _ in pairs]),
            "lo_b": torch.tensor([b.lo for _, b in pairs], dtype=torch.float32),
            "hi_b": torch.tensor([b.hi for _, b in pairs], dtype=torch.float32),
            "flip_b": torch.tensor([b.flips for _, b in pairs])}


def pooled_views(volume, pairs):
    """'Network' = 2x average pooling, so features sit on a coarser grid than the views."""
    fa = torch.stack([F.avg_pool3d(cut_view(volume, a, PATCH)[None], 2)[0] for a, _ in pairs])
    fb = torch.stack([F.avg_pool3d(cut_view(volume, b, PATCH)[None], 2)[0] for _, b in pairs])
    return fa, fb


def relative_error(x, y, volume):
    return ((x - y).pow(2).flatten(1).mean(1).sqrt() / float(volume.std())).numpy()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aligned_grids_agree_and_ignoring_flips_does_not(seed):
    volume = smooth_volume()
    rng = np.random.default_rng(seed)
    pairs = [sample_view_pair(volume.shape, PATCH, (1.1, 1.4), 0.1, rng) for _ in range(16)]
    fa, fb = pooled_views(volume, pairs)
    a, b, valid = align_pair(fa, fb, prior_batch(pairs), grid_size=8)
    assert bool(valid.all())
    errors = relative_error(a, b, volume)
    assert errors.max() < 0.15, errors
    flipped = np.array([any(p.flips) or any(q.flips) for p, q in pairs])
    assert flipped.sum() >= 8
    a_nf, b_nf, _ = align_pair(fa, fb, prior_batch(pairs), grid_size=8, use_flip_prior=False)
    ignored = relative_error(a_nf, b_nf, volume)[flipped]
    assert ignored.mean() > 5 * errors.mean(), (ignored.mean(), errors.mean())


def test_boxes_at_the_volume_border_align():
    volume = smooth_volume((24, 24, 24))
    # a covers the whole volume, b the far corner, flipped on two axes
    a = ViewPrior((0, 0, 0), (24, 24, 24), (False, False, False))
    b = ViewPrior((6, 6, 6), (24, 24, 24), (True, False, True))
    fa, fb = pooled_views(volume, [(a, b)])
    aligned_a, aligned_b, valid = align_pair(fa, fb, prior_batch([(a, b)]), grid_size=8)
    assert bool(valid.all())
    assert relative_error(aligned_a, aligned_b, volume).max() < 0.15


def test_no_overlap_is_reported_and_ignored_by_the_loss():
    lo_a, hi_a = torch.tensor([[0.0, 0, 0], [0, 0, 0]]), torch.tensor([[10.0, 10, 10], [10, 10, 10]])
    lo_b, hi_b = torch.tensor([[10.0, 0, 0], [5, 5, 5]]), torch.tensor([[20.0, 10, 10], [15, 15, 15]])
    lo, hi, valid = overlap_boxes(lo_a, hi_a, lo_b, hi_b)
    assert valid.tolist() == [False, True]
    assert hi[1].tolist() == [10, 10, 10] and lo[1].tolist() == [5, 5, 5]
    p = torch.randn(2, 4, 3, 3, 3)
    z = p.clone()
    z[0] = -p[0]  # the non-overlapping pair disagrees completely; it must not count
    assert float(local_consistency_loss(p, z, p, z, valid)) < 1e-5
    assert float(local_consistency_loss(p, z, p, z)) > 1.0


def test_identical_views_give_zero_local_loss():
    p = torch.randn(3, 5, 4, 4, 4)
    assert float(local_consistency_loss(p, p, p, p)) == pytest.approx(0.0, abs=1e-5)
