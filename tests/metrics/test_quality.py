"""Frechet distance and the DSP feature distance."""

from __future__ import annotations

import numpy as np
import pytest

from steerlit.metrics.quality import (
    DSP_FEATURE_DIM,
    dsp_features,
    dsp_frechet,
    feature_stats,
    frechet_distance,
)

from .synth_audio import drum_pattern, lowpass, sine

SR = 16000


@pytest.fixture(scope="module")
def clip_set() -> list[np.ndarray]:
    return [
        drum_pattern(bpm, SR, 3.0, seed=i) + sine(220.0 * (i + 1), SR, 3.0, amplitude=0.1)
        for i, bpm in enumerate((90, 110, 130, 150))
    ]


def _gaussian_stats(seed: int = 0, dim: int = 8, n: int = 500):
    feats = np.random.default_rng(seed).standard_normal((n, dim)) @ np.diag(np.linspace(0.5, 2.0, dim))
    return feature_stats(feats)


def test_identical_stats_give_zero():
    mu, sigma = _gaussian_stats()
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-6)


def test_mean_shift_grows():
    mu, sigma = _gaussian_stats()
    values = [frechet_distance(mu, sigma, mu + d, sigma) for d in (0.1, 0.5, 1.0, 2.0)]
    assert all(v > 0 for v in values)
    assert values == sorted(values)
    # Same covariance: the distance is exactly the squared mean difference.
    assert values[2] == pytest.approx(mu.size * 1.0**2, rel=1e-6)


def test_known_covariance_term():
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2 for standard deviations s1, s2.
    assert frechet_distance([0.0], [[4.0]], [1.0], [[1.0]]) == pytest.approx(1.0 + 1.0)
    d = 5
    assert frechet_distance(np.zeros(d), 4 * np.eye(d), np.zeros(d), np.eye(d)) == pytest.approx(d * 1.0)


def test_singular_covariances_are_handled():
    rng = np.random.default_rng(1)
    few = rng.standard_normal((4, 10))  # rank-3 covariance in 10 dims
    mu, sigma = feature_stats(few)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-4)
    rank1 = np.outer(np.arange(10.0), np.arange(10.0))
    value = frechet_distance(np.zeros(10), rank1, np.ones(10), np.zeros((10, 10)))
    assert np.isfinite(value) and value > 0


def test_shape_checks():
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError):
        feature_stats(np.zeros((1, 3)))


def test_dsp_features_shape_and_determinism(clip_set):
    f = dsp_features(clip_set[0], SR)
    assert f.ndim == 2 and f.shape[1] == DSP_FEATURE_DIM == 40
    assert f.shape[0] == 1 + clip_set[0].size // 512
    np.testing.assert_array_equal(f, dsp_features(clip_set[0], SR))
    assert np.isfinite(f).all()
    assert dsp_features(np.zeros(100, np.float32), SR).shape == (1 + 2048 // 512, 40)  # padded to n_fft
    assert dsp_features(clip_set[0], SR, n_bands=8, n_mfcc=13).shape[1] == 21


def test_dsp_frechet_same_and_lowpassed(clip_set):
    assert dsp_frechet(clip_set, clip_set, SR) == pytest.approx(0.0, abs=1e-6)
    mild = [lowpass(c, SR, 4000.0) for c in clip_set]
    strong = [lowpass(c, SR, 1000.0) for c in clip_set]
    d_mild, d_strong = dsp_frechet(clip_set, mild, SR), dsp_frechet(clip_set, strong, SR)
    assert 0 < d_mild < d_strong
    assert dsp_frechet(clip_set, [0.5 * c for c in clip_set], SR) > 0


def test_a_dc_offset_does_not_move_the_features(clip_set):
    clip = clip_set[0]
    shifted = dsp_features(clip + np.float32(0.2), SR)
    np.testing.assert_allclose(shifted, dsp_features(clip, SR), atol=1e-2)
