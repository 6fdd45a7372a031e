"""Spectral centroid / roll-off on tones and noise with known spectra."""

from __future__ import annotations

import numpy as np
import pytest

from steerlit.metrics.brightness import spectral_centroid, spectral_rolloff

from .synth_audio import lowpass, sine, white_noise

SR = 22050


@pytest.mark.parametrize("freq", [110.0, 440.0, 1000.0, 5000.0])
def test_sine_centroid(freq):
    assert spectral_centroid(sine(freq, SR), SR) == pytest.approx(freq, rel=0.05)
    assert spectral_centroid(sine(freq, SR), SR, power=2.0) == pytest.approx(freq, rel=0.05)


def test_two_tone_centroid_magnitude_and_power_weighted():
    a1, f1, a2, f2 = 0.6, 300.0, 0.2, 3000.0
    mix = sine(f1, SR, amplitude=a1) + sine(f2, SR, amplitude=a2)
    by_magnitude = (a1 * f1 + a2 * f2) / (a1 + a2)  # librosa's convention, the default
    by_power = (a1**2 * f1 + a2**2 * f2) / (a1**2 + a2**2)
    assert spectral_centroid(mix, SR) == pytest.approx(by_magnitude, rel=0.05)
    assert spectral_centroid(mix, SR, power=2.0) == pytest.approx(by_power, rel=0.05)


def test_silence_is_ignored():
    tone = sine(1000.0, SR, 1.0)
    gappy = np.concatenate([tone, np.zeros(SR, np.float32), tone, np.zeros(SR // 2, np.float32)])
    assert spectral_centroid(gappy, SR) == pytest.approx(spectral_centroid(tone, SR), rel=0.01)
    # Quiet noise 80 dB below the tone is gated out (silence_db = -60) even though it is broadband.
    hiss = white_noise(SR, 1.0, seed=3, amplitude=1e-4 * 0.5)
    mixed = np.concatenate([tone, hiss])
    assert spectral_centroid(mixed, SR) == pytest.approx(1000.0, rel=0.02)
    assert spectral_rolloff(gappy, SR) == pytest.approx(spectral_rolloff(tone, SR), rel=0.01)


def test_silent_audio_is_nan():
    assert np.isnan(spectral_centroid(np.zeros(SR, np.float32), SR))
    assert np.isnan(spectral_rolloff(np.zeros(SR, np.float32), SR))
    assert np.isnan(spectral_centroid(np.zeros(0, np.float32), SR))


def test_lowpassed_noise_is_darker():
    noise = white_noise(SR, 2.0)
    dark = lowpass(noise, SR, 1000.0)
    assert spectral_centroid(noise, SR) == pytest.approx(SR / 4, rel=0.05)
    assert spectral_centroid(dark, SR) < 0.3 * spectral_centroid(noise, SR)
    assert spectral_rolloff(dark, SR) < spectral_rolloff(noise, SR)


def test_rolloff_sanity():
    noise = white_noise(SR, 2.0, seed=1)
    # Flat spectrum: 85% of the power lies below 0.85 * Nyquist.
    assert spectral_rolloff(noise, SR) == pytest.approx(0.85 * SR / 2, rel=0.05)
    assert spectral_rolloff(noise, SR, 0.5) == pytest.approx(0.5 * SR / 2, rel=0.05)
    assert spectral_rolloff(sine(2000.0, SR), SR) == pytest.approx(2000.0, rel=0.05)
    # Two tones: the upper one holds 10% of the power, so 85% power roll-off sits at the lower one;
    # it holds 25% of the magnitude (the default, as librosa), so 85% lies only above it.
    mix = sine(500.0, SR, amplitude=0.6) + sine(4000.0, SR, amplitude=0.2)
    assert spectral_rolloff(mix, SR, power=2.0) == pytest.approx(500.0, rel=0.05)
    assert spectral_rolloff(mix, SR, 0.95, power=2.0) == pytest.approx(4000.0, rel=0.05)
    assert spectral_rolloff(mix, SR) == pytest.approx(4000.0, rel=0.05)
    assert spectral_rolloff(mix, SR, 0.6) == pytest.approx(500.0, rel=0.05)
    with pytest.raises(ValueError):
        spectral_rolloff(noise, SR, 1.5)


def test_a_dc_offset_is_no_brightness():
    tone = sine(1000.0, SR, 1.0)
    assert spectral_centroid(tone + 0.3, SR) == pytest.approx(spectral_centroid(tone, SR), rel=1e-3)
    assert spectral_rolloff(tone + 0.3, SR) == pytest.approx(spectral_rolloff(tone, SR), rel=1e-3)
    assert np.isnan(spectral_centroid(np.full(SR, 0.5, np.float32), SR))  # pure DC is silence
