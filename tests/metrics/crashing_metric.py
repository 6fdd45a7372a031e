"""A metric that crashes natively (a segfault, as a damaged numba cache causes) for one marked clip.

Module level, so that it pickles into the spawned workers of ``ClipMeasurer``.
"""

from __future__ import annotations

import ctypes

import numpy as np

from steerlit.metrics.loudness import peak_dbfs, rms_dbfs

CRASH_MARK = 0.75  # a clip whose first sample is this (exact in float32) crashes the metric
LEVEL_NAMES = ("rms_dbfs", "peak_dbfs")


def levels(audio: np.ndarray, sample_rate: int) -> dict[str, float]:
    return {"rms_dbfs": rms_dbfs(audio), "peak_dbfs": peak_dbfs(audio)}


def levels_or_segfault(audio: np.ndarray, sample_rate: int) -> dict[str, float]:
    """:func:`levels`, except that a clip starting with ``CRASH_MARK`` reads address 0 (SIGSEGV)."""
    if audio.size and float(audio.flat[0]) == CRASH_MARK:
        ctypes.string_at(0)
    return levels(audio, sample_rate)
