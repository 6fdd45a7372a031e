"""What every metric accepts as audio, and how it is turned into mono float32 ``(samples,)``.

The rules, applied by :func:`as_mono` (and so by every metric in :mod:`steerlit.metrics`):

- **Types:** numpy arrays, torch tensors (any device; no torch import here) or anything
  ``np.asarray`` takes.
- **Sample formats:** floating point is used as is (converted to float32). Integer PCM is rescaled by
  its dtype's range to [-1, 1): ``int8 / int16 / int32`` are divided by ``2**(bits - 1)``, unsigned
  ``uint8 / uint16 / uint32`` (WAV's 8-bit format is unsigned) are shifted by ``2**(bits - 1)`` first.
  ``int64``, ``uint64`` and ``bool`` are refused: no PCM format uses them, and a list of Python ints
  becomes ``int64``, whose range would turn any sample value into silence.
- **Channels:** ``(samples,)`` is mono. A 2-D clip is ``(channels, samples)`` or ``(samples, channels)``;
  the channel axis is the one with at most :data:`MAX_CHANNELS` (8) entries, the sample axis must have
  more. When both or neither axis have at most 8 entries the shape is ambiguous and refused (pass a
  mono ``(samples,)`` clip, or one with a clear channel axis). Channels are averaged.
- **Values:** NaN or infinite samples (also finite float64 values beyond float32's range) are refused,
  as is a sample rate that is not a finite number > 0 (:func:`check_sample_rate`).
- **DC:** spectral measures (brightness, the DSP quality features) remove the clip's mean first
  (:func:`remove_dc`), so that an offset adds no energy at 0 Hz; level measures (RMS, peak, clipping,
  loudness) keep it, since an offset is part of the signal's level.

For valid float32 mono input the result is the input itself (same values, contiguous), so metric values
do not depend on which of the accepted forms a clip came in.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

MAX_CHANNELS = 8  # an axis this short is the channel axis of a 2-D clip


def to_numpy(x: Any) -> np.ndarray:
    """``x`` as a numpy array, keeping integer sample formats (torch float16/bfloat16 become float32)."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        t = x.detach().cpu()
        return (t.float() if t.is_floating_point() else t).numpy()
    return np.asarray(x)


def pcm_to_float(x: np.ndarray) -> np.ndarray:
    """Samples as float32: floats unchanged in value, integer PCM rescaled to [-1, 1) by its dtype's range."""
    kind = x.dtype.kind
    if kind == "f":
        with np.errstate(
            over="ignore"
        ):  # float64 beyond float32's range becomes inf: refused by check_finite
            return x.astype(np.float32, copy=False)
    if kind in "iu" and x.dtype.itemsize <= 4:
        half_range = float(2 ** (8 * x.dtype.itemsize - 1))
        y = x.astype(np.float64)
        if kind == "u":
            y -= half_range
        return (y / half_range).astype(np.float32)
    raise ValueError(
        f"audio has dtype {x.dtype}, which is not a PCM sample format: pass float samples in [-1, 1] or "
        "integer PCM (int8, int16, int32, uint8, uint16, uint32)"
    )


def channel_axis(shape: tuple[int, ...]) -> int:
    """The channel axis (0 or 1) of a 2-D clip of this shape, by the rule of this module's docstring."""
    short = [n <= MAX_CHANNELS for n in shape]
    if short[0] != short[1]:
        return 0 if short[0] else 1
    raise ValueError(
        f"audio of shape {tuple(shape)} is ambiguous: a 2-D clip needs one channel axis with at most "
        f"{MAX_CHANNELS} entries and one sample axis with more, as (channels, samples) or (samples, channels). "
        "Pass mono audio as (samples,), or a clip with a clear channel axis"
    )


def check_finite(y: np.ndarray, what: str = "audio") -> None:
    """Raise ``ValueError`` naming how many samples of ``y`` are NaN or infinite (and where the first is)."""
    finite = np.isfinite(y)
    if finite.all():
        return
    bad = np.flatnonzero(~finite)
    n_nan = int(np.isnan(y).sum())
    raise ValueError(
        f"{what} has {bad.size} non-finite samples ({n_nan} NaN, {bad.size - n_nan} ±inf or beyond float32's "
        f"range; the first at index {int(bad[0])}): metrics need finite samples. A non-finite clip usually "
        "comes from a generation whose hidden states overflowed (e.g. a too large steering α); flag or drop it"
    )


def check_sample_rate(sr: Any) -> Any:
    """``sr`` unchanged if it is a finite real number > 0; otherwise one clear ``ValueError``."""
    ok = isinstance(sr, numbers.Real) and not isinstance(sr, bool) and math.isfinite(sr) and sr > 0
    if not ok:
        raise ValueError(f"sample rate must be a finite number of Hz > 0 (e.g. 32000), got {sr!r}")
    return sr


def as_mono(audio: Any) -> np.ndarray:
    """One clip as contiguous float32 mono ``(samples,)``.

    Accepts ``(samples,)``, ``(channels, samples)`` or ``(samples, channels)`` (channels averaged), float
    or integer PCM, numpy or torch, by the rules of this module's docstring.

    Raises:
        ValueError: for an ambiguous 2-D shape, more than 2 dimensions, a non-PCM dtype or non-finite samples.
    """
    x = pcm_to_float(to_numpy(audio))
    if x.ndim == 2:
        x = x.mean(axis=channel_axis(x.shape))
    elif x.ndim != 1:
        raise ValueError(
            f"expected one clip of shape (samples,), (channels, samples) or (samples, channels), got {x.shape}"
        )
    x = np.ascontiguousarray(x)
    check_finite(x)
    return x


def remove_dc(y: np.ndarray) -> np.ndarray:
    """Mono ``y`` ``(samples,)`` minus its mean (the DC offset), float32; empty stays empty."""
    if y.size == 0:
        return y
    return (y - np.float32(np.mean(y, dtype=np.float64))).astype(np.float32, copy=False)


def as_clip_list(audios: Any) -> list[np.ndarray]:
    """A batch of clips as a list of float32 mono arrays ``(samples_i,)``.

    Accepts a list/tuple of clips (each as :func:`as_mono` takes), an array or tensor ``(batch, samples)``
    (one mono clip per row), ``(batch, channels, samples)`` or ``(batch, samples, channels)``, or a single
    clip ``(samples,)`` (a batch of one).
    """
    if isinstance(audios, Sequence) and not isinstance(audios, (str, bytes)):
        return [as_mono(a) for a in audios]
    x = to_numpy(audios)
    if x.ndim == 1:
        return [as_mono(x)]
    if x.ndim in (2, 3):
        return [as_mono(a) for a in x]
    raise ValueError(
        "expected a batch of shape (batch, samples), (batch, channels, samples) or (batch, samples, channels), "
        f"got {x.shape}"
    )
