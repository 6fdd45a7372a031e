"""Baseline directions: PCA of contrastive differences and random directions.

Both are pure functions on tensors. ``pca_diff`` follows the "PCA of paired differences" recipe
(RepE-style): with matched pairs (twins that differ only in the concept words) it takes the first
principal component of ``pos_i - neg_i``; without pairs it pairs positives and negatives at random.
Its sign is fixed to agree with the difference of means.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from steerlit.directions.diffmean import diff_mean


def pca_diff(
    pos: torch.Tensor,
    neg: torch.Tensor,
    pairs: Sequence[tuple[int, int]] | None = None,
    *,
    seed: int = 0,
    center: bool = False,
) -> torch.Tensor:
    """First principal direction (unit (H,) float32) of contrastive differences.

    pos (N1, H), neg (N2, H). ``pairs``: (i, j) row indices into pos and neg of matched twins; None
    pairs ``min(N1, N2)`` random positives with random negatives (``seed``). ``center=False`` takes the
    top right-singular vector of the uncentred differences (the mean difference counts, as in RepE);
    ``center=True`` removes their mean first (pure variance). Sign: positive dot with diff-mean.
    """
    if pos.dim() != 2 or neg.dim() != 2 or pos.shape[1] != neg.shape[1]:
        raise ValueError(
            f"pca_diff needs (N1, H) and (N2, H), got {tuple(pos.shape)} and {tuple(neg.shape)}."
        )
    if pairs is None:
        n = min(len(pos), len(neg))
        if n == 0:
            raise ValueError("pca_diff needs examples of both classes.")
        g = torch.Generator().manual_seed(seed)
        i = torch.randperm(len(pos), generator=g)[:n]
        j = torch.randperm(len(neg), generator=g)[:n]
    else:
        if len(pairs) == 0:
            raise ValueError("pca_diff got an empty list of pairs.")
        i = torch.tensor([p[0] for p in pairs])
        j = torch.tensor([p[1] for p in pairs])
    diffs = pos.double()[i] - neg.double()[j]  # (n, H)
    if center:
        diffs = diffs - diffs.mean(0)
    _, _, vh = torch.linalg.svd(diffs, full_matrices=False)
    v = vh[0]
    if torch.dot(v, diff_mean(pos, neg).double()) < 0:
        v = -v
    return (v / v.norm()).float()


def random_direction(h: int, norm: float = 1.0, seed: int = 0) -> torch.Tensor:
    """A Gaussian direction (h,) float32 scaled to ``norm``, reproducible from ``seed``."""
    g = torch.Generator().manual_seed(int(seed))
    v = torch.randn(h, generator=g, dtype=torch.float64)
    return (v / v.norm() * norm).float()
