"""Input normalisation shared by the metric modules.

Metrics work on mono float numpy audio ``(samples,)``. These helpers accept the shapes that
generation code tends to produce (torch tensors, ``(1, samples)``, ``(channels, samples)``,
batches ``(batch, samples)`` / ``(batch, channels, samples)`` or lists of clips) and convert.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def as_mono(audio: Any) -> np.ndarray:
    """One clip as contiguous float32 mono ``(samples,)``.

    Accepts ``(samples,)`` or ``(channels, samples)`` (channels averaged); numpy or torch.
    Non-finite samples are replaced by 0.
    """
    x = _to_numpy(audio).astype(np.float32, copy=False)
    if x.ndim == 2:
        x = x.mean(axis=0)
    elif x.ndim != 1:
        raise ValueError(f"expected audio of shape (samples,) or (channels, samples), got {x.shape}")
    x = np.ascontiguousarray(x)
    if not np.isfinite(x).all():
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    return x


def as_clip_list(audios: Any) -> list[np.ndarray]:
    """A batch of clips as a list of float32 mono arrays ``(samples_i,)``.

    Accepts a list/tuple of clips (each ``(samples,)`` or ``(channels, samples)``), an array or
    tensor ``(batch, samples)`` or ``(batch, channels, samples)``, or a single clip ``(samples,)``
    (treated as a batch of one).
    """
    if isinstance(audios, Sequence) and not isinstance(audios, (str, bytes)):
        return [as_mono(a) for a in audios]
    x = _to_numpy(audios)
    if x.ndim == 1:
        return [as_mono(x)]
    if x.ndim in (2, 3):
        return [as_mono(a) for a in x]
    raise ValueError(
        f"expected a batch of shape (batch, samples) or (batch, channels, samples), got {x.shape}"
    )
