"""Tempo (BPM), beat times and onset rate with librosa, plus MIREX-style tempo accuracy.

The estimator is librosa's autocorrelation tempogram with a log-normal prior centred on
``start_bpm``; like every such estimator it makes octave errors (x2, x1/2, sometimes x3 / x1/3)
on material whose metrical levels are ambiguous. Report :func:`tempo_accuracy2` (octave aware)
next to :func:`tempo_accuracy1`, and prefer relative change over absolute BPM when comparing
steered against unsteered clips.

Shapes: ``audio`` is mono float ``(samples,)`` (or any form :mod:`steerlit.metrics.audio_input` accepts);
``TempoEstimate.beat_times`` is ``(num_beats,)`` in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from steerlit.metrics.audio_input import as_mono, check_sample_rate
from steerlit.metrics.numba_cache import import_librosa, register_warmup, warmup_clip
from steerlit.metrics.settings import TempoSettings

# Clips shorter than this, or whose peak is below SILENCE_PEAK, get bpm = nan.
MIN_DURATION_S = 1.0
SILENCE_PEAK = 1e-5  # -100 dBFS
OCTAVE_FACTORS = (1.0, 2.0, 3.0, 1.0 / 2.0, 1.0 / 3.0)
_LEAD_IN_FRAMES = 8


@dataclass(frozen=True)
class TempoEstimate:
    """Result of :func:`estimate_tempo`.

    Attributes:
        bpm: global tempo in beats per minute; ``nan`` for silent or too-short audio.
        beat_times: beat positions in seconds, ``(num_beats,)`` float64 (empty if none).
        onset_rate: detected onsets per second of audio (0.0 for silent audio).
    """

    bpm: float
    beat_times: np.ndarray = field(default_factory=lambda: np.zeros(0))
    onset_rate: float = 0.0

    @property
    def num_beats(self) -> int:
        return int(self.beat_times.size)


def fold_into_range(bpm: float, min_bpm: float, max_bpm: float) -> float:
    """Move ``bpm`` by octaves (x2 / x1/2) into [min_bpm, max_bpm] where possible; ``nan`` if not > 0."""
    if not np.isfinite(bpm) or bpm <= 0:
        return float("nan")
    while bpm < min_bpm and bpm * 2.0 <= max_bpm:
        bpm *= 2.0
    while bpm > max_bpm and bpm / 2.0 >= min_bpm:
        bpm /= 2.0
    return float(bpm)


def estimate_tempo(
    audio: np.ndarray,
    sr: int,
    *,
    start_bpm: float = 120.0,
    std_bpm: float = 1.0,
    min_bpm: float = 40.0,
    max_bpm: float = 240.0,
    hop_length: int = 256,
) -> TempoEstimate:
    """Estimate the global tempo, the beats and the onset rate of one clip.

    Uses one onset-strength envelope for everything: ``librosa.feature.tempo`` (prior centred on
    ``start_bpm``, ``max_tempo=max_bpm``; a result below ``min_bpm`` is doubled into the range),
    ``librosa.beat.beat_track`` seeded with that tempo, and ``librosa.onset.onset_detect``.

    Args:
        audio: mono float audio ``(samples,)``; any form :func:`~steerlit.metrics.audio_input.as_mono` takes.
        sr: sample rate in Hz.
        start_bpm: centre of the tempo prior (librosa's default 120).
        std_bpm: width of the log-normal prior in octaves (librosa's default 1.0). A wider prior (1.5)
            trusts the onset autocorrelation more and halves octave errors at the ends of a 60-180 BPM range.
        min_bpm, max_bpm: allowed tempo range.
        hop_length: hop of the onset envelope in samples (256 at 16-22 kHz gives ~1.5-2% BPM steps).

    Returns:
        :class:`TempoEstimate`; ``bpm`` is ``nan`` (and no beats) when the clip is silent (peak
        below -100 dBFS), shorter than ``MIN_DURATION_S`` or has a flat onset envelope.
    """
    if not 0 < min_bpm < max_bpm:
        raise ValueError(f"need 0 < min_bpm < max_bpm, got {min_bpm}, {max_bpm}")
    if not std_bpm > 0:
        raise ValueError(f"need std_bpm > 0 (the prior's width in octaves, e.g. 1.0), got {std_bpm}")
    check_sample_rate(sr)
    y = as_mono(audio)
    duration = y.size / float(sr)
    if duration < MIN_DURATION_S or y.size == 0 or float(np.max(np.abs(y))) < SILENCE_PEAK:
        return TempoEstimate(bpm=float("nan"), beat_times=np.zeros(0, dtype=np.float64), onset_rate=0.0)
    oenv, onset_rate = _onset_envelope(y, sr, hop_length, duration)
    if not np.isfinite(oenv).all() or float(np.max(oenv)) <= 0.0:
        return TempoEstimate(
            bpm=float("nan"), beat_times=np.zeros(0, dtype=np.float64), onset_rate=onset_rate
        )
    librosa = import_librosa()
    prior = dict(start_bpm=start_bpm, std_bpm=std_bpm, max_tempo=max_bpm)
    tempo = librosa.feature.tempo(onset_envelope=oenv, sr=sr, hop_length=hop_length, **prior)
    bpm = fold_into_range(float(np.atleast_1d(tempo)[0]), min_bpm, max_bpm)
    if not np.isfinite(bpm):
        return TempoEstimate(
            bpm=float("nan"), beat_times=np.zeros(0, dtype=np.float64), onset_rate=onset_rate
        )
    beats = _beat_times(oenv, sr, hop_length, start_bpm, bpm)
    return TempoEstimate(bpm=bpm, beat_times=beats, onset_rate=onset_rate)


def estimate_tempo_for(audio: np.ndarray, sr: int, tempo: TempoSettings, **options) -> TempoEstimate:
    """:func:`estimate_tempo` with the prior and range of ``tempo`` (``options``: ``hop_length``)."""
    prior = dict(
        start_bpm=tempo.start_bpm, std_bpm=tempo.std_bpm, min_bpm=tempo.min_bpm, max_bpm=tempo.max_bpm
    )
    return estimate_tempo(audio, sr, **prior, **options)


def _onset_envelope(y: np.ndarray, sr: int, hop_length: int, duration: float) -> tuple[np.ndarray, float]:
    """The onset-strength envelope ``(frames,)`` of ``y`` after a silent lead-in, and onsets per second."""
    librosa = import_librosa()
    # Lead-in silence so that an onset at t = 0 produces a rise in the envelope (otherwise the
    # first frame already contains it and it is never detected); beat times are shifted back later.
    pad = _LEAD_IN_FRAMES * hop_length
    oenv = librosa.onset.onset_strength(
        y=np.concatenate([np.zeros(pad, y.dtype), y]), sr=sr, hop_length=hop_length
    )
    onsets = librosa.onset.onset_detect(onset_envelope=oenv, sr=sr, hop_length=hop_length, units="time")
    # The lead-in is silent: an onset found inside it is the clip's first onset, smeared by the window.
    return oenv, float(len(onsets) / duration)


def _beat_times(oenv: np.ndarray, sr: int, hop_length: int, start_bpm: float, bpm: float) -> np.ndarray:
    """Beat positions in seconds ``(num_beats,)`` from the lead-in envelope, tracked at ``bpm``."""
    librosa = import_librosa()
    pad = _LEAD_IN_FRAMES * hop_length
    _, beats = librosa.beat.beat_track(
        onset_envelope=oenv, sr=sr, hop_length=hop_length, start_bpm=start_bpm, bpm=bpm, units="time"
    )
    beats = np.asarray(beats, dtype=np.float64) - pad / sr
    return np.clip(beats[beats > -0.5 * pad / sr], 0.0, None)  # drop beats placed in the lead-in


@register_warmup
def _warm_tempo() -> None:
    estimate_tempo(*warmup_clip())


def _accuracy(est, target, tol: float, factors: tuple[float, ...]):
    est_a = np.asarray(est, dtype=np.float64)
    tgt_a = np.asarray(target, dtype=np.float64)
    est_b, tgt_b = np.broadcast_arrays(est_a, tgt_a)
    hit = np.zeros(est_b.shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        for f in factors:
            ref = f * tgt_b
            hit |= np.abs(est_b - ref) <= tol * ref
    hit &= np.isfinite(est_b) & np.isfinite(tgt_b) & (tgt_b > 0)
    if est_a.ndim == 0 and tgt_a.ndim == 0:
        return bool(hit)
    return hit


def tempo_accuracy1(est, target, tol: float = 0.04):
    """MIREX Accuracy1: ``|est - target| <= tol * target``.

    Scalars give a ``bool``; arrays (broadcast together) give a bool array of the broadcast shape.
    A ``nan`` estimate counts as a miss.
    """
    return _accuracy(est, target, tol, (1.0,))


def tempo_accuracy2(est, target, tol: float = 0.04):
    """MIREX Accuracy2: Accuracy1 against any of ``target * (1, 2, 3, 1/2, 1/3)``.

    The tolerance is relative to each scaled target. Scalars give a ``bool``; arrays give a bool
    array of the broadcast shape. A ``nan`` estimate counts as a miss.
    """
    return _accuracy(est, target, tol, OCTAVE_FACTORS)
