"""Tempo estimation on click tracks and drum patterns of known BPM (real librosa)."""

from __future__ import annotations

import numpy as np
import pytest

from steerlit.metrics.tempo import (
    TempoEstimate,
    estimate_tempo,
    fold_into_range,
    tempo_accuracy1,
    tempo_accuracy2,
)

from .synth_audio import click_track, drum_pattern, sine

SR = 22050
BPMS = (60, 75, 90, 100, 110, 120, 135, 150, 165, 180)


@pytest.fixture(scope="module")
def click_estimates() -> dict[int, TempoEstimate]:
    return {bpm: estimate_tempo(click_track(bpm, SR, 8.0, seed=bpm), SR) for bpm in BPMS}


@pytest.fixture(scope="module")
def drum_estimates() -> dict[int, TempoEstimate]:
    return {bpm: estimate_tempo(drum_pattern(bpm, SR, 8.0, seed=bpm), SR) for bpm in BPMS}


def test_click_tracks_accuracy(click_estimates):
    est = np.array([click_estimates[b].bpm for b in BPMS])
    target = np.array(BPMS, dtype=float)
    assert tempo_accuracy2(est, target).mean() >= 0.9, dict(zip(BPMS, est))
    # Isolated clicks have one metrical level: even octave-strict accuracy is high.
    assert tempo_accuracy1(est, target).mean() >= 0.8, dict(zip(BPMS, est))


def test_drum_patterns_accuracy2(drum_estimates):
    est = np.array([drum_estimates[b].bpm for b in BPMS])
    # Hats on eighth notes and kick on half notes make octave errors expected here; Accuracy2 forgives them.
    assert tempo_accuracy2(est, np.array(BPMS, dtype=float)).mean() >= 0.9, dict(zip(BPMS, est))
    assert np.all((est >= 40) & (est <= 240))


def test_click_onset_rate_and_beats(click_estimates):
    for bpm in (60, 120, 180):
        e = click_estimates[bpm]
        assert e.onset_rate == pytest.approx(bpm / 60.0, rel=0.1)
        assert e.num_beats >= 4
        assert np.median(np.diff(e.beat_times)) == pytest.approx(60.0 / bpm, rel=0.05)
        assert e.beat_times.min() >= 0.0 and e.beat_times.max() <= 8.0


@pytest.mark.parametrize("rate", [0.8, 1.25])
def test_time_stretch_ratio(rate):
    import librosa

    base = drum_pattern(120, SR, 8.0, seed=1)
    stretched = librosa.effects.time_stretch(base, rate=rate)
    ratio = estimate_tempo(stretched, SR).bpm / estimate_tempo(base, SR).bpm
    assert ratio == pytest.approx(rate, rel=0.05)


def test_silent_short_and_flat_audio_do_not_crash():
    for audio in (np.zeros(SR * 4, np.float32), np.zeros(0, np.float32), click_track(120, SR, 0.5)):
        e = estimate_tempo(audio, SR)
        assert np.isnan(e.bpm) and e.num_beats == 0
    e = estimate_tempo(np.zeros(SR * 4, np.float32), SR)
    assert e.onset_rate == 0.0
    steady = estimate_tempo(sine(440.0, SR, 4.0), SR)  # no onsets to speak of: any result, no crash
    assert np.isnan(steady.bpm) or 40 <= steady.bpm <= 240


def test_other_sample_rate_and_channels():
    audio = click_track(100, 16000, 6.0)
    e = estimate_tempo(np.stack([audio, audio]), 16000)  # (channels, samples) is averaged
    assert tempo_accuracy1(e.bpm, 100.0)


def test_range_folding_and_validation():
    assert fold_into_range(30.0, 40.0, 240.0) == 60.0
    assert fold_into_range(300.0, 40.0, 240.0) == 150.0
    assert np.isnan(fold_into_range(float("nan"), 40.0, 240.0))
    with pytest.raises(ValueError):
        estimate_tempo(click_track(120, SR, 2.0), SR, min_bpm=200.0, max_bpm=100.0)
    with pytest.raises(ValueError, match="std_bpm"):
        estimate_tempo(click_track(120, SR, 2.0), SR, std_bpm=0.0)


def test_accuracy_functions():
    assert tempo_accuracy1(103.0, 100.0) is True
    assert tempo_accuracy1(105.0, 100.0) is False
    assert tempo_accuracy1(200.0, 100.0) is False
    for factor in (2.0, 3.0, 0.5, 1.0 / 3.0):
        assert tempo_accuracy2(100.0 * factor * 1.03, 100.0)
    assert not tempo_accuracy2(150.0, 100.0)
    assert not tempo_accuracy2(float("nan"), 100.0)
    assert not tempo_accuracy1(100.0, float("nan"))
    hits = tempo_accuracy2(np.array([100.0, 201.0, 150.0, np.nan]), 100.0)
    np.testing.assert_array_equal(hits, [True, True, False, False])
    np.testing.assert_array_equal(tempo_accuracy1([99.0, 120.0], [100.0, 120.0], tol=0.001), [False, True])
