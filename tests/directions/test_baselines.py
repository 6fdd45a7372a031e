"""PCA-of-differences and random baselines."""

from __future__ import annotations

import torch

from steerlit.directions.baselines import pca_diff, random_direction
from steerlit.directions.diffmean import diff_mean


def _pairs_data(n=40, h=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(h, generator=g)
    d /= d.norm()
    base = torch.randn(n, h, generator=g) * 3  # shared content of each twin pair
    pos = base + 2 * d + 0.1 * torch.randn(n, h, generator=g)
    neg = base - 2 * d + 0.1 * torch.randn(n, h, generator=g)
    return pos, neg, d


def test_pca_diff_with_pairs_recovers_the_direction():
    pos, neg, d = _pairs_data()
    v = pca_diff(pos, neg, pairs=[(i, i) for i in range(len(pos))])
    assert abs(float(v.norm()) - 1) < 1e-5
    assert float(v @ d) > 0.99
    assert float(v @ diff_mean(pos, neg)) > 0  # sign agrees with diff-mean
    flipped = pca_diff(neg, pos, pairs=[(i, i) for i in range(len(pos))])
    assert float(flipped @ d) < -0.99


def test_pca_diff_random_pairings_is_seeded():
    pos, neg, d = _pairs_data(n=200, seed=1)
    a, b = pca_diff(pos, neg, seed=3), pca_diff(pos, neg, seed=3)
    assert torch.equal(a, b)
    assert float(a @ diff_mean(pos, neg)) > 0
    c = pca_diff(pos, neg, seed=3, center=True)
    assert c.shape == (16,)


def test_random_direction():
    v = random_direction(32, norm=2.5, seed=4)
    assert v.shape == (32,) and abs(float(v.norm()) - 2.5) < 1e-5
    assert torch.equal(v, random_direction(32, norm=2.5, seed=4))
    assert not torch.equal(v, random_direction(32, norm=2.5, seed=5))
