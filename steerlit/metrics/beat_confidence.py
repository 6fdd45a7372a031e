"""Beat confidence: how strongly a beat-activation curve says "there is a beat", and the per-clip result type.

Used by every estimator of :mod:`steerlit.metrics.beat_trackers` (the formula and its thresholds are documented
there). Shapes: activations are ``(frames,)`` at ``fps`` frames per second.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

# The ``metrics.tempo.estimator`` choice (declared here, the lowest beat module, so that metrics.settings can
# import it without a cycle); the estimators are in steerlit.metrics.beat_trackers. ``auto``: madmom where the
# ``beat`` extra is installed, else librosa (with a warning naming the extra).
TempoEstimator = Literal["auto", "librosa", "madmom", "beat_this"]
TEMPO_ESTIMATORS: tuple[str, ...] = get_args(TempoEstimator)

# Beat periods the confidence looks at: 0.2-2 s. Wider than any tempo range, so an octave-folded tempo keeps its
# confidence.
BEAT_RANGE_BPM = (30.0, 300.0)


class EstimatorUnavailableError(RuntimeError):
    """A tempo estimator cannot run here: its optional package or its local weights are missing."""


@dataclass(frozen=True)
class BeatEstimate:
    """One clip's tempo.

    Attributes:
        bpm: tempo in beats per minute; ``nan`` when there is no beat (confidence below the estimator's
            ``min_confidence``), for silence (peak below -100 dBFS) and for clips under 1 s.
        confidence: beat confidence in [0, 1] (see the module docstring); 0 for silence.
        raw_bpm: the estimator's tempo before the confidence gate (``nan`` where it has none).
        estimator: which estimator measured it.
    """

    bpm: float
    confidence: float
    raw_bpm: float
    estimator: str


def _lag_range(fps: float, n: int, min_bpm: float, max_bpm: float) -> tuple[int, int]:
    lo = max(1, int(np.floor(fps * 60.0 / max_bpm)))
    hi = min(int(np.ceil(fps * 60.0 / min_bpm)), n // 2)
    return lo, hi


def beat_periodicity(
    activation, fps: float, *, min_bpm: float = BEAT_RANGE_BPM[0], max_bpm: float = BEAT_RANGE_BPM[1]
) -> float:
    """Highest normalised autocorrelation of ``activation - mean`` at a beat period, clipped to [0, 1].

    Lags from ``60 / max_bpm`` to ``60 / min_bpm`` seconds (at most half the clip); the autocorrelation at lag L is
    averaged over the ``n - L`` overlapping frames and divided by the zero-lag value. 0 for a flat curve.
    """
    a = np.asarray(activation, dtype=np.float64).ravel()
    a = a - a.mean() if a.size else a
    lo, hi = _lag_range(fps, a.size, min_bpm, max_bpm)
    if a.size < 4 or hi < lo or not np.any(a):
        return 0.0
    spectrum = np.fft.rfft(a, 2 * a.size)
    ac = np.fft.irfft(np.abs(spectrum) ** 2)[: a.size] / (a.size - np.arange(a.size))
    return float(np.clip(ac[lo : hi + 1].max() / ac[0], 0.0, 1.0))


def beat_salience(
    activation, fps: float, *, min_bpm: float = BEAT_RANGE_BPM[0], max_bpm: float = BEAT_RANGE_BPM[1]
) -> float:
    """Median of the ``k`` highest peaks of ``activation`` (at least ``60 / max_bpm`` s apart), in its units.

    ``k`` is the number of beats a ``min_bpm`` tempo gives over the clip (at least 1); missing peaks count as 0.
    """
    from scipy.signal import find_peaks

    a = np.asarray(activation, dtype=np.float64).ravel()
    if a.size == 0:
        return 0.0
    k = max(1, int(a.size / fps * min_bpm / 60.0))
    peaks, _ = find_peaks(a, distance=max(1, int(fps * 60.0 / max_bpm)))
    top = np.sort(a[peaks])[::-1][:k]
    return float(np.median(np.pad(top, (0, k - top.size))))


def beat_confidence(
    activation,
    fps: float,
    *,
    salience_ref: float,
    min_bpm: float = BEAT_RANGE_BPM[0],
    max_bpm: float = BEAT_RANGE_BPM[1],
) -> float:
    """``beat_periodicity * min(1, beat_salience / salience_ref) ** 2``, in [0, 1].

    Squared, so that a curve whose peaks are well below a beat's (noise through a beat network, the beating of a
    held chord's partials in an onset envelope) counts little however periodic it is.
    """
    if not salience_ref > 0:
        raise ValueError(
            f"need salience_ref > 0 (a beat peak's height in the activation's units), got {salience_ref}"
        )
    periodicity = beat_periodicity(activation, fps, min_bpm=min_bpm, max_bpm=max_bpm)
    salience = beat_salience(activation, fps, min_bpm=min_bpm, max_bpm=max_bpm)
    return float(periodicity * min(1.0, salience / salience_ref) ** 2)


def gated_estimate(name: str, raw_bpm: float, confidence: float, min_confidence: float) -> BeatEstimate:
    """The estimate with ``bpm = raw_bpm`` if ``confidence >= min_confidence``, else ``bpm = nan``."""
    keep = np.isfinite(raw_bpm) and confidence >= min_confidence
    return BeatEstimate(float(raw_bpm) if keep else float("nan"), float(confidence), float(raw_bpm), name)


def silent_estimate(name: str) -> BeatEstimate:
    """The estimate of a clip with nothing to measure (silent or too short): no BPM, confidence 0."""
    return BeatEstimate(float("nan"), 0.0, float("nan"), name)
