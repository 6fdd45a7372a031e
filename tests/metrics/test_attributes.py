"""The per-clip attribute dict used by the steering callback."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from steerlit.metrics.attributes import ATTRIBUTE_NAMES, clip_attribute, compute_attribute, compute_attributes
from steerlit.metrics.beat_confidence import EstimatorUnavailableError
from steerlit.metrics.brightness import spectral_centroid
from steerlit.metrics.settings import TempoSettings
from steerlit.metrics.tempo import estimate_tempo

from .synth_audio import click_track, sine, white_noise

SR = 16000


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return click_track(120, SR, 6.0) + sine(440.0, SR, 6.0, amplitude=0.2)


def test_keys_and_values(clip):
    attrs = compute_attributes(clip, SR)
    assert tuple(attrs) == ATTRIBUTE_NAMES
    assert all(isinstance(v, float) for v in attrs.values())
    assert attrs["bpm"] == pytest.approx(120.0, rel=0.04)
    assert attrs["onset_rate"] == pytest.approx(2.0, rel=0.15)
    assert attrs["centroid_hz"] == pytest.approx(spectral_centroid(clip, SR))
    assert attrs["rolloff_hz"] > attrs["centroid_hz"] * 0.5
    assert attrs["peak_dbfs"] >= attrs["rms_dbfs"]
    assert attrs["clipping_ratio"] == 0.0
    assert attrs["silence_ratio"] == 0.0


def test_single_attribute_matches_and_tensor_input(clip):
    attrs = compute_attributes(torch.from_numpy(clip), SR, tempo_kwargs={"hop_length": 256})
    for name in ("bpm", "centroid_hz", "rms_dbfs", "silence_ratio"):
        assert compute_attribute(clip, SR, name) == pytest.approx(attrs[name])
    with pytest.raises(KeyError):
        compute_attribute(clip, SR, "loudness")


def test_silent_and_empty_clips():
    attrs = compute_attributes(np.zeros(SR * 2, np.float32), SR)
    assert np.isnan(attrs["bpm"]) and np.isnan(attrs["centroid_hz"]) and np.isnan(attrs["rolloff_hz"])
    assert attrs["onset_rate"] == 0.0 and attrs["silence_ratio"] == 1.0 and attrs["rms_dbfs"] == -120.0
    empty = compute_attributes(np.zeros(0, np.float32), SR)
    assert set(empty) == set(ATTRIBUTE_NAMES)


def test_bpm_with_a_beat_is_the_librosa_estimate_and_has_a_confidence(clip):
    tempo = TempoSettings(std_bpm=1.5)
    attrs = compute_attributes(clip, SR, tempo_kwargs=dataclasses.asdict(tempo))
    assert attrs["bpm"] == estimate_tempo(clip, SR, std_bpm=1.5).bpm  # bit-identical to the old measurement
    assert attrs["beat_confidence"] > 0.5
    assert ATTRIBUTE_NAMES[-1] == "beat_confidence"  # appended: the older columns keep their order


def test_no_beat_gives_nan_bpm_with_low_confidence():
    attrs = compute_attributes(white_noise(SR, 4.0), SR)
    assert np.isnan(attrs["bpm"]) and attrs["beat_confidence"] < 0.1
    assert compute_attribute(white_noise(SR, 4.0), SR, "beat_confidence") == attrs["beat_confidence"]


def test_min_confidence_gates_the_bpm(clip):
    strict = dataclasses.asdict(TempoSettings(min_confidence=1.01))
    assert np.isnan(compute_attributes(clip, SR, tempo_kwargs=strict)["bpm"])


def test_clip_attribute_reads_the_tempo_settings(clip):
    assert clip_attribute(clip, SR, "bpm", TempoSettings()) == pytest.approx(
        compute_attribute(clip, SR, "bpm")
    )
    assert np.isnan(clip_attribute(clip, SR, "bpm", TempoSettings(min_confidence=1.01)))


def test_missing_beat_this_checkpoint_is_one_clear_error(clip, tmp_path):
    tempo = dataclasses.asdict(
        TempoSettings(estimator="beat_this", beat_this_checkpoint=str(tmp_path / "no.ckpt"))
    )
    with pytest.raises(EstimatorUnavailableError, match="checkpoint"):
        compute_attributes(clip, SR, tempo_kwargs=tempo)


def test_a_dc_offset_moves_the_levels_but_not_the_centroid(clip):
    shifted = compute_attributes(clip + np.float32(0.25), SR)
    plain = compute_attributes(clip, SR)
    assert shifted["centroid_hz"] == pytest.approx(plain["centroid_hz"], rel=1e-3)
    assert shifted["rolloff_hz"] == pytest.approx(plain["rolloff_hz"], rel=1e-3)
    assert shifted["rms_dbfs"] > plain["rms_dbfs"] + 1.0  # an offset is part of the signal's level
