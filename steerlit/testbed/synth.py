"""Deterministic synthetic music clips with known tempo and brightness.

Each clip is a drum loop (kick / snare / hi-hat) plus a pitched part (pluck, organ, bass or
lead) on a fixed tempo grid. ``brightness`` in [0, 1] sets the low-pass cutoff of everything
(harmonic roll-off of the pitched part, noise filter of the hats and snare), from ~250 Hz
(dark, muffled) to ~7 kHz (bright, crisp), on a log scale. All of it is plain numpy, a few
milliseconds per 4 s clip at 16 kHz.

Shapes: :func:`render` returns a float32 array ``(num_samples,)``, mono, peak-normalised to 0.5.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

SAMPLE_RATE = 16_000
DURATION_S = 4.0
BPM_RANGE = (60.0, 180.0)
INSTRUMENTS = ("pluck", "organ", "bass", "lead")
PATTERNS = ("four_on_floor", "backbeat", "shuffle")
KEY_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
CUTOFF_RANGE_HZ = (250.0, 7000.0)
# The pitched part's note value follows the tempo, so that its metrical level is the beat's: plucks
# and leads play eighths when fast and quarters when slow (the chance of quarters rises linearly
# from 0 at 120 BPM to 1 at 80 BPM); organ chords last two beats when slow and one beat when fast
# (chance rising from 0 at 130 to 1 at 170 BPM). With one note value at every tempo, slow plucks
# were read at their eighth-note level (72 BPM -> 144) and fast organs at their half-note level.
QUARTER_NOTE_RAMPS_BPM = {"pluck": (120.0, 80.0), "lead": (120.0, 80.0), "organ": (130.0, 170.0)}
# estimate_tempo settings for this music (also configs/metrics/testbed.yaml): librosa's default prior width
# (1 octave around 120 BPM) doubles most clips below 75 BPM; 1.5 octaves keeps ~90 % of 60-180 BPM clips within 4 %.
TEMPO_ESTIMATOR = {"start_bpm": 120.0, "std_bpm": 1.5, "min_bpm": 40.0, "max_bpm": 240.0}

# Base MIDI octave (of the root) per instrument: bass low, organ/pluck mid, lead high.
_REGISTER = {"bass": 36, "organ": 55, "pluck": 60, "lead": 67}
_MINOR_PENTA = (0, 3, 5, 7, 10, 12)


@dataclass(frozen=True)
class ClipSpec:
    """What a clip contains. ``brightness`` in [0, 1]; ``key`` a pitch class 0-11 (0 = C)."""

    bpm: float
    brightness: float
    instrument: str
    pattern: str
    key: int
    seed: int

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def cutoff_hz(self) -> float:
        return brightness_to_cutoff(self.brightness)


def brightness_to_cutoff(brightness: float) -> float:
    """Low-pass cutoff in Hz for a brightness in [0, 1] (log-spaced between CUTOFF_RANGE_HZ)."""
    lo, hi = CUTOFF_RANGE_HZ
    b = float(np.clip(brightness, 0.0, 1.0))
    return float(lo * (hi / lo) ** b)


def sample_spec(rng: np.random.Generator) -> ClipSpec:
    """Draw a random spec: tempo uniform in BPM_RANGE, brightness uniform in [0, 1]."""
    return ClipSpec(
        bpm=float(np.round(rng.uniform(*BPM_RANGE), 1)),
        brightness=float(np.round(rng.uniform(0.0, 1.0), 3)),
        instrument=str(rng.choice(INSTRUMENTS)),
        pattern=str(rng.choice(PATTERNS)),
        key=int(rng.integers(0, 12)),
        seed=int(rng.integers(0, 2**31 - 1)),
    )


def spec_for_index(index: int, base_seed: int = 0) -> ClipSpec:
    """The spec of clip ``index`` of a deterministic data set (same index, same clip)."""
    return sample_spec(np.random.default_rng([base_seed, index]))


def _lowpass_gain(freqs: np.ndarray, cutoff: float, order: int = 4) -> np.ndarray:
    """Magnitude response of a Butterworth-like low-pass at ``cutoff`` (no phase)."""
    return 1.0 / np.sqrt(1.0 + (np.maximum(freqs, 0.0) / cutoff) ** (2 * order))


def _filtered_noise(rng: np.random.Generator, n: int, lo: float, cutoff: float) -> np.ndarray:
    """White noise band-limited to [lo, cutoff] by FFT shaping. Shape ``(n,)``."""
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    highpass = 1.0 / np.sqrt(1.0 + (lo / np.maximum(freqs, 1.0)) ** 4)
    out = np.fft.irfft(spec * highpass * _lowpass_gain(freqs, cutoff), n)
    return out / (np.abs(out).max() + 1e-9)


def _tone(
    f0: float, n: int, cutoff: float, phase_rng: np.random.Generator, odd_only: bool = False
) -> np.ndarray:
    """Additive harmonic tone (sawtooth or square-like spectrum) rolled off at ``cutoff``."""
    t = np.arange(n) / SAMPLE_RATE
    n_harm = max(1, int((SAMPLE_RATE / 2 - 200) // f0))
    h = np.arange(1, n_harm + 1)
    if odd_only:
        h = h[h % 2 == 1]
    amps = (1.0 / h) * _lowpass_gain(h * f0, cutoff)
    phases = phase_rng.uniform(0, 2 * np.pi, size=len(h))
    keep = amps > 1e-3 * amps[0]
    h, amps, phases = h[keep], amps[keep], phases[keep]
    return (amps[:, None] * np.sin(2 * np.pi * f0 * h[:, None] * t[None, :] + phases[:, None])).sum(0)


def _midi_hz(m: float) -> float:
    return 440.0 * 2.0 ** ((m - 69) / 12)


def _add(buf: np.ndarray, start: int, sig: np.ndarray) -> None:
    end = min(len(buf), start + len(sig))
    if end > start:
        buf[start:end] += sig[: end - start]


def _drums(spec: ClipSpec, n: int, rng: np.random.Generator) -> np.ndarray:
    """Kick / snare / hat track on the beat grid. Hats and snare noise follow the brightness cutoff."""
    sr = SAMPLE_RATE
    beat = 60.0 / spec.bpm * sr
    out = np.zeros(n)
    cutoff = spec.cutoff_hz
    # kick: pitch-swept sine, 150 ms
    kn = int(0.15 * sr)
    tk = np.arange(kn) / sr
    kick = np.sin(2 * np.pi * (45 * tk + 90 * (1 - np.exp(-tk * 30)) / 30)) * np.exp(-tk * 25)
    # hat: band-passed noise, 40 ms
    hn = int(0.04 * sr)
    hat = _filtered_noise(rng, hn, 2000.0 if cutoff > 2500 else 0.6 * cutoff, cutoff) * np.exp(
        -np.arange(hn) / sr * 90
    )
    # snare: noise + 190 Hz body, 120 ms
    sn = int(0.12 * sr)
    ts = np.arange(sn) / sr
    snare = (
        0.7 * _filtered_noise(rng, sn, 300.0, min(cutoff, 6000.0)) + 0.5 * np.sin(2 * np.pi * 190 * ts)
    ) * np.exp(-ts * 30)
    n_beats = int(np.ceil(n / beat)) + 1
    for b in range(n_beats):
        pos = int(round(b * beat))
        if spec.pattern == "four_on_floor":
            _add(out, pos, 1.0 * kick)
            _add(out, int(round((b + 0.5) * beat)), 0.05 * hat)
            if b % 2 == 1:
                _add(out, pos, 0.25 * snare)
        elif spec.pattern == "backbeat":
            _add(out, pos, 1.0 * kick)
            if b % 2 == 1:
                _add(out, pos, 0.35 * snare)
            _add(out, pos, 0.25 * hat)
            _add(out, int(round((b + 0.5) * beat)), 0.1 * hat)
        else:  # shuffle: swung eighths (2/3 of the beat)
            _add(out, pos, 1.0 * kick)
            _add(out, pos, 0.3 * hat)
            _add(out, int(round((b + 2 / 3) * beat)), 0.1 * hat)
            if b % 2 == 1:
                _add(out, pos, 0.3 * snare)
    return out


def quarter_note_probability(instrument: str, bpm: float) -> float:
    """Chance that ``instrument`` plays quarter notes at ``bpm`` (0 for the bass: always quarters)."""
    if instrument not in QUARTER_NOTE_RAMPS_BPM:
        return 0.0
    zero_at, one_at = QUARTER_NOTE_RAMPS_BPM[instrument]
    return float(np.clip((bpm - zero_at) / (one_at - zero_at), 0.0, 1.0))


def plays_quarter_notes(spec: ClipSpec) -> bool:
    """Whether the clip's pluck, lead or organ plays quarter notes (drawn from its own stream)."""
    return bool(
        np.random.default_rng([spec.seed, 7]).random() < quarter_note_probability(spec.instrument, spec.bpm)
    )


