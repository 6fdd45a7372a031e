"""All per-clip audio attributes in one dict: what the steering callback logs per sample.

Keys (:data:`ATTRIBUTE_NAMES`):

- ``bpm``: global tempo (:func:`~steerlit.metrics.tempo.estimate_tempo`); ``nan`` if silent.
- ``onset_rate``: onsets per second.
- ``centroid_hz``: energy-weighted spectral centroid; ``nan`` if silent.
- ``rolloff_hz``: energy-weighted 85% spectral roll-off; ``nan`` if silent.
- ``rms_dbfs``, ``peak_dbfs``: levels in dBFS (floored at -120).
- ``clipping_ratio``: fraction of samples at |x| >= 0.999.
- ``silence_ratio``: fraction of 50 ms frames below -60 dBFS.

Shapes: ``audio`` is mono float ``(samples,)`` (or any form :mod:`steerlit.metrics.audio_input` accepts);
values are Python floats.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from steerlit.metrics.audio_input import as_mono, check_sample_rate
from steerlit.metrics.brightness import spectral_centroid, spectral_rolloff
from steerlit.metrics.loudness import clipping_ratio, peak_dbfs, rms_dbfs, silence_ratio
from steerlit.metrics.tempo import estimate_tempo

ATTRIBUTE_NAMES: tuple[str, ...] = (
    "bpm",
    "onset_rate",
    "centroid_hz",
    "rolloff_hz",
    "rms_dbfs",
    "peak_dbfs",
    "clipping_ratio",
    "silence_ratio",
)

_SIMPLE: dict[str, Callable[[np.ndarray, int], float]] = {
    "centroid_hz": lambda y, sr: spectral_centroid(y, sr),
    "rolloff_hz": lambda y, sr: spectral_rolloff(y, sr),
    "rms_dbfs": lambda y, sr: rms_dbfs(y),
    "peak_dbfs": lambda y, sr: peak_dbfs(y),
    "clipping_ratio": lambda y, sr: clipping_ratio(y),
    "silence_ratio": lambda y, sr: silence_ratio(y, sr),
}


def compute_attribute(audio: Any, sr: int, name: str, *, tempo_kwargs: dict | None = None) -> float:
    """One attribute of :data:`ATTRIBUTE_NAMES` for one clip (only the work that one needs)."""
    if name not in ATTRIBUTE_NAMES:
        raise KeyError(f"unknown attribute {name!r}; choose from {ATTRIBUTE_NAMES}")
    check_sample_rate(sr)
    y = as_mono(audio)
    if name in ("bpm", "onset_rate"):
        est = estimate_tempo(y, sr, **(tempo_kwargs or {}))
        return float(est.bpm if name == "bpm" else est.onset_rate)
    return float(_SIMPLE[name](y, sr))


def compute_attributes(audio: Any, sr: int, *, tempo_kwargs: dict | None = None) -> dict[str, float]:
    """Every attribute of :data:`ATTRIBUTE_NAMES` for one clip.

    Args:
        audio: mono float ``(samples,)``, or any form :func:`~steerlit.metrics.audio_input.as_mono` takes
            (integer PCM rescaled, stereo in either layout averaged, torch accepted).
        sr: sample rate in Hz.
        tempo_kwargs: keyword arguments for :func:`~steerlit.metrics.tempo.estimate_tempo`
            (``start_bpm``, ``min_bpm``, ``max_bpm``, ``hop_length``).

    Returns:
        ``{name: float}`` in the order of :data:`ATTRIBUTE_NAMES`. Tempo and brightness are
        ``nan`` for silent clips; nothing raises for silent or very short audio.

    Raises:
        ValueError: for NaN / inf samples, an ambiguous 2-D shape or a sample rate that is not > 0.
    """
    check_sample_rate(sr)
    y = as_mono(audio)
    est = estimate_tempo(y, sr, **(tempo_kwargs or {}))
    out = {"bpm": float(est.bpm), "onset_rate": float(est.onset_rate)}
    for name, fn in _SIMPLE.items():
        out[name] = float(fn(y, sr))
    return {name: out[name] for name in ATTRIBUTE_NAMES}
