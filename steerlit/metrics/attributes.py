"""All per-clip audio attributes in one dict: what the steering callback logs per sample.

Keys (:data:`ATTRIBUTE_NAMES`):

- ``bpm``: global tempo from the ``metrics.tempo.estimator`` beat tracker
  (:func:`~steerlit.metrics.beat_trackers.make_beat_tracker`; librosa by default, whose BPM is that of
  :func:`~steerlit.metrics.tempo.estimate_tempo`); ``nan`` if silent or when there is no beat.
- ``onset_rate``: onsets per second.
- ``centroid_hz``: energy-weighted spectral centroid; ``nan`` if silent.
- ``rolloff_hz``: energy-weighted 85% spectral roll-off; ``nan`` if silent.
- ``rms_dbfs``, ``peak_dbfs``: levels in dBFS (floored at -120).
- ``clipping_ratio``: fraction of samples at |x| >= 0.999.
- ``silence_ratio``: fraction of 50 ms frames below -60 dBFS.
- ``beat_confidence``: the tracker's beat confidence in [0, 1] (:mod:`steerlit.metrics.beat_confidence`); the
  ``bpm`` is ``nan`` below ``min_confidence``. Last, so that older column orders are kept.

Shapes: ``audio`` is mono float ``(samples,)`` (or any form :mod:`steerlit.metrics.audio_input` accepts);
values are Python floats.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from steerlit.metrics.audio_input import as_mono, check_sample_rate
from steerlit.metrics.beat_trackers import BeatTracker, make_beat_tracker
from steerlit.metrics.brightness import spectral_centroid, spectral_rolloff
from steerlit.metrics.loudness import clipping_ratio, peak_dbfs, rms_dbfs, silence_ratio
from steerlit.metrics.settings import TempoSettings
from steerlit.metrics.tempo import estimate_tempo_for

ATTRIBUTE_NAMES: tuple[str, ...] = (
    "bpm",
    "onset_rate",
    "centroid_hz",
    "rolloff_hz",
    "rms_dbfs",
    "peak_dbfs",
    "clipping_ratio",
    "silence_ratio",
    "beat_confidence",
)
_TEMPO_FIELDS = frozenset(f.name for f in dataclasses.fields(TempoSettings))
_BEAT_NAMES = ("bpm", "beat_confidence")

_SIMPLE: dict[str, Callable[[np.ndarray, int], float]] = {
    "centroid_hz": lambda y, sr: spectral_centroid(y, sr),
    "rolloff_hz": lambda y, sr: spectral_rolloff(y, sr),
    "rms_dbfs": lambda y, sr: rms_dbfs(y),
    "peak_dbfs": lambda y, sr: peak_dbfs(y),
    "clipping_ratio": lambda y, sr: clipping_ratio(y),
    "silence_ratio": lambda y, sr: silence_ratio(y, sr),
}


def split_tempo_kwargs(tempo_kwargs: Mapping[str, Any] | None) -> tuple[TempoSettings, dict[str, Any]]:
    """``(TempoSettings, estimate_tempo extras)`` from ``dataclasses.asdict(TempoSettings)``-style keywords.

    Keys of :class:`~steerlit.metrics.settings.TempoSettings` (prior, range, ``estimator``, ...) build the
    settings; the rest (``hop_length``) go to :func:`~steerlit.metrics.tempo.estimate_tempo` for the onset rate.
    """
    kwargs = dict(tempo_kwargs or {})
    settings = TempoSettings(**{k: v for k, v in kwargs.items() if k in _TEMPO_FIELDS})
    return settings, {k: v for k, v in kwargs.items() if k not in _TEMPO_FIELDS}


@functools.lru_cache(maxsize=8)
def beat_tracker_for(tempo: TempoSettings) -> BeatTracker:
    """The (cached) beat tracker of ``tempo.estimator`` with its prior, range, checkpoint and threshold."""
    return make_beat_tracker(
        tempo.estimator,
        tempo,
        beat_this_checkpoint=tempo.beat_this_checkpoint,
        min_confidence=tempo.min_confidence,
    )


def _onset_rate(y: np.ndarray, sr: int, tempo: TempoSettings, extra: Mapping[str, Any]) -> float:
    return float(estimate_tempo_for(y, sr, tempo, **extra).onset_rate)


def _beat_attributes(y: np.ndarray, sr: int, tempo: TempoSettings) -> dict[str, float]:
    beat = beat_tracker_for(tempo)(y, sr)
    return {"bpm": float(beat.bpm), "beat_confidence": float(beat.confidence)}


def compute_attribute(audio: Any, sr: int, name: str, *, tempo_kwargs: dict | None = None) -> float:
    """One attribute of :data:`ATTRIBUTE_NAMES` for one clip (only the work that one needs)."""
    if name not in ATTRIBUTE_NAMES:
        raise KeyError(f"unknown attribute {name!r}; choose from {ATTRIBUTE_NAMES}")
    check_sample_rate(sr)
    y = as_mono(audio)
    tempo, extra = split_tempo_kwargs(tempo_kwargs)
    if name in _BEAT_NAMES:
        return _beat_attributes(y, sr, tempo)[name]
    if name == "onset_rate":
        return _onset_rate(y, sr, tempo, extra)
    return float(_SIMPLE[name](y, sr))


def clip_attribute(audio: Any, sr: int, name: str, tempo: TempoSettings) -> float:
    """:func:`compute_attribute` with ``tempo``'s prior, range and estimator (a study's ``metrics.tempo``)."""
    return compute_attribute(audio, sr, name, tempo_kwargs=dataclasses.asdict(tempo))


def compute_attributes(audio: Any, sr: int, *, tempo_kwargs: dict | None = None) -> dict[str, float]:
    """Every attribute of :data:`ATTRIBUTE_NAMES` for one clip.

    Args:
        audio: mono float ``(samples,)``, or any form :func:`~steerlit.metrics.audio_input.as_mono` takes
            (integer PCM rescaled, stereo in either layout averaged, torch accepted).
        sr: sample rate in Hz.
        tempo_kwargs: ``dataclasses.asdict`` of a :class:`~steerlit.metrics.settings.TempoSettings` (prior,
            range, ``estimator``, ``beat_this_checkpoint``, ``min_confidence``), optionally with ``hop_length``
            for the onset rate (see :func:`split_tempo_kwargs`).

    Returns:
        ``{name: float}`` in the order of :data:`ATTRIBUTE_NAMES`. Tempo and brightness are
        ``nan`` for silent clips (``bpm`` also without a beat); nothing raises for silent or very short audio.

    Raises:
        EstimatorUnavailableError: the chosen tempo estimator's package or checkpoint is missing.
        ValueError: for NaN / inf samples, an ambiguous 2-D shape or a sample rate that is not > 0.
    """
    check_sample_rate(sr)
    y = as_mono(audio)
    tempo, extra = split_tempo_kwargs(tempo_kwargs)
    out = {**_beat_attributes(y, sr, tempo), "onset_rate": _onset_rate(y, sr, tempo, extra)}
    for name, fn in _SIMPLE.items():
        out[name] = float(fn(y, sr))
    return {name: out[name] for name in ATTRIBUTE_NAMES}
