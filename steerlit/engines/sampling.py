"""Per-row random streams for sampling, and capture of the generated codes.

HF ``generate`` samples from the global RNG, so a row's audio would depend on its batch
neighbours. :class:`PerRowSampler` instead draws Gumbel noise from a counter-based hash of
``(row seed, decoding step, codebook, token)`` after temperature and top-k, and ``generate`` runs
in greedy mode: ``argmax(logits/T + Gumbel)`` is an exact sample from the top-k softmax. The noise
is the same on every device and in every batch, so a row's codes depend only on its own seed and
steering. The fast engine draws from the same function.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor, StoppingCriteria

_MASK64 = (1 << 64) - 1


def _signed(x: int) -> int:
    x &= _MASK64
    return x - (1 << 64) if x >= 1 << 63 else x


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_M1 = _signed(0xBF58476D1CE4E5B9)
_M2 = _signed(0x94D049BB133111EB)


def _lshr(x: torch.Tensor, n: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> n) & ((1 << (64 - n)) - 1)


def splitmix64(x: torch.Tensor) -> torch.Tensor:
    """The splitmix64 finaliser on int64 tensors (wrapping arithmetic, identical on CPU and GPU)."""
    z = x + _GOLDEN
    z = (z ^ _lshr(z, 30)) * _M1
    z = (z ^ _lshr(z, 27)) * _M2
    return z ^ _lshr(z, 31)


def counter_uniform(
    seeds: torch.Tensor, step: int | torch.Tensor, num_codebooks: int, vocab: int
) -> torch.Tensor:
    """Uniform(0, 1) noise (R, K, V) in float64 from row seeds (R,) at one decoding step."""
    device = seeds.device
    step = torch.as_tensor(step, dtype=torch.int64, device=device)
    key = splitmix64(splitmix64(seeds.to(torch.int64)) + step)  # (R,)
    idx = torch.arange(num_codebooks * vocab, device=device, dtype=torch.int64).view(1, num_codebooks, vocab)
    bits = splitmix64(key.view(-1, 1, 1) * 0x100000001B3 + idx)
    return (_lshr(bits, 11).double() + 0.5) / float(1 << 53)


def gumbel_noise(seeds: torch.Tensor, step, num_codebooks: int, vocab: int) -> torch.Tensor:
    u = counter_uniform(seeds, step, num_codebooks, vocab)
    return -torch.log(-torch.log(u))


def sample_logits(
    scores: torch.Tensor, noise: torch.Tensor, temperature: float, top_k: int | None
) -> torch.Tensor:
    """Scores (N, V) -> perturbed scores whose argmax is a top-k/temperature sample."""
    scores = scores.float() / float(temperature)
    if top_k is not None and 0 < top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    return scores + noise.to(scores.dtype)


class PerRowSampler(LogitsProcessor):
    """Logits processor for MusicGen ``generate(do_sample=False)``; scores are (R·K, V) grouped by prompt.

    MusicGen appends its classifier-free-guidance processor *after* user processors, so under
    guidance this one sees (2R·K, V): it applies guidance itself, samples, and returns the result
    twice (masked entries finite), which HF's ``u + g·(c − u)`` then passes through unchanged.
    """

    def __init__(
        self,
        seeds,
        num_codebooks: int,
        temperature: float = 1.0,
        top_k: int | None = 250,
        guidance_scale: float = 1.0,
    ):
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}; use greedy decoding instead.")
        self.seeds = torch.as_tensor(list(seeds), dtype=torch.int64)
        self.num_codebooks, self.temperature, self.top_k = num_codebooks, temperature, top_k
        self.guidance_scale = guidance_scale

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        rows = len(self.seeds) * self.num_codebooks
        guided = scores.shape[0] == 2 * rows and self.guidance_scale > 1
        if guided:
            cond, uncond = scores.split(rows, dim=0)
            scores = uncond + (cond - uncond) * self.guidance_scale
        elif scores.shape[0] != rows:
            raise ValueError(
                f"{len(self.seeds)} seeds for {scores.shape[0] // self.num_codebooks} rows: "
                "give one seed per prompt."
            )
        step = input_ids.shape[-1] - 1  # position of the hidden state that produced these scores
        noise = gumbel_noise(self.seeds.to(scores.device), step, self.num_codebooks, scores.shape[-1])
        out = sample_logits(scores, noise.view(scores.shape), self.temperature, self.top_k)
        if guided:
            out = out.clamp_min(torch.finfo(out.dtype).min / 4)
            out = torch.cat([out, out], dim=0)
        return out


class SequenceCapture(StoppingCriteria):
    """Keeps the last ``input_ids`` (R·K, 1 + N) that ``generate`` shows; never stops generation."""

    def __init__(self):
        self.sequences: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        self.sequences = input_ids.detach()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