def _pitched(spec: ClipSpec, n: int, rng: np.random.Generator) -> np.ndarray:
    """Pitched part: a riff on the minor-pentatonic scale of ``spec.key``, on the beat grid."""
    sr = SAMPLE_RATE
    beat = 60.0 / spec.bpm * sr
    out = np.zeros(n)
    root = _REGISTER[spec.instrument] + spec.key
    cutoff = spec.cutoff_hz
    if spec.instrument == "pluck":  # eighth-note arpeggio (quarters when slow), fast decay
        step, dur, decay, odd = 0.5, 0.5, 12.0, False
    elif spec.instrument == "organ":  # chords held for two beats (one when fast), square-ish spectrum
        step, dur, decay, odd = 2.0, 1.9, 0.5, True
    elif spec.instrument == "bass":  # one note per beat
        step, dur, decay, odd = 1.0, 0.9, 4.0, False
    else:  # lead: eighth notes (quarters when slow)
        step, dur, decay, odd = 0.5, 0.45, 3.0, True
    if plays_quarter_notes(spec):
        step, dur = 1.0, (0.95 if spec.instrument == "organ" else dur)
    riff = rng.choice(_MINOR_PENTA, size=8)
    n_steps = int(np.ceil(n / (step * beat))) + 1
    for i in range(n_steps):
        pos = int(round(i * step * beat))
        if pos >= n:
            break
        length = int(dur * step * beat) if spec.instrument != "organ" else int(dur * beat)
        length = max(length, int(0.05 * sr))
        t = np.arange(length) / sr
        env = np.minimum(1.0, t / (0.03 if spec.instrument == "organ" else 0.003)) * np.exp(-t * decay)
        env *= np.minimum(1.0, (length - np.arange(length)) / (0.01 * sr))  # release without a click
        notes = [root + riff[i % 8]]
        if spec.instrument == "organ":
            notes = [root + riff[i % 8] + d for d in (0, 7, 12)]
        sig = sum(_tone(_midi_hz(m), length, cutoff, rng, odd_only=odd) for m in notes) / len(notes)
        accent = 1.0 if (i * step) % 1.0 == 0 else 0.45
        _add(out, pos, accent * env * sig)
    return out


