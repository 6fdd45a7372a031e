"""Kernel (MMD) distance: unbiased, within its noise floor for one set split in two, growing with degradation."""

from __future__ import annotations

import numpy as np
import pytest

from steerlit.metrics.kernel_distance import (
    KernelDistance,
    clip_embeddings,
    kernel_distance,
    kernel_distance_embeddings,
    loudness_normalise,
    median_bandwidth,
    mmd2_unbiased,
    split_noise_floor,
)
from steerlit.metrics.loudness import integrated_loudness
from steerlit.testbed import synth

from .synth_audio import lowpass

SR = synth.SAMPLE_RATE


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    """24 testbed clips (2 s, 16 kHz): random tempo, brightness, instrument and pattern."""
    return [synth.render(synth.spec_for_index(i, base_seed=3), duration_s=2.0) for i in range(24)]


@pytest.fixture(scope="module")
def reference(clips):
    return clip_embeddings(clips[:12], SR)


def add_noise(y: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(y.size)
    return (y + noise * np.sqrt(np.mean(y**2) / 10 ** (snr_db / 10))).astype(np.float32)


def test_two_halves_of_one_set_stay_within_the_noise_floor(clips, reference):
    d = kernel_distance_embeddings(clip_embeddings(clips[12:], SR), reference, seed=0)
    assert isinstance(d, KernelDistance)
    assert d.within_noise, d
    assert d.n_steered == d.n_reference == 12 and d.kernel == "gaussian" and d.n_splits == 200
    assert d.bandwidth == pytest.approx(median_bandwidth(reference))
    assert abs(d.noise_floor) < d.noise_floor_high


@pytest.mark.parametrize(
    "degrade",
    [
        pytest.param(lambda y, i, level: lowpass(y, SR, level), id="low-pass"),
        pytest.param(lambda y, i, level: add_noise(y, level, i), id="added-noise"),
    ],
)
def test_grows_monotonically_with_degradation(clips, reference, degrade, request):
    levels = (2000.0, 1000.0, 500.0, 250.0) if "low-pass" in request.node.name else (20.0, 10.0, 0.0, -10.0)
    values = []
    for level in levels:
        steered = clip_embeddings([degrade(y, i, level) for i, y in enumerate(clips[12:])], SR)
        values.append(kernel_distance_embeddings(steered, reference))
    v = [d.value for d in values]
    assert np.all(np.diff(v) > 0), v
    assert not values[-1].within_noise and values[-1].value > 3 * values[-1].noise_floor_high, values[-1]


def test_a_gain_change_does_not_move_it(clips):
    quiet = [0.5 * y for y in clips[:6]]  # -6 dB
    plain = kernel_distance(clips[:6], clips[6:12], SR)
    assert kernel_distance(quiet, clips[6:12], SR).value == pytest.approx(plain.value, abs=1e-9)
    assert integrated_loudness(loudness_normalise(clips[0], SR), SR) == pytest.approx(-23.0, abs=0.01)
    silent = np.zeros(SR, np.float32)
    np.testing.assert_array_equal(loudness_normalise(silent, SR), silent)
    raw = kernel_distance(quiet, clips[6:12], SR, target_lufs=None)
    assert raw.value > plain.value


def test_unbiased_on_two_samples_of_one_distribution():
    rng = np.random.default_rng(0)
    values = [mmd2_unbiased(rng.normal(size=(8, 5)), rng.normal(size=(8, 5)), 3.0) for _ in range(400)]
    assert abs(np.mean(values)) < 3 * np.std(values) / np.sqrt(len(values))
    assert min(values) < 0  # unbiased, hence sometimes negative
    shifted = [mmd2_unbiased(rng.normal(size=(8, 5)) + 1.5, rng.normal(size=(8, 5)), 3.0) for _ in range(50)]
    assert np.mean(shifted) > 5 * np.std(values) / np.sqrt(len(values))


def test_noise_floor_is_vectorised_and_seeded():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(10, 4))
    splits = split_noise_floor(ref, 2.0, n_splits=50, seed=3)
    assert splits.shape == (50,)
    np.testing.assert_array_equal(splits, split_noise_floor(ref, 2.0, n_splits=50, seed=3))
    order = np.argsort(np.random.default_rng(3).random((50, 10)), axis=1)  # the same split, by hand
    assert splits[0] == pytest.approx(mmd2_unbiased(ref[order[0, :5]], ref[order[0, 5:10]], 2.0))


def test_small_or_bad_inputs():
    rng = np.random.default_rng(2)
    d = kernel_distance_embeddings(rng.normal(size=(3, 4)), rng.normal(size=(3, 4)))
    assert np.isfinite(d.value) and np.isnan(d.noise_floor)
    with pytest.raises(ValueError, match="clips >= 2"):
        mmd2_unbiased(rng.normal(size=(1, 4)), rng.normal(size=(3, 4)), 1.0)
    with pytest.raises(ValueError, match="NaN"):
        mmd2_unbiased(np.full((3, 4), np.nan), rng.normal(size=(3, 4)), 1.0)
    with pytest.raises(ValueError, match="at least 4"):
        split_noise_floor(rng.normal(size=(3, 4)), 1.0)
    with pytest.raises(ValueError, match="bandwidth"):
        mmd2_unbiased(rng.normal(size=(3, 4)), rng.normal(size=(3, 4)), 0.0)
