"""Known-truth test audio for the metric tests: click / drum patterns at a given BPM, tones."""

from __future__ import annotations

import numpy as np
from scipy import signal


def _place(out: np.ndarray, event: np.ndarray, start: int) -> None:
    end = min(out.size, start + event.size)
    if start < end:
        out[start:end] += event[: end - start]


def noise_burst(
    sr: int, rng: np.random.Generator, *, length_s: float = 0.05, decay_s: float = 0.01
) -> np.ndarray:
    """A short exponentially decaying white-noise burst (a click / hi-hat)."""
    n = int(length_s * sr)
    t = np.arange(n) / sr
    return rng.standard_normal(n) * np.exp(-t / decay_s)


def kick(sr: int, *, length_s: float = 0.15) -> np.ndarray:
    """A kick-like sine sweep 150 -> 50 Hz with an exponential decay."""
    n = int(length_s * sr)
    t = np.arange(n) / sr
    freq = 50.0 + 100.0 * np.exp(-t / 0.03)
    phase = 2 * np.pi * np.cumsum(freq) / sr
    return np.sin(phase) * np.exp(-t / 0.05)


def click_track(bpm: float, sr: int, duration_s: float = 8.0, *, seed: int = 0) -> np.ndarray:
    """Noise-burst clicks on every beat, with an accent on beat 1 of each bar. float32 ``(samples,)``."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(duration_s * sr))
    period = 60.0 / bpm
    for k in range(int(duration_s / period) + 1):
        gain = 1.0 if k % 4 == 0 else 0.6
        _place(out, gain * noise_burst(sr, rng), int(round(k * period * sr)))
    return (0.5 * out / np.max(np.abs(out))).astype(np.float32)


def drum_pattern(bpm: float, sr: int, duration_s: float = 8.0, *, seed: int = 0) -> np.ndarray:
    """Kick on beats 1 and 3, snare (longer noise) on 2 and 4, soft hats on every eighth note."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(duration_s * sr))
    beat = 60.0 / bpm
    for k in range(int(duration_s / beat) + 1):
        start = int(round(k * beat * sr))
        if k % 2 == 0:
            _place(out, kick(sr), start)
        else:
            _place(out, 0.5 * noise_burst(sr, rng, length_s=0.12, decay_s=0.04), start)
        for half in (0.0, 0.5):
            _place(
                out,
                0.15 * noise_burst(sr, rng, length_s=0.03, decay_s=0.005),
                int(round((k + half) * beat * sr)),
            )
    return (0.5 * out / np.max(np.abs(out))).astype(np.float32)


def sine(freq: float, sr: int, duration_s: float = 2.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(duration_s * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def white_noise(sr: int, duration_s: float = 2.0, *, seed: int = 0, amplitude: float = 0.3) -> np.ndarray:
    return (amplitude * np.random.default_rng(seed).standard_normal(int(duration_s * sr))).astype(np.float32)


def lowpass(audio: np.ndarray, sr: int, cutoff_hz: float, order: int = 8) -> np.ndarray:
    sos = signal.butter(order, cutoff_hz, btype="low", fs=sr, output="sos")
    return signal.sosfilt(sos, audio).astype(np.float32)
