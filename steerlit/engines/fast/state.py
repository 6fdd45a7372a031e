"""State of a fast decoding call, and a one-entry cache that keeps it (and its CUDA graphs) alive.

:class:`FastDecoder` owns everything a step reads or writes: raw ids (B·K, L), the delay pattern
(B·K, L), the device step counter, per-row seeds and the decoder buffers of
:mod:`steerlit.engines.fast.layers`. In bucketed (graph) mode these tensors never move: a new call
with the same shapes refills them in place (:meth:`FastDecoder.load`), so the graphs captured by an
earlier call replay unchanged. :func:`cached_decoder` keeps the last such decoder per model, keyed by
everything a captured graph bakes in (shapes, options, steering layout, weight storage and version).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch

from steerlit.engines.fast.layers import (
    DecoderWeights,
    allocate_buffers,
    decoder_step,
    load_steering,
    load_text,
)
from steerlit.engines.sampling import gumbel_noise, sample_logits


def select_tokens(
    logits: torch.Tensor,
    *,
    batch: int,
    num_codebooks: int,
    cfg: bool,
    guidance_scale: float,
    seeds: torch.Tensor | None,
    step,
    temperature: float,
    top_k: int | None,
) -> torch.Tensor:
    """Next ids (B·K,) from logits (B'·K, V) float32: guidance, then argmax or a per-row sample.

    Mirrors ``PerRowSampler`` + ``ClassifierFreeGuidanceLogitsProcessor`` + greedy argmax; ``step``
    (int or 0-dim device tensor) is the position of the hidden state that produced the logits.
    """
    scores = logits
    if cfg:
        cond, uncond = logits.split(batch * num_codebooks, dim=0)
        scores = uncond + (cond - uncond) * guidance_scale
    if seeds is None:
        return torch.argmax(scores, dim=-1)
    noise = gumbel_noise(seeds, step, num_codebooks, scores.shape[-1])
    out = sample_logits(scores, noise.view(scores.shape), temperature, top_k)
    if cfg:
        out = out.clamp_min(torch.finfo(out.dtype).min / 4)
    return torch.argmax(out, dim=-1)


class FastDecoder:
    """Buffers of one call; :meth:`load` fills them, :meth:`step` runs one decoding step in place.

    ``sampling``: ``guidance_scale``, ``temperature``, ``top_k`` and ``seeded`` (bool).
    ``text_len``: None for exact mode, else the padded text length of the cross-attention buffers.
    """

    def __init__(self, adapter, w: DecoderWeights, *, batch, length, cfg, text_len, sampling, dtype):
        model = adapter.model
        gen = model.generation_config
        device = adapter.device
        # no reference to the top-level model: the cache is keyed weakly by it
        self.w, self.batch, self.K = w, batch, adapter.num_codebooks
        self.audio_encoder, self.apply_mask = model.audio_encoder, model.decoder.apply_delay_pattern_mask
        self.length, self.cfg = length, cfg
        self.bos = gen.decoder_start_token_id if gen.decoder_start_token_id is not None else gen.bos_token_id
        self.pad = gen.pad_token_id
        start = torch.full((batch * self.K, 1), int(self.bos), dtype=torch.long, device=device)
        self.start, self.pattern = model.decoder.build_delay_pattern_mask(
            start, pad_token_id=self.bos, max_length=length
        )
        self.raw = torch.zeros(batch * self.K, length, dtype=torch.long, device=device)
        self.step_t = torch.zeros((), dtype=torch.long, device=device)
        seeded = sampling.pop("seeded")
        self.sampling = dict(
            sampling, seeds=torch.zeros(batch, dtype=torch.long, device=device) if seeded else None
        )
        self.buf = allocate_buffers(w, (2 if cfg else 1) * batch, length, text_len, device, dtype)

    def load(
        self, enc: torch.Tensor, enc_mask: torch.Tensor, steer: dict, seeds: torch.Tensor | None
    ) -> None:
        """Fill the buffers for a new call: text K/V and mask, steering tables, seeds; reset ids/step."""
        load_text(self.w, self.buf, enc, enc_mask)
        load_steering(self.buf, steer)
        if seeds is not None:
            self.sampling["seeds"].copy_(seeds)
        self.raw.zero_()
        self.raw[:, :1] = self.start
        self.step_t.zero_()

    def input_ids(self, pos: torch.Tensor) -> torch.Tensor:
        """Decoder input (B', K) at position ``pos`` (1,): raw ids with the delay mask applied."""
        cur, pat = self.raw.index_select(1, pos), self.pattern.index_select(1, pos)
        ids = torch.where(pat == -1, cur, pat).view(self.batch, self.K)
        return torch.cat([ids, ids]) if self.cfg else ids

    def step(self, t: int | None = None, kv_len: int | None = None, **kw) -> None:
        """One step. ``t`` (host int): exact mode; ``t=None``: bucketed mode at the device step, reading
        ``kv_len`` cache entries (graph-capturable: no host sync)."""
        exact = t is not None
        pos = torch.full((1,), t, dtype=torch.long, device=self.raw.device) if exact else self.step_t.view(1)
        ids = self.input_ids(pos)
        logits = decoder_step(self.w, self.buf, ids, pos, t + 1 if exact else kv_len, exact=exact, **kw)
        step = t if exact else self.step_t
        tok = select_tokens(
            logits, batch=self.batch, num_codebooks=self.K, cfg=self.cfg, step=step, **self.sampling
        )
        self.raw.index_copy_(1, pos + 1, tok.view(-1, 1))
        self.step_t.add_(1)

    def audio(self) -> torch.Tensor:
        """EnCodec decoding of all rows in one call, as at the end of HF ``generate``: (B, S) float32 CPU."""
        ids = self.apply_mask(self.raw, self.pattern)
        ids = ids[ids != self.pad].reshape(self.batch, self.K, -1)[None, ...]
        audio = self.audio_encoder.decode(ids, audio_scales=[None] * self.batch).audio_values
        return audio[:, 0].float().cpu()


@dataclass
class CacheEntry:
    key: tuple
    dec: FastDecoder
    graphs: object | None = None  # a graphs.GraphSet once graphs were captured


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def weights_signature(model) -> tuple:
    """Storage and in-place version of every decoder parameter: graphs read these addresses."""
    return tuple((p.data_ptr(), p._version, p.dtype) for p in model.decoder.parameters())


def cached_decoder(model, key: tuple, make: Callable[[], FastDecoder]) -> CacheEntry:
    """The cached entry for ``model`` if its key matches, else a new one (the old is dropped first)."""
    entry = _CACHE.get(model)
    if entry is not None and entry.key == key:
        return entry
    _CACHE.pop(model, None)
    entry = CacheEntry(key, make())
    _CACHE[model] = entry
    return entry


def cached_entry(model) -> CacheEntry | None:
    """The cached decoder entry of ``model`` (None if it has none)."""
    return _CACHE.get(model)


def cached_model_count() -> int:
    """How many models hold a cached decoder (an entry goes when its model is garbage-collected)."""
    return len(_CACHE)


def clear_fast_cache() -> None:
    """Free every cached decoder (KV caches, fused weights, CUDA graphs)."""
    _CACHE.clear()
