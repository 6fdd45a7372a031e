"""Synthetic clips: determinism and attribute sanity."""

import dataclasses

import numpy as np
from scipy.signal import find_peaks
from scipy.stats import spearmanr

from steerlit.config import compose
from steerlit.metrics.brightness import spectral_centroid
from steerlit.metrics.tempo import estimate_tempo
from steerlit.testbed.synth import (
    BPM_RANGE,
    SAMPLE_RATE,
    TEMPO_ESTIMATOR,
    ClipSpec,
    plays_quarter_notes,
    quarter_note_probability,
    render,
    render_stems,
    sample_spec,
    spec_for_index,
)


def _onsets(y: np.ndarray) -> int:
    """Peaks of a 10 ms RMS envelope's positive difference (a crude onset count)."""
    hop = SAMPLE_RATE // 100
    env = np.sqrt(np.mean(y[: len(y) // hop * hop].reshape(-1, hop) ** 2, axis=1))
    flux = np.maximum(np.diff(env), 0)
    peaks, _ = find_peaks(flux, height=0.2 * flux.max(), distance=5)
    return len(peaks)


def _centroid(y: np.ndarray) -> float:
    mag = np.abs(np.fft.rfft(y))
    freqs = np.fft.rfftfreq(len(y), 1 / SAMPLE_RATE)
    return float((mag * freqs).sum() / mag.sum())


def test_render_is_deterministic_and_shaped():
    spec = spec_for_index(3)
    assert spec == spec_for_index(3)
    a, b = render(spec), render(spec)
    assert a.dtype == np.float32 and a.shape == (4 * SAMPLE_RATE,)
    np.testing.assert_array_equal(a, b)
    assert 0.3 < np.abs(a).max() <= 0.5 + 1e-6
    assert not np.array_equal(a, render(spec_for_index(4)))


def test_stems_add_up_to_the_mix():
    spec = spec_for_index(3)
    drums, pitched = render_stems(spec)
    assert drums.dtype == pitched.dtype == np.float32 and drums.shape == pitched.shape == (4 * SAMPLE_RATE,)
    np.testing.assert_allclose(drums + pitched, render(spec), atol=1e-6)
    assert np.abs(drums).max() > 0.05 and np.abs(pitched).max() > 0.05


def test_sample_spec_ranges():
    rng = np.random.default_rng(0)
    specs = [sample_spec(rng) for _ in range(200)]
    assert all(
        BPM_RANGE[0] <= s.bpm <= BPM_RANGE[1] and 0 <= s.brightness <= 1 and 0 <= s.key < 12 for s in specs
    )
    assert len({s.instrument for s in specs}) == 4 and len({s.pattern for s in specs}) == 3


def test_fast_clip_has_more_onsets_than_slow():
    base = ClipSpec(bpm=70.0, brightness=0.5, instrument="bass", pattern="four_on_floor", key=0, seed=1)
    slow, fast = render(base), render(dataclasses.replace(base, bpm=160.0))
    assert _onsets(fast) > 1.5 * _onsets(slow)


def test_bright_clip_has_higher_centroid():
    for inst in ("pluck", "organ", "bass", "lead"):
        base = ClipSpec(bpm=110.0, brightness=0.1, instrument=inst, pattern="backbeat", key=5, seed=2)
        dark, bright = render(base), render(dataclasses.replace(base, brightness=0.9))
        assert _centroid(bright) > 1.5 * _centroid(dark), inst


def test_steerlit_metrics_read_the_known_attributes_of_clips():
    """The design rests on this: on held-out clips, the tempo estimate with the testbed's settings
    (TEMPO_ESTIMATOR: a 1.5-octave prior at 120 BPM) lands within 4% of the true BPM on >= 85% of
    clips over 60-180 BPM, and the magnitude-weighted centroid ranks clips by brightness. librosa's
    default 1-octave prior does worse on the slow end (octave errors), which is why the setting exists."""
    specs = [spec_for_index(i, base_seed=1) for i in range(40)]
    clips = [render(s) for s in specs]
    true_bpm = np.array([s.bpm for s in specs])
    hit = {}
    for name, kwargs in (("testbed", TEMPO_ESTIMATOR), ("default", {})):
        bpm = np.array([estimate_tempo(y, SAMPLE_RATE, **kwargs).bpm for y in clips])
        hit[name] = np.abs(bpm / true_bpm - 1) <= 0.04
    assert hit["testbed"].mean() >= 0.85
    assert hit["testbed"].sum() > hit["default"].sum()
    centroid = [spectral_centroid(y, SAMPLE_RATE) for y in clips]
    assert spearmanr([s.brightness for s in specs], centroid)[0] >= 0.85


def test_testbed_metric_config_uses_the_synth_tempo_settings():
    """The default job measures BPM with the same estimator settings as the testbed evaluation."""
    for overrides in ([], ["experiment=testbed_study"]):
        tempo = compose(overrides).metrics.tempo
        assert tempo.estimator == "librosa"
        assert {k: getattr(tempo, k) for k in TEMPO_ESTIMATOR} == TEMPO_ESTIMATOR


def test_pitched_note_value_follows_the_tempo():
    """Slow plucks and leads play quarter notes and fast organs one chord per beat, so that the
    beat is the pitched part's metrical level: the estimator then reads such clips at their tempo,
    not at the eighth-note (double) or half-note (half) level."""
    assert quarter_note_probability("pluck", 70.0) == 1.0 and quarter_note_probability("lead", 130.0) == 0.0
    assert quarter_note_probability("organ", 175.0) == 1.0 and quarter_note_probability("organ", 100.0) == 0.0
    assert quarter_note_probability("bass", 60.0) == 0.0
    assert 0.0 < quarter_note_probability("pluck", 100.0) < 1.0
    cases = [("pluck", 66.0), ("lead", 72.0), ("organ", 172.0)]
    for instrument, bpm in cases:
        specs = [
            ClipSpec(bpm, 0.5, instrument, pattern, key=seed % 12, seed=seed)
            for seed, pattern in enumerate(("four_on_floor", "backbeat", "shuffle") * 2)
        ]
        assert all(plays_quarter_notes(s) for s in specs)
        est = np.array([estimate_tempo(render(s), SAMPLE_RATE, **TEMPO_ESTIMATOR).bpm for s in specs])
        assert np.mean(np.abs(est / bpm - 1) <= 0.04) >= 5 / 6, (instrument, bpm, est)
