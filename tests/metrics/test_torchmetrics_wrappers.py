"""torchmetrics wrappers: two updates then compute equal the one-shot functions; reset works."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from steerlit.metrics.attributes import compute_attribute
from steerlit.metrics.quality import dsp_frechet
from steerlit.metrics.tempo import estimate_tempo, tempo_accuracy1, tempo_accuracy2
from steerlit.metrics.torchmetrics_wrappers import DSPFrechetDistance, MeanAttribute, TempoAccuracy

from .synth_audio import click_track, lowpass, sine, white_noise

SR = 16000


@pytest.fixture(scope="module")
def clicks() -> list[np.ndarray]:
    return [click_track(bpm, SR, 4.0, seed=i) for i, bpm in enumerate((90, 120, 150, 100))]


def test_tempo_accuracy_from_bpm_values():
    m = TempoAccuracy(target_bpm=100.0, octave_aware=False)
    m.update(bpm=[100.0, 200.0])
    m.update(bpm=torch.tensor([101.0, float("nan"), 96.0]))
    est = np.array([100.0, 200.0, 101.0, np.nan, 96.0])
    assert m.compute().item() == pytest.approx(tempo_accuracy1(est, 100.0).mean())
    m2 = TempoAccuracy(octave_aware=True)
    m2.update(bpm=[100.0, 200.0], target=[100.0, 100.0])
    m2.update(bpm=[50.0], target=120.0)
    assert m2.compute().item() == pytest.approx(
        tempo_accuracy2([100.0, 200.0, 50.0], [100.0, 100.0, 120.0]).mean()
    )
    m2.reset()
    assert math.isnan(m2.compute().item())
    with pytest.raises(ValueError):
        m2.update(bpm=[100.0])  # no target anywhere
    with pytest.raises(ValueError):
        m.update()


def test_tempo_accuracy_from_audio(clicks):
    m = TempoAccuracy(octave_aware=True)
    m.update(clicks[:2], SR, target=[90.0, 120.0])
    m.update(np.stack(clicks[2:]), SR, target=[150.0, 100.0])
    est = [estimate_tempo(c, SR).bpm for c in clicks]
    expected = tempo_accuracy2(est, [90.0, 120.0, 150.0, 100.0]).mean()
    assert m.compute().item() == pytest.approx(expected)
    assert expected >= 0.75


def test_mean_attribute(clicks):
    m = MeanAttribute("centroid_hz")
    clips = [sine(500.0, SR, 1.0), sine(1500.0, SR, 1.0), white_noise(SR, 1.0), np.zeros(SR, np.float32)]
    m.update(clips[:2], SR)
    m.update(clips[2:], SR)
    values = np.array([compute_attribute(c, SR, "centroid_hz") for c in clips])
    assert m.compute().item() == pytest.approx(np.nanmean(values))
    assert m.skipped.item() == 1  # the silent clip
    m.reset()
    assert math.isnan(m.compute().item())
    m.update(values=torch.tensor([1.0, 3.0]))
    assert m.compute().item() == pytest.approx(2.0)
    bpm = MeanAttribute("bpm")
    bpm.update(clicks[:1], SR)
    assert bpm.compute().item() == pytest.approx(estimate_tempo(clicks[0], SR).bpm)
    with pytest.raises(KeyError):
        MeanAttribute("nope")


def test_dsp_frechet_distance_streaming(clicks):
    real = [c + sine(300.0, SR, 4.0, 0.1) for c in clicks]
    fake = [lowpass(c, SR, 2000.0) for c in real]
    m = DSPFrechetDistance(SR)
    assert math.isnan(m.compute().item())
    m.update(real[:2], real=True)
    m.update(fake[:3], real=False)
    m.update(torch.from_numpy(np.stack(real[2:])), real=True)
    m.update(fake[3:], real=False)
    assert m.compute().item() == pytest.approx(dsp_frechet(real, fake, SR), rel=1e-6)
    m.reset()
    m.update(real, real=True)
    m.update(real, real=False)
    assert m.compute().item() == pytest.approx(0.0, abs=1e-6)
    assert m.real_outer.shape == (40, 40)


def test_merged_rank_states_equal_one_metric(clicks):
    """``merge_state`` applies each state's ``dist_reduce_fx`` as a DDP sync would."""
    real = [c + sine(300.0, SR, 4.0, 0.1) for c in clicks]
    fake = [lowpass(c, SR, 2000.0) for c in real]
    rank0, rank1, single = DSPFrechetDistance(SR), DSPFrechetDistance(SR), DSPFrechetDistance(SR)
    rank0.update(real[:2], real=True)
    rank0.update(fake[:1], real=False)
    rank1.update(real[2:], real=True)
    rank1.update(fake[1:], real=False)
    single.update(real, real=True)
    single.update(fake, real=False)
    rank0.merge_state(rank1)
    assert rank0.compute().item() == pytest.approx(single.compute().item(), rel=1e-6)

    a, b = MeanAttribute("rms_dbfs"), MeanAttribute("rms_dbfs")
    a.update(values=[-10.0, np.nan])
    b.update(values=[-20.0, -30.0])
    a.merge_state(b)
    assert a.compute().item() == pytest.approx(-20.0) and a.skipped.item() == 1

    t0, t1 = TempoAccuracy(target_bpm=120.0), TempoAccuracy(target_bpm=120.0)
    t0.update(bpm=[120.0])
    t1.update(bpm=[60.0, 90.0, 121.0])
    t0.merge_state(t1)
    assert t0.compute().item() == pytest.approx(0.75)
