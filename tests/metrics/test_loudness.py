"""Level metrics on sines, clipped and half-silent signals."""

from __future__ import annotations

import numpy as np
import pytest

from steerlit.metrics.loudness import (
    clipping_ratio,
    frame_rms_dbfs,
    integrated_loudness,
    peak_dbfs,
    rms_dbfs,
    silence_ratio,
)

from .synth_audio import sine, white_noise

SR = 16000


@pytest.mark.parametrize("amp", [1.0, 0.5, 0.1, 0.01])
def test_sine_rms_and_peak(amp):
    x = sine(440.0, SR, 2.0, amplitude=amp)
    assert rms_dbfs(x) == pytest.approx(20 * np.log10(amp / np.sqrt(2)), abs=0.1)
    assert peak_dbfs(x) == pytest.approx(20 * np.log10(amp), abs=0.1)


def test_silence_floor_and_empty():
    assert rms_dbfs(np.zeros(100)) == -120.0
    assert peak_dbfs(np.zeros(100)) == -120.0
    assert rms_dbfs(np.zeros(100), floor_db=-90.0) == -90.0
    assert np.isnan(rms_dbfs(np.zeros(0)))
    assert np.isnan(clipping_ratio(np.zeros(0)))


def test_clipping_ratio():
    x = sine(100.0, SR, 1.0, amplitude=2.0)
    clipped = np.clip(x, -1.0, 1.0)
    # |2 sin| >= 1 wherever |sin| >= 1/2: two thirds of the period.
    assert clipping_ratio(clipped) == pytest.approx(2.0 / 3.0, abs=0.01)
    assert clipping_ratio(sine(100.0, SR, 1.0, amplitude=0.5)) == 0.0


def test_silence_ratio():
    tone = sine(440.0, SR, 2.0, amplitude=0.5)
    half = np.concatenate([tone, np.zeros_like(tone)])
    assert silence_ratio(half, SR) == pytest.approx(0.5, abs=0.02)
    assert silence_ratio(tone, SR) == 0.0
    assert silence_ratio(np.zeros(SR), SR) == 1.0
    quiet = sine(440.0, SR, 1.0, amplitude=1e-4)  # -83 dBFS RMS
    assert silence_ratio(quiet, SR) == 1.0
    assert silence_ratio(quiet, SR, silence_db=-90.0) == 0.0
    assert frame_rms_dbfs(np.zeros(10), SR).shape == (1,)


def test_integrated_loudness():
    sr = 48000
    x = sine(997.0, sr, 3.0, amplitude=1.0)
    assert integrated_loudness(x, sr) == pytest.approx(-3.01, abs=0.1)
    assert integrated_loudness(0.1 * x, sr) == pytest.approx(integrated_loudness(x, sr) - 20.0, abs=1e-6)
    # Gating: appended silence is ignored (only the few blocks straddling the tone's end count).
    padded = np.concatenate([x, np.zeros(3 * sr, np.float32)])
    assert integrated_loudness(padded, sr) == pytest.approx(integrated_loudness(x, sr), abs=0.3)
    assert integrated_loudness(sine(997.0, SR, 3.0), SR) == pytest.approx(
        integrated_loudness(0.5 * x, sr), abs=0.1
    )
    # K-weighting: 100 Hz is attenuated relative to 1 kHz, noise is finite.
    assert integrated_loudness(sine(100.0, sr, 2.0, 1.0), sr) < integrated_loudness(x, sr) - 1.0
    assert np.isfinite(integrated_loudness(white_noise(SR, 1.0), SR))
    assert np.isnan(integrated_loudness(np.zeros(sr), sr))
    assert np.isnan(integrated_loudness(x[: sr // 10], sr))
