"""The two-view sampler: overlap constraint, crop sizes, and priors that match the crops cut."""
import numpy as np
import pytest
import torch

from pgl_engine.pretraining.views import ViewPrior, cut_view, overlap_fraction, pad_to, sample_view_pair


@pytest.mark.parametrize("shape", [(40, 36, 30), (24, 24, 24), (90, 20, 22)])
def test_overlap_and_sizes_hold(shape):
    rng = np.random.default_rng(0)
    patch = (16, 16, 16)
    for _ in range(200):
        a, b = sample_view_pair(shape, patch, (1.1, 1.4), 0.1, rng)
        for v in (a, b):
            assert all(0 <= lo < hi <= s for lo, hi, s in zip(v.lo, v.hi, shape))
            assert all(size <= min(round(p * 1.4), s) for size, p, s in zip(v.size, patch, shape))
            assert all(size >= min(round(p * 1.1), s) for size, p, s in zip(v.size, patch, shape))
        assert overlap_fraction(a, b) >= 0.1


def test_priors_match_the_crops_cut():
    shape = (30, 28, 26)
    # each voxel stores its own coordinates, so a view tells exactly which voxels it came from
    coords = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")).astype(np.float32)
    rng = np.random.default_rng(1)
    for _ in range(20):
        a, _ = sample_view_pair(shape, (12, 12, 12), (1.0, 1.0), 0.1, rng)  # no resize: exact comparison
        views = [cut_view(coords[axis], a, (12, 12, 12))[0] for axis in range(3)]
        for axis, view in enumerate(views):
            expected = torch.arange(a.lo[axis], a.hi[axis], dtype=torch.float32)
            if a.flips[axis]:
                expected = expected.flip(0)
            line = view.permute(*([axis] + [i for i in range(3) if i != axis]))[:, 0, 0]
            assert torch.equal(line, expected)


def test_resized_view_keeps_the_box_content():
    volume = np.random.default_rng(2).random((40, 40, 40)).astype(np.float32)
    prior = ViewPrior((3, 5, 7), (25, 27, 29), (True, False, True))
    view = cut_view(volume, prior, (16, 16, 16))
    assert view.shape == (1, 16, 16, 16)
    assert float(view.mean()) == pytest.approx(float(volume[3:25, 5:27, 7:29].mean()), abs=0.01)


def test_small_scans_are_padded():
    padded = pad_to(np.ones((10, 30, 5), np.float32), (23, 23, 23))
    assert padded.shape == (23, 30, 23)
    assert padded[0, 0, 0] == 0 and padded[11, 0, 11] == 1


@pytest.mark.parametrize("flip_axes", [(), (2,), (0, 1)])
def test_flips_only_on_the_chosen_axes_and_crops_unchanged(flip_axes):
    seen = set()
    for seed in range(60):
        a, b = sample_view_pair((40, 40, 30), (16, 16, 16), (1.1, 1.4), 0.1, np.random.default_rng(seed),
                                flip_axes=flip_axes)
        a0, b0 = sample_view_pair((40, 40, 30), (16, 16, 16), (1.1, 1.4), 0.1, np.random.default_rng(seed))
        assert (a.lo, a.hi, b.lo, b.hi) == (a0.lo, a0.hi, b0.lo, b0.hi)  # the same crops whatever flips
        for v in (a, b):
            seen.update(axis for axis, f in enumerate(v.flips) if f)
    assert seen == set(flip_axes)


def test_intensity_strength_scales_the_jitter():
    from pgl_engine.data.augment import augment_intensity

    x = torch.linspace(0.1, 0.9, 16 ** 3).reshape(1, 16, 16, 16)

    def mean_shift(strength):
        return np.mean([abs(float(augment_intensity(x.clone(), np.random.default_rng(s), strength=strength).mean()
                                  - x.mean())) for s in range(40)])

    none, mild, full = mean_shift(0.0), mean_shift(0.3), mean_shift(1.0)
    assert none < 0.01  # only noise and blur remain, which keep the mean
    assert none < mild < full
    assert full > 0.03


def test_bias_field_is_smooth_bounded_and_varies_across_the_view():
    from pgl_engine.data.augment import augment_intensity, random_bias_field

    fields = [random_bias_field((24, 24, 16), np.random.default_rng(s), 0.2) for s in range(20)]
    for f in fields:
        assert f.shape == (24, 24, 16)
        assert float(f.min()) >= np.exp(-0.2) - 1e-6 and float(f.max()) <= np.exp(0.2) + 1e-6
        steps = [float(f.diff(dim=d).abs().max()) for d in range(3)]
        assert max(steps) < 0.05  # neighbouring voxels get nearly the same factor
    spreads = [float(f.max() / f.min()) for f in fields]
    assert max(spreads) > 1.1  # one part of a view is brighter than another
    assert not torch.equal(fields[0], fields[1])
    # two views of one scan, same other draws: with the field their intensities disagree locally
    x = torch.full((1, 24, 24, 16), 0.8)
    plain = augment_intensity(x.clone(), np.random.default_rng(5))
    biased = augment_intensity(x.clone(), np.random.default_rng(5), bias_field=0.2)
    assert float(plain.std()) < 0.02 < float(biased.std())
