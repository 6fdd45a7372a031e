"""Kernel (MMD) distance between a steered set of clips and its α = 0 references, with a noise floor.

An unbiased squared maximum mean discrepancy (Gretton et al., JMLR 2012), as the Kernel Audio Distance (KAD,
Chung et al. 2025) uses, on one embedding per clip::

    MMD²_u = 1/(m(m-1)) Σ_{i≠j} k(x_i, x_j) + 1/(n(n-1)) Σ_{i≠j} k(y_i, y_j) - 2/(mn) Σ_{i,j} k(x_i, y_j)

Unlike the Fréchet distance its expectation is exactly 0 when both sets come from one distribution, whatever the
set sizes (so it can come out slightly negative), which suits the 8-24 clips per α of a grid.

- Kernel: Gaussian RBF ``k(a, b) = exp(-||a - b||² / (2 σ²))``. Bandwidth σ: the median pairwise Euclidean
  distance between the reference (α = 0) embeddings (the median heuristic, computed on the reference only, so every
  α compared with one reference uses one kernel and the values compare across α), unless a fixed ``bandwidth`` is
  given. KAD's toolkit (kadtk) also uses a Gaussian kernel with a median-distance bandwidth, and multiplies MMD² by
  100; the values here are not scaled.
- Embedding (default, no weights): each clip is loudness-normalised to ``target_lufs`` (-23 LUFS, BS.1770
  integrated loudness; silent clips are left as they are), then the mean and the standard deviation over frames of
  :func:`~steerlit.metrics.quality.dsp_features` (20 log-mel band levels and 20 MFCCs, all in dB) are concatenated:
  80 values in dB, compared without further scaling. A harmless gain change therefore does not move it. Other
  embeddings (CLAP, EnCodec latents) go through :func:`kernel_distance_embeddings` as ``(clips, dim)`` arrays.
- Noise floor: the same statistic between two disjoint random halves of the reference set (``n_splits`` seeded
  splits of ``n_reference // 2`` clips each), reported as its mean and its ``floor_quantile`` quantile. Halves are
  smaller than the sets compared, so the floor is wide rather than narrow: a value below ``noise_floor_high`` is
  not distinguishable from α = 0 at this n.

Shapes: clips are mono ``(samples,)``; embeddings ``(clips, dim)``; kernel matrices ``(m, n)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from steerlit.metrics.audio_input import as_clip_list
from steerlit.metrics.loudness import integrated_loudness
from steerlit.metrics.quality import dsp_features

TARGET_LUFS = -23.0
KERNEL = "gaussian"


@dataclass(frozen=True)
class KernelDistance:
    """Result of :func:`kernel_distance`.

    Attributes:
        value: unbiased MMD² between the steered and the reference embeddings.
        noise_floor: mean MMD² between two disjoint random halves of the reference set (``nan`` below 4 clips).
        noise_floor_high: the ``floor_quantile`` quantile of those split values.
        n_steered, n_reference: clips in each set.
        kernel: ``"gaussian"``.
        bandwidth: the kernel's σ (in embedding units: dB for the DSP embedding).
        n_splits: random splits behind the noise floor.
    """

    value: float
    noise_floor: float
    noise_floor_high: float
    n_steered: int
    n_reference: int
    kernel: str
    bandwidth: float
    n_splits: int

    @property
    def within_noise(self) -> bool:
        """Whether ``value`` is at most the upper noise-floor quantile."""
        return bool(self.value <= self.noise_floor_high)


def loudness_normalise(audio, sr: int, target_lufs: float = TARGET_LUFS) -> np.ndarray:
    """The clip scaled to ``target_lufs`` integrated loudness, float64 ``(samples,)``; a clip whose loudness is
    undefined (silent, shorter than 400 ms) is returned unscaled. No limiting: peaks may exceed 1."""
    y = np.asarray(as_clip_list([audio])[0], dtype=np.float64)
    loudness = integrated_loudness(y, sr)
    if not np.isfinite(loudness):
        return y
    return y * 10.0 ** ((target_lufs - loudness) / 20.0)


def clip_embeddings(
    clips, sr: int, *, target_lufs: float | None = TARGET_LUFS, **feature_kwargs
) -> np.ndarray:
    """One DSP embedding per clip, ``(clips, 2 * D)`` float64: mean and std over frames of ``dsp_features``.

    Args:
        clips: a list of mono clips ``(samples_i,)`` or a batch ``(clips, samples)``.
        sr: sample rate (the mel filters depend on it: compare sets at one rate).
        target_lufs: loudness each clip is normalised to first; ``None`` keeps levels as they are.
        feature_kwargs: passed to :func:`~steerlit.metrics.quality.dsp_features`.
    """
    out = []
    for clip in as_clip_list(clips):
        y = clip if target_lufs is None else loudness_normalise(clip, sr, target_lufs)
        frames = dsp_features(y, sr, **feature_kwargs)
        out.append(np.concatenate([frames.mean(axis=0), frames.std(axis=0)]))
    if not out:
        raise ValueError("need at least one clip")
    return np.stack(out)


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d2, 0.0)


def median_bandwidth(embeddings) -> float:
    """Median pairwise Euclidean distance between the rows of ``embeddings`` ``(n >= 2, dim)``."""
    e = _embeddings(embeddings, "embeddings")
    i, j = np.triu_indices(e.shape[0], k=1)
    return float(np.median(np.sqrt(_squared_distances(e, e)[i, j])))


def gaussian_kernel(a, b, bandwidth: float) -> np.ndarray:
    """``exp(-||a_i - b_j||² / (2 bandwidth²))``, ``(len(a), len(b))``."""
    if not bandwidth > 0:
        raise ValueError(f"need a kernel bandwidth > 0, got {bandwidth}")
    return np.exp(-_squared_distances(np.atleast_2d(a), np.atleast_2d(b)) / (2.0 * bandwidth**2))


def _embeddings(x, name: str) -> np.ndarray:
    e = np.asarray(x, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] < 2:
        raise ValueError(f"{name}: need embeddings of shape (clips >= 2, dim), got {e.shape}")
    if not np.isfinite(e).all():
        raise ValueError(f"{name}: embeddings contain NaN or inf")
    return e


def mmd2_unbiased(x, y, bandwidth: float) -> float:
    """Unbiased MMD² between embeddings ``x`` ``(m >= 2, dim)`` and ``y`` ``(n >= 2, dim)`` (Gaussian kernel)."""
    x, y = _embeddings(x, "x"), _embeddings(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y embeddings differ in width: {x.shape[1]} vs {y.shape[1]}")
    m, n = x.shape[0], y.shape[0]
    kxx, kyy = gaussian_kernel(x, x, bandwidth), gaussian_kernel(y, y, bandwidth)
    within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * gaussian_kernel(x, y, bandwidth).mean())


def split_noise_floor(reference, bandwidth: float, *, n_splits: int = 200, seed: int = 0) -> np.ndarray:
    """MMD² between two disjoint random halves of ``reference`` ``(n >= 4, dim)``, one value per split ``(n_splits,)``.

    One kernel matrix; each split is a pair of 0/1 membership rows, so all splits are a few matrix products.
    """
    ref = _embeddings(reference, "reference")
    n = ref.shape[0]
    if n < 4:
        raise ValueError(f"a noise floor needs at least 4 reference clips (two halves of 2), got {n}")
    h = n // 2
    k = gaussian_kernel(ref, ref, bandwidth)
    np.fill_diagonal(k, 0.0)
    order = np.argsort(np.random.default_rng(seed).random((n_splits, n)), axis=1)
    rows = np.arange(n_splits)[:, None]
    a = np.zeros((n_splits, n))
    b = np.zeros((n_splits, n))
    a[rows, order[:, :h]] = 1.0
    b[rows, order[:, h : 2 * h]] = 1.0
    within = ((a @ k) * a).sum(1) + ((b @ k) * b).sum(1)
    return within / (h * (h - 1)) - 2.0 * ((a @ k) * b).sum(1) / (h * h)


def kernel_distance_embeddings(
    steered,
    reference,
    *,
    bandwidth: float | None = None,
    n_splits: int = 200,
    floor_quantile: float = 0.95,
    seed: int = 0,
) -> KernelDistance:
    """:class:`KernelDistance` between embedding sets ``steered`` ``(m, dim)`` and ``reference`` ``(n, dim)``.

    ``bandwidth=None`` takes the median pairwise distance of ``reference`` (if that is 0, of both sets pooled).
    """
    x, y = _embeddings(steered, "steered"), _embeddings(reference, "reference")
    if bandwidth is None:
        bandwidth = median_bandwidth(y) or median_bandwidth(np.concatenate([x, y])) or 1.0
    value = mmd2_unbiased(x, y, bandwidth)
    if y.shape[0] >= 4:
        splits = split_noise_floor(y, bandwidth, n_splits=n_splits, seed=seed)
        floor, floor_high = float(splits.mean()), float(np.quantile(splits, floor_quantile))
    else:
        floor = floor_high = float("nan")
    return KernelDistance(
        value, floor, floor_high, x.shape[0], y.shape[0], KERNEL, float(bandwidth), n_splits
    )


def kernel_distance(
    steered: Sequence[np.ndarray],
    reference: Sequence[np.ndarray],
    sr: int,
    *,
    target_lufs: float | None = TARGET_LUFS,
    bandwidth: float | None = None,
    n_splits: int = 200,
    floor_quantile: float = 0.95,
    seed: int = 0,
) -> KernelDistance:
    """Kernel distance between steered clips and their α = 0 references on the loudness-normalised DSP embedding.

    Args:
        steered, reference: lists of mono clips ``(samples_i,)`` at ``sr`` (at least 2 each; 4 references for a
            noise floor).
        target_lufs: loudness every clip is normalised to before embedding (``None``: none).
        bandwidth: fixed kernel σ in dB; ``None``: median heuristic on the reference embeddings.
        n_splits, floor_quantile, seed: the noise floor's random half splits.
    """
    return kernel_distance_embeddings(
        clip_embeddings(steered, sr, target_lufs=target_lufs),
        clip_embeddings(reference, sr, target_lufs=target_lufs),
        bandwidth=bandwidth,
        n_splits=n_splits,
        floor_quantile=floor_quantile,
        seed=seed,
    )
