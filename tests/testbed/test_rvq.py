"""Residual VQ: EMA learning, dead-code reset, straight-through gradient."""

import torch

from steerlit.testbed.rvq import EMACodebook, ResidualVQ


def _clustered(n: int = 2000, k: int = 16, d: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(k, d, generator=g) * 4
    return centers[torch.randint(0, k, (n,), generator=g)] + 0.1 * torch.randn(n, d, generator=g)


def _error(cb: EMACodebook, x: torch.Tensor) -> float:
    return float((cb.embed[cb.quantize(x)] - x).pow(2).sum(1).mean())


def test_ema_updates_reduce_quantisation_error():
    torch.manual_seed(0)
    x = _clustered()
    cb = EMACodebook(8, 64, decay=0.8, dead_threshold=0.0)
    cb.train()
    with torch.no_grad():  # start from noisy data points instead of k-means
        init = x[torch.randperm(len(x))[:64]] + 1.5 * torch.randn(64, 8)
        cb.embed.copy_(init)
        cb.embed_avg.copy_(init)
        cb.cluster_size.fill_(1.0)
        cb.inited.fill_(True)
    before = _error(cb, x)
    for _ in range(30):
        cb(x[torch.randint(0, len(x), (256,))])
    assert _error(cb, x) < 0.3 * before


def test_kmeans_init_fits_clusters():
    torch.manual_seed(0)
    x = _clustered(k=8)
    cb = EMACodebook(8, 32)
    cb.train()
    cb(x[:1000])
    assert _error(cb, x) < 0.5


def test_dead_code_reset_revives_unused_codes():
    torch.manual_seed(0)
    x = _clustered(k=4)
    cb = EMACodebook(8, 32, decay=0.5, dead_threshold=0.5)
    cb.train()
    cb(x[:512])
    cb.embed[:8] = 1e3  # far away: never chosen
    cb.embed_avg[:8] = 1e3
    cb.cluster_size[:8] = 0.0
    n = cb.reset_dead_codes(x[:512])
    assert n >= 8
    assert cb.embed[:8].abs().max() < 100  # moved onto data points


def test_rvq_shapes_straight_through_and_commitment():
    torch.manual_seed(0)
    rvq = ResidualVQ(dim=8, codebook_size=32, num_quantizers=4)
    rvq.train()
    z = torch.randn(2, 8, 50, requires_grad=True)
    z_q, codes, commit = rvq(z)
    assert z_q.shape == z.shape and codes.shape == (2, 4, 50) and codes.dtype == torch.int64
    z_q.sum().backward()
    torch.testing.assert_close(z.grad, torch.ones_like(z))  # straight-through
    assert commit.item() >= 0
    rvq.eval()
    codes2 = rvq.encode(z.detach())
    torch.testing.assert_close(rvq.decode(codes2), rvq(z.detach())[0])
