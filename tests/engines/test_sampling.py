import torch

from steerlit.engines.sampling import counter_uniform, gumbel_noise, sample_logits, splitmix64


def test_counter_noise_is_a_pure_function_of_seed_and_step():
    a = counter_uniform(torch.tensor([1, 2, 3]), 7, 4, 16)
    b = counter_uniform(torch.tensor([3, 1]), 7, 4, 16)
    assert torch.equal(a[0], b[1]) and torch.equal(a[2], b[0])
    assert not torch.equal(a[0], counter_uniform(torch.tensor([1]), 8, 4, 16)[0])
    assert ((a > 0) & (a < 1)).all()


def test_uniformity_and_known_splitmix_value():
    u = counter_uniform(torch.arange(64), 0, 4, 1024).flatten()
    assert abs(float(u.mean()) - 0.5) < 0.01 and abs(float(u.var()) - 1 / 12) < 0.005
    # splitmix64(0) reference value (Vigna), as a signed int64
    assert int(splitmix64(torch.tensor([0]))[0]) == 0xE220A8397B1DCDAF - (1 << 64)


def test_gumbel_max_samples_the_softmax():
    logits = torch.log(torch.tensor([0.1, 0.2, 0.7]))
    seeds = torch.arange(4000)
    noise = gumbel_noise(seeds, 0, 1, 3)[:, 0]
    picks = sample_logits(logits.expand(4000, 3), noise, temperature=1.0, top_k=None).argmax(-1)
    freq = torch.bincount(picks, minlength=3).float() / 4000
    torch.testing.assert_close(freq, torch.tensor([0.1, 0.2, 0.7]), atol=0.03, rtol=0)
    top1 = sample_logits(logits.expand(50, 3), gumbel_noise(seeds[:50], 0, 1, 3)[:, 0], 1.0, top_k=1).argmax(
        -1
    )
    assert (top1 == 2).all()