def _stems(spec: ClipSpec, duration_s: float, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(drums, pitched) in float64, scaled as in the mix (peak 0.5)."""
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"render: only {SAMPLE_RATE} Hz is supported, got {sample_rate}")
    n = int(round(duration_s * sample_rate))
    rng = np.random.default_rng(spec.seed)
    drums = _drums(spec, n, rng)
    pitched = _pitched(spec, n, rng)
    drums = 0.6 * drums / (np.abs(drums).max() + 1e-9)
    pitched = 0.55 * pitched / (np.abs(pitched).max() + 1e-9)
    gain = 0.5 / (np.abs(drums + pitched).max() + 1e-9)
    return drums * gain, pitched * gain


def render_stems(
    spec: ClipSpec, duration_s: float = DURATION_S, sample_rate: int = SAMPLE_RATE
) -> tuple[np.ndarray, np.ndarray]:
    """The drums and the pitched part of ``spec``, each float32 ``(samples,)``, scaled as in the mix, so
    ``render(spec)`` is their sum (up to float32 rounding). Deterministic."""
    drums, pitched = _stems(spec, duration_s, sample_rate)
    return drums.astype(np.float32), pitched.astype(np.float32)


def render(spec: ClipSpec, duration_s: float = DURATION_S, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Render ``spec`` to a float32 waveform of shape ``(round(duration_s * sample_rate),)``.

    Deterministic: the same spec always gives the same samples.
    """
    drums, pitched = _stems(spec, duration_s, sample_rate)
    return (drums + pitched).astype(np.float32)
