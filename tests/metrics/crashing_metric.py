"""A metric that crashes natively (a segfault, as a damaged numba cache causes) for one marked clip.

Module level, so that it pickles into the spawned workers of ``ClipMeasurer``.
"""

from __future__ import annotations

import ctypes
import hashlib

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


def clip_digest(audio: np.ndarray) -> str:
    """sha1 of a clip's float32 samples (how :func:`levels_or_segfault_for` picks the clips it crashes on)."""
    return hashlib.sha1(np.ascontiguousarray(audio, dtype=np.float32).tobytes()).hexdigest()


def levels_or_segfault_for(audio: np.ndarray, sample_rate: int, crash: frozenset[str]) -> dict[str, float]:
    """:func:`levels`, except for a clip whose :func:`clip_digest` is in ``crash`` (SIGSEGV); bind ``crash``
    with ``functools.partial`` (it pickles into the workers)."""
    if clip_digest(audio) in crash:
        ctypes.string_at(0)
    return levels(audio, sample_rate)
