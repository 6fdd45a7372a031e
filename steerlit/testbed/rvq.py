"""Residual vector quantiser trained with EMA codebooks (SoundStream / EnCodec style).

Each stage is a Euclidean codebook ``(codebook_size, dim)`` updated by exponential moving
averages of the assigned vectors (not by gradients), initialised by k-means on the first batch,
with dead codes (EMA cluster size below a threshold) replaced by random vectors of the current
batch. The straight-through estimator passes the decoder's gradient to the encoder, and a
commitment loss pulls the encoder output towards its quantised value.

The buffers are named like transformers' ``EncodecEuclideanCodebook`` (``embed``,
``embed_avg``, ``cluster_size``, ``inited``) so that copying them into an ``EncodecModel`` is
one ``copy_`` per stage; nearest-neighbour search uses the same distance formula, so the codes
match exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def kmeans(samples: torch.Tensor, num_clusters: int, num_iters: int = 10) -> torch.Tensor:
    """Plain k-means. ``samples`` (N, D) -> centroids (num_clusters, D).

    When N < num_clusters, samples are drawn with replacement (duplicates get re-seeded later by
    the dead-code reset).
    """
    n = samples.shape[0]
    if n >= num_clusters:
        idx = torch.randperm(n, device=samples.device)[:num_clusters]
    else:
        idx = torch.randint(0, n, (num_clusters,), device=samples.device)
    means = samples[idx].clone()
    for _ in range(num_iters):
        assign = torch.cdist(samples, means).argmin(dim=-1)
        counts = torch.bincount(assign, minlength=num_clusters).to(samples.dtype)
        sums = torch.zeros_like(means).index_add_(0, assign, samples)
        new_means = sums / counts.clamp(min=1)[:, None]
        means = torch.where(counts[:, None] > 0, new_means, means)
    return means


class EMACodebook(nn.Module):
    """One Euclidean codebook with EMA updates, k-means init and dead-code reset.

    Args:
        dim: vector size D.
        codebook_size: number of entries V.
        decay: EMA decay of counts and sums.
        eps: Laplace smoothing of the counts.
        dead_threshold: entries whose EMA count falls below this are re-seeded from the batch.
        kmeans_iters: k-means iterations on the first training batch.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        decay: float = 0.99,
        eps: float = 1e-5,
        dead_threshold: float = 1.0,
        kmeans_iters: int = 10,
    ):
        super().__init__()
        self.dim, self.codebook_size = dim, codebook_size
        self.decay, self.eps = decay, eps
        self.dead_threshold, self.kmeans_iters = dead_threshold, kmeans_iters
        self.register_buffer("inited", torch.tensor([False]))
        self.register_buffer("embed", torch.randn(codebook_size, dim) * 0.01)
        self.register_buffer("embed_avg", self.embed.clone())
        self.register_buffer("cluster_size", torch.zeros(codebook_size))

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest entry per row, with the same formula as ``EncodecEuclideanCodebook.quantize``.

        ``x`` (N, D) -> indices (N,).
        """
        embed = self.embed.t()
        dist = -(x.pow(2).sum(1, keepdim=True) - 2 * x @ embed + embed.pow(2).sum(0, keepdim=True))
        return dist.max(dim=-1).indices

    @torch.no_grad()
    def _init(self, x: torch.Tensor) -> None:
        means = kmeans(x, self.codebook_size, self.kmeans_iters)
        self.embed.copy_(means)
        self.embed_avg.copy_(means)
        self.cluster_size.fill_(1.0)
        self.inited.fill_(True)

    @torch.no_grad()
    def _ema_update(self, x: torch.Tensor, idx: torch.Tensor) -> None:
        onehot = F.one_hot(idx, self.codebook_size).to(x.dtype)  # (N, V)
        counts = onehot.sum(0)
        sums = onehot.t() @ x  # (V, D)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_avg.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.codebook_size * self.eps) * n
        self.embed.copy_(self.embed_avg / smoothed[:, None])

    @torch.no_grad()
    def reset_dead_codes(self, x: torch.Tensor) -> int:
        """Re-seed entries with EMA count < ``dead_threshold`` from random rows of ``x`` (N, D).

        Returns the number of entries reset.
        """
        dead = self.cluster_size < self.dead_threshold
        num_dead = int(dead.sum())
        if num_dead == 0:
            return 0
        pick = torch.randint(0, x.shape[0], (num_dead,), device=x.device)
        self.embed[dead] = x[pick]
        self.embed_avg[dead] = x[pick] * self.dead_threshold
        self.cluster_size[dead] = self.dead_threshold
        return num_dead

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (N, D) -> (quantised (N, D) without straight-through, indices (N,)).

        In training mode the first call runs k-means, then every call updates the EMA and
        resets dead codes.
        """
        xd = x.detach().float()
        if self.training and not bool(self.inited.item()):
            self._init(xd)
        idx = self.quantize(xd)
        if self.training:
            self._ema_update(xd, idx)
            self.reset_dead_codes(xd)
        return F.embedding(idx, self.embed), idx


class ResidualVQ(nn.Module):
    """Residual VQ over ``num_quantizers`` EMA codebooks.

    ``forward(z)`` with ``z`` (B, D, T) returns ``(z_q, codes, commit_loss)``: ``z_q`` (B, D, T)
    with the straight-through gradient, ``codes`` (B, num_quantizers, T) int64 and a scalar
    commitment loss (mean squared distance between each stage's residual and its quantised value).
    """

    def __init__(self, dim: int, codebook_size: int, num_quantizers: int = 4, **codebook_kwargs):
        super().__init__()
        self.dim, self.codebook_size, self.num_quantizers = dim, codebook_size, num_quantizers
        self.layers = nn.ModuleList(
            [EMACodebook(dim, codebook_size, **codebook_kwargs) for _ in range(num_quantizers)]
        )

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, d, t = z.shape
        flat = z.permute(0, 2, 1).reshape(-1, d)  # (B*T, D)
        residual = flat
        quantized = torch.zeros_like(flat)
        codes, commit = [], flat.new_zeros(())
        for layer in self.layers:
            q, idx = layer(residual)
            commit = commit + F.mse_loss(residual, q.detach())
            quantized = quantized + q
            residual = residual - q.detach()
            codes.append(idx.view(b, t))
        z_q = flat + (quantized - flat).detach()  # straight-through
        z_q = z_q.view(b, t, d).permute(0, 2, 1)
        return z_q, torch.stack(codes, dim=1), commit / self.num_quantizers

    @torch.no_grad()
    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` (B, D, T) -> codes (B, num_quantizers, T), no updates."""
        b, d, t = z.shape
        residual = z.permute(0, 2, 1).reshape(-1, d)
        codes = []
        for layer in self.layers:
            idx = layer.quantize(residual)
            residual = residual - F.embedding(idx, layer.embed)
            codes.append(idx.view(b, t))
        return torch.stack(codes, dim=1)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes`` (B, num_quantizers, T) -> z_q (B, D, T)."""
        out = sum(F.embedding(codes[:, i], layer.embed) for i, layer in enumerate(self.layers))
        return out.permute(0, 2, 1)
