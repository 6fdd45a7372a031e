"""The per-clip attribute dict used by the steering callback."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steerlit.metrics.attributes import ATTRIBUTE_NAMES, compute_attribute, compute_attributes
from steerlit.metrics.brightness import spectral_centroid

from .synth_audio import click_track, sine

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
