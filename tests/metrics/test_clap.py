"""ClapScorer round trip through a tiny random ClapModel saved offline (real forward passes)."""

from __future__ import annotations

import numpy as np
import pytest
from support.tiny_clap import CORPUS, FE_SR, build_tiny_clap

from steerlit.metrics.clap import ClapScorer

from .synth_audio import click_track, sine, white_noise


@pytest.fixture(scope="module")
def scorer(tmp_path_factory) -> ClapScorer:
    folder = build_tiny_clap(tmp_path_factory.mktemp("tiny_clap"))
    return ClapScorer(str(folder))


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    sr = 22050
    return [
        click_track(120, sr, 3.0),
        sine(440.0, sr, 1.5),
        white_noise(sr, 2.5, seed=1),
        sine(880.0, sr, 5.0) + click_track(90, sr, 5.0),  # longer than the 2 s window
    ]


def test_missing_folder_raises(tmp_path):
    missing = tmp_path / "no_clap_here"
    with pytest.raises(ValueError, match="no_clap_here") as info:
        ClapScorer(str(missing))
    assert "hf download laion/clap-htsat-unfused" in str(info.value)
    assert "metrics.clap_path" in str(info.value)


def test_embeddings(scorer, clips):
    assert scorer.sampling_rate == FE_SR
    audio = scorer.audio_embeddings(clips, 22050)
    assert audio.shape == (4, 16) and audio.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(audio, axis=1), 1.0, atol=1e-5)
    # Deterministic, including the clip longer than the window (windows are averaged, not cropped at random).
    np.testing.assert_allclose(scorer.audio_embeddings(clips, 22050), audio, atol=1e-6)
    # A clip at the extractor's own rate, passed as a (B, samples) batch.
    batch = np.stack([sine(300.0, FE_SR, 1.0), white_noise(FE_SR, 1.0)])
    assert scorer.audio_embeddings(batch, FE_SR).shape == (2, 16)
    text = scorer.text_embeddings(CORPUS[:3])
    assert text.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(text[0], text[1])
    assert scorer.text_embeddings(" ".join(CORPUS * 10)).shape == (1, 16)  # truncated, no crash


def test_clap_score_and_fad(scorer, clips):
    scores = scorer.clap_score(clips, 22050, CORPUS)
    assert scores.shape == (4,)
    assert np.all((scores >= -1.0) & (scores <= 1.0))
    a, t = scorer.audio_embeddings(clips, 22050), scorer.text_embeddings(CORPUS)
    np.testing.assert_allclose(scores, np.sum(a * t, axis=1), atol=1e-5)
    assert scorer.clap_score(clips[:2], 22050, "one prompt for all").shape == (2,)
    with pytest.raises(ValueError):
        scorer.clap_score(clips, 22050, CORPUS[:2])
    assert scorer.embedding_fad(clips, clips, 22050) == pytest.approx(0.0, abs=1e-5)
    other = [0.1 * white_noise(22050, 2.0, seed=s) for s in range(4)]
    assert scorer.embedding_fad(clips, other, 22050) > 0
