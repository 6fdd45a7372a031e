"""Distribution distance between two sets of clips on hand-made (DSP) features.

A weight-free stand-in for FAD: frame-level features (coarse log-mel band levels plus MFCCs) of
every clip in a set are pooled, a Gaussian is fitted to each set, and the Frechet distance
between the two Gaussians is reported. Deterministic and cheap; it reacts to changes of spectral
balance, level and timbre, not to musical content a neural embedding would see. Compare sets
rendered at the same sample rate (the mel filters depend on ``sr``).

Shapes: :func:`dsp_features` returns ``(frames, n_bands + n_mfcc)`` float64 (40 by default);
means are ``(D,)``, covariances ``(D, D)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from steerlit.metrics.audio_input import as_mono, check_sample_rate, remove_dc
from steerlit.metrics.numba_cache import import_librosa, register_warmup, warmup_clip

N_BANDS = 20
N_MFCC = 20
DSP_FEATURE_DIM = N_BANDS + N_MFCC
_LOG_FLOOR = 1e-8  # -80 dB: quieter detail is inaudible and would dominate the distance


def dsp_features(
    audio: np.ndarray,
    sr: int,
    *,
    n_bands: int = N_BANDS,
    n_mfcc: int = N_MFCC,
    n_fft: int = 2048,
    hop_length: int = 512,
) -> np.ndarray:
    """Frame-level DSP features of one clip, ``(frames, n_bands + n_mfcc)`` float64.

    Columns ``[:n_bands]``: log power (dB re full scale, floored at -80 dB) in ``n_bands`` mel
    bands; columns ``[n_bands:]``: the first ``n_mfcc`` MFCCs of a 64-band log-mel spectrogram.
    The levels are absolute, so a gain change moves the features; the clip's DC offset is removed first.
    Clips shorter than ``n_fft`` are zero-padded to one frame.
    """
    check_sample_rate(sr)
    y = remove_dc(as_mono(audio))
    librosa = import_librosa()
    if y.size < n_fft:
        y = np.pad(y, (0, n_fft - y.size))
    stft = librosa.stft(y, n_fft=n_fft, hop_length=hop_length, center=True)
    power = np.ascontiguousarray(np.abs(stft), dtype=np.float64) ** 2
    # Normalise so that a full-scale sine is ~0 dB in its band (Hann window sum = n_fft / 2).
    power /= (n_fft / 4.0) ** 2
    bands = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_bands, norm=None, dtype=np.float64) @ power
    mel64 = (
        librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=max(64, n_mfcc), norm=None, dtype=np.float64) @ power
    )
    log_bands = 10.0 * np.log10(np.maximum(bands, _LOG_FLOOR))
    log_mel64 = 10.0 * np.log10(np.maximum(mel64, _LOG_FLOOR))
    mfcc = librosa.feature.mfcc(S=log_mel64, n_mfcc=n_mfcc)
    return np.concatenate([log_bands, mfcc], axis=0).T


@register_warmup
def _warm_quality() -> None:
    dsp_features(*warmup_clip())


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` of features ``(N, D)``; needs N >= 2."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need features of shape (N >= 2, D), got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _sqrtm(a: np.ndarray) -> np.ndarray:
    from scipy import linalg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = linalg.sqrtm(a)
    return np.asarray(out)


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    *,
    eps: float = 1e-6,
) -> float:
    """Frechet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    ``||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^{1/2})``, with the matrix square
    root from ``scipy.linalg.sqrtm``. If the product is (near-)singular and the root comes back
    non-finite or inaccurate, ``eps * I`` is added to both covariances and it is retried. The
    imaginary part that rounding can leave is dropped (with a warning if it is not negligible).
    The result is clamped at 0.

    Args:
        mu1, mu2: means ``(D,)``.
        sigma1, sigma2: covariances ``(D, D)``.
        eps: diagonal offset for the singular case.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = (
        np.atleast_2d(np.asarray(sigma1, np.float64)),
        np.atleast_2d(np.asarray(sigma2, np.float64)),
    )
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape}/{mu2.shape}, sigma {sigma1.shape}/{sigma2.shape}")
    diff = mu1 - mu2
    prod = sigma1 @ sigma2
    covmean = _sqrtm(prod)
    scale = max(np.linalg.norm(prod), np.finfo(np.float64).tiny)
    bad = not np.isfinite(covmean).all() or np.linalg.norm(covmean @ covmean - prod) / scale > 1e-4
    if bad:
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.max(np.abs(np.diagonal(covmean).imag)) if covmean.size else 0.0
        if imag > 1e-3 * max(1.0, np.max(np.abs(np.diagonal(covmean).real))):
            warnings.warn(
                f"frechet_distance: dropping imaginary component {imag:.3g}", RuntimeWarning, stacklevel=2
            )
        covmean = covmean.real
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))
    return max(value, 0.0)


def pooled_features(clips: Sequence[np.ndarray], sr: int, **feature_kwargs) -> np.ndarray:
    """Frame features of all clips stacked, ``(sum of frames, D)``."""
    if len(clips) == 0:
        raise ValueError("need at least one clip")
    return np.concatenate([dsp_features(c, sr, **feature_kwargs) for c in clips], axis=0)


def dsp_frechet(
    set_a: Sequence[np.ndarray],
    set_b: Sequence[np.ndarray],
    sr: int,
    **feature_kwargs,
) -> float:
    """Frechet distance between the pooled :func:`dsp_features` frames of two sets of clips.

    Args:
        set_a, set_b: lists of mono clips ``(samples_i,)`` at sample rate ``sr``.
        feature_kwargs: passed to :func:`dsp_features`.
    """
    mu_a, sig_a = feature_stats(pooled_features(set_a, sr, **feature_kwargs))
    mu_b, sig_b = feature_stats(pooled_features(set_b, sr, **feature_kwargs))
    return frechet_distance(mu_a, sig_a, mu_b, sig_b)
