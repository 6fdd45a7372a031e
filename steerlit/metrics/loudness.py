"""Level metrics: RMS / peak dBFS, clipping, silence, and ITU-R BS.1770 integrated loudness.

dBFS here is relative to a digital full scale of 1.0 with no sine correction: a full-scale sine
has peak 0 dBFS and RMS -3.01 dBFS. Silent audio gets ``floor_db`` (default -120 dB) rather than
``-inf`` so that averages stay finite.

:func:`integrated_loudness` is a real K-weighted, gated BS.1770-4 measurement (mono, LUFS), with
the K-weighting biquads designed for any sample rate from the standard's analogue prototypes.

Shapes: ``audio`` is mono float ``(samples,)``; all functions return Python floats.
"""

from __future__ import annotations

import numpy as np

from steerlit.metrics.audio_input import as_mono, check_sample_rate

FLOOR_DB = -120.0


def _db(power_ratio: float, floor_db: float) -> float:
    if not power_ratio > 0:
        return float(floor_db)
    return float(max(10.0 * np.log10(power_ratio), floor_db))


def rms_dbfs(audio: np.ndarray, *, floor_db: float = FLOOR_DB) -> float:
    """RMS level ``20 log10(sqrt(mean(x^2)))`` in dBFS, at least ``floor_db``; ``nan`` if empty."""
    x = as_mono(audio).astype(np.float64)
    if x.size == 0:
        return float("nan")
    return _db(float(np.mean(x * x)), floor_db)


def peak_dbfs(audio: np.ndarray, *, floor_db: float = FLOOR_DB) -> float:
    """Sample-peak level ``20 log10(max |x|)`` in dBFS, at least ``floor_db``; ``nan`` if empty."""
    x = as_mono(audio)
    if x.size == 0:
        return float("nan")
    peak = float(np.max(np.abs(x)))
    return _db(peak * peak, floor_db)


def clipping_ratio(audio: np.ndarray, threshold: float = 0.999) -> float:
    """Fraction of samples with ``|x| >= threshold`` (in [0, 1]); ``nan`` if empty."""
    x = as_mono(audio)
    if x.size == 0:
        return float("nan")
    return float(np.count_nonzero(np.abs(x) >= threshold) / x.size)


def frame_rms_dbfs(
    audio: np.ndarray,
    sr: int,
    *,
    frame_s: float = 0.05,
    hop_s: float = 0.025,
    floor_db: float = FLOOR_DB,
) -> np.ndarray:
    """Per-frame RMS level in dBFS, ``(frames,)``; frames lie fully inside the clip.

    A clip shorter than one frame is zero-padded to one frame.
    """
    check_sample_rate(sr)
    x = as_mono(audio).astype(np.float64)
    frame = max(1, int(round(frame_s * sr)))
    hop = max(1, int(round(hop_s * sr)))
    if x.size < frame:
        x = np.pad(x, (0, frame - x.size))
    n_frames = 1 + (x.size - frame) // hop
    cs = np.concatenate([[0.0], np.cumsum(x * x)])
    starts = np.arange(n_frames) * hop
    ms = np.maximum((cs[starts + frame] - cs[starts]) / frame, 0.0)
    with np.errstate(divide="ignore"):
        return np.maximum(10.0 * np.log10(ms), floor_db)


SILENCE_FRAME_S, SILENCE_HOP_S = 0.05, 0.025  # the frames silence_ratio reads: 50 ms long, 25 ms apart


def silence_ratio(audio: np.ndarray, sr: int, silence_db: float = -60.0) -> float:
    """Fraction of frames (``SILENCE_FRAME_S`` long, ``SILENCE_HOP_S`` apart) whose RMS is below ``silence_db``
    dBFS.

    Returns a value in [0, 1] (``nan`` for empty audio).
    """
    check_sample_rate(sr)
    if as_mono(audio).size == 0:
        return float("nan")
    levels = frame_rms_dbfs(audio, sr, frame_s=SILENCE_FRAME_S, hop_s=SILENCE_HOP_S)
    return float(np.mean(levels < silence_db))


def _biquad_high_shelf(sr: float, fc: float, gain_db: float, q: float) -> tuple[np.ndarray, np.ndarray]:
    a = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * np.pi * fc / sr
    alpha = np.sin(w0) / (2.0 * q)
    cw, sa = np.cos(w0), 2.0 * np.sqrt(a) * alpha
    b = np.array(
        [
            a * ((a + 1) + (a - 1) * cw + sa),
            -2 * a * ((a - 1) + (a + 1) * cw),
            a * ((a + 1) + (a - 1) * cw - sa),
        ]
    )
    den = np.array([(a + 1) - (a - 1) * cw + sa, 2 * ((a - 1) - (a + 1) * cw), (a + 1) - (a - 1) * cw - sa])
    return b / den[0], den / den[0]


def _biquad_high_pass(sr: float, fc: float, q: float) -> tuple[np.ndarray, np.ndarray]:
    w0 = 2.0 * np.pi * fc / sr
    alpha = np.sin(w0) / (2.0 * q)
    cw = np.cos(w0)
    b = np.array([(1 + cw) / 2, -(1 + cw), (1 + cw) / 2])
    den = np.array([1 + alpha, -2 * cw, 1 - alpha])
    return b / den[0], den / den[0]


def k_weight(audio: np.ndarray, sr: int) -> np.ndarray:
    """Apply the BS.1770 K-weighting (high shelf +4 dB at ~1.5 kHz, then ~38 Hz high-pass).

    Returns float64 ``(samples,)``. The biquads follow the analogue-prototype design used by
    common open implementations (e.g. pyloudnorm), which reproduces the standard's 48 kHz
    coefficients closely and works at any sample rate.
    """
    from scipy.signal import lfilter

    check_sample_rate(sr)
    x = as_mono(audio).astype(np.float64)
    b, a = _biquad_high_shelf(sr, 1500.0, 4.0, 1.0 / np.sqrt(2.0))
    x = lfilter(b, a, x)
    b, a = _biquad_high_pass(sr, 38.0, 0.5)
    return lfilter(b, a, x)


def integrated_loudness(audio: np.ndarray, sr: int) -> float:
    """Integrated loudness in LUFS (ITU-R BS.1770-4, mono, gated).

    400 ms blocks with 75% overlap of the K-weighted signal; absolute gate at -70 LUFS, then a
    relative gate 10 LU below the loudness of the blocks that passed. A 997 Hz full-scale sine
    reads -3.05 LUFS (the standard says -3.01; the filter design costs ~0.05 LU at 48 kHz, ~0.08 at
    16 kHz). Returns ``nan`` for clips shorter than one block or with no block above the absolute
    gate (e.g. silence).
    """
    y = k_weight(audio, sr)
    block = int(round(0.4 * sr))
    hop = int(round(0.1 * sr))
    if y.size < block or block == 0:
        return float("nan")
    n_blocks = 1 + (y.size - block) // hop
    cs = np.concatenate([[0.0], np.cumsum(y * y)])
    starts = np.arange(n_blocks) * hop
    z = np.maximum((cs[starts + block] - cs[starts]) / block, 0.0)
    with np.errstate(divide="ignore"):
        lk = -0.691 + 10.0 * np.log10(z)
    gated = z[lk > -70.0]
    if gated.size == 0:
        return float("nan")
    rel_gate = -0.691 + 10.0 * np.log10(np.mean(gated)) - 10.0
    gated = z[(lk > -70.0) & (lk > rel_gate)]
    return float(-0.691 + 10.0 * np.log10(np.mean(gated)))
