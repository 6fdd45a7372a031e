"""What every metric accepts: integer PCM rescaled, stereo in either layout, one clear error for bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steerlit.metrics.attributes import compute_attributes
from steerlit.metrics.audio_input import MAX_CHANNELS, as_clip_list, as_mono, check_sample_rate, remove_dc
from steerlit.metrics.brightness import spectral_centroid, spectral_rolloff
from steerlit.metrics.loudness import integrated_loudness, rms_dbfs, silence_ratio
from steerlit.metrics.quality import dsp_features
from steerlit.metrics.tempo import estimate_tempo

from .synth_audio import click_track, sine

SR = 16000

# Every metric that takes a clip and a sample rate, reduced to something comparable.
METRICS = {
    "tempo": lambda a, sr: (estimate_tempo(a, sr).bpm, estimate_tempo(a, sr).onset_rate),
    "centroid": spectral_centroid,
    "rolloff": spectral_rolloff,
    "rms": lambda a, sr: rms_dbfs(a),
    "silence": silence_ratio,
    "loudness": integrated_loudness,
    "dsp_features": lambda a, sr: dsp_features(a, sr).tobytes(),
    "attributes": lambda a, sr: tuple(compute_attributes(a, sr).values()),
}


@pytest.fixture(scope="module")
def stereo() -> tuple[np.ndarray, np.ndarray]:
    left = click_track(120, SR, 3.0) + sine(440.0, SR, 3.0, amplitude=0.2)
    right = click_track(100, SR, 3.0, seed=1) + sine(1000.0, SR, 3.0, amplitude=0.1)
    return left.astype(np.float32), right.astype(np.float32)


def as_int16(audio: np.ndarray) -> np.ndarray:
    return np.round(audio * 32767).astype(np.int16)


def same(a, b) -> bool:
    """Bit for bit equal (nan equal to nan, as a silent clip's values are)."""
    if isinstance(a, bytes):
        return a == b
    return np.array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64), equal_nan=True)


def test_integer_pcm_is_rescaled_by_its_range():
    pcm16 = np.array([-32768, -16384, 0, 16384, 32767], np.int16)
    np.testing.assert_array_equal(as_mono(pcm16), pcm16.astype(np.float32) / 32768)
    np.testing.assert_array_equal(as_mono(np.array([0, 128, 255], np.uint8)), [-1.0, 0.0, 127 / 128])
    np.testing.assert_array_equal(as_mono(np.array([-(2**31), 2**30], np.int32)), [-1.0, 0.5])
    np.testing.assert_array_equal(as_mono(torch.tensor([16384], dtype=torch.int16)), [0.5])
    # A half-scale int16 sine reads like the same sine as float: about -9 dBFS, not +81.
    half = as_int16(sine(440.0, SR, 1.0, amplitude=0.5))
    assert rms_dbfs(half) == pytest.approx(-9.03, abs=0.01)


@pytest.mark.parametrize("name", METRICS)
def test_every_metric_gives_int16_the_values_of_its_float_equivalent(stereo, name):
    pcm = as_int16(stereo[0])
    fn = METRICS[name]
    assert same(fn(pcm, SR), fn(pcm.astype(np.float32) / 32768, SR))


@pytest.mark.parametrize("name", METRICS)
def test_both_stereo_layouts_give_the_channel_mean(stereo, name):
    left, right = stereo
    mean = np.stack([left, right]).mean(axis=0)
    fn = METRICS[name]
    expected = fn(mean, SR)
    assert same(fn(np.stack([left, right]), SR), expected)  # (channels, samples)
    assert same(fn(np.stack([left, right], axis=1), SR), expected)  # (samples, channels), as soundfile reads


def test_float32_mono_is_passed_through_unchanged(stereo):
    clip = stereo[0]
    out = as_mono(clip)
    assert out.dtype == np.float32 and np.array_equal(out, clip)
    np.testing.assert_array_equal(as_mono(torch.from_numpy(clip)), clip)
    np.testing.assert_array_equal(as_mono(clip[None]), clip)  # (1, samples)


@pytest.mark.parametrize("shape", [(4, 6), (20, 30), (8, 8)])
def test_an_ambiguous_shape_is_one_clear_error(shape):
    with pytest.raises(ValueError, match=rf"shape \({shape[0]}, {shape[1]}\) is ambiguous.*\(samples,\)"):
        as_mono(np.zeros(shape, np.float32))
    with pytest.raises(ValueError, match="ambiguous"):
        compute_attributes(np.zeros(shape, np.float32), SR)
    assert MAX_CHANNELS == 8


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e39])
@pytest.mark.parametrize("name", METRICS)
def test_non_finite_samples_are_one_clear_error(name, bad):
    clip = np.full(SR * 2, 0.1, dtype=np.float64)
    clip[100] = bad
    with pytest.raises(ValueError, match=r"1 non-finite samples .*first at index 100"):
        METRICS[name](clip, SR)


@pytest.mark.parametrize("sr", [0, -16000, float("nan"), float("inf"), None, "16000", True])
@pytest.mark.parametrize("name", [n for n in METRICS if n != "rms"])
def test_a_bad_sample_rate_is_one_clear_error(name, sr):
    with pytest.raises(ValueError, match="sample rate must be a finite number of Hz > 0"):
        METRICS[name](sine(440.0, SR, 1.0), sr)
    assert check_sample_rate(22050.0) == 22050.0


def test_other_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="not a PCM sample format"):
        as_mono(np.array([1, 2, 3]))  # int64, e.g. from a list of Python ints
    with pytest.raises(ValueError, match="not a PCM sample format"):
        as_mono(np.array([True, False]))
    with pytest.raises(ValueError, match=r"expected one clip of shape"):
        as_mono(np.zeros((2, 2, 100), np.float32))


def test_batches_keep_their_rules(stereo):
    left, right = stereo
    batch = np.stack([np.stack([left, right], axis=1)] * 2)  # (batch, samples, channels)
    clips = as_clip_list(batch)
    assert len(clips) == 2 and np.array_equal(clips[0], np.stack([left, right]).mean(axis=0))
    assert [c.shape for c in as_clip_list(np.stack([left, right]))] == [left.shape, right.shape]


def test_remove_dc_takes_out_the_mean_and_nothing_else():
    t = np.arange(1600, dtype=np.float32) / 16000
    tone = np.sin(2 * np.pi * 500 * t).astype(np.float32)  # ten whole periods: mean 0
    out = remove_dc(tone + np.float32(0.3))
    assert out.dtype == np.float32 and abs(float(out.mean())) < 1e-6
    np.testing.assert_allclose(out, tone, atol=1e-5)
    assert remove_dc(np.zeros(0, np.float32)).size == 0
