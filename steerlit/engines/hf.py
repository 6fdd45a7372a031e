"""The ``hf`` engine: HF ``MusicgenForConditionalGeneration.generate`` with per-row seeds and steering hooks.

It is the reference every other engine must reproduce: it runs any model and any HF ``generate`` option.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import torch
from transformers import LogitsProcessorList, StoppingCriteriaList

from steerlit.engines.base import DecodeRequest, EngineName, GenerationOutput
from steerlit.engines.sampling import PerRowSampler, SequenceCapture
from steerlit.intervene.steer import RowSteering, Steering


def delay_masked(model, sequences: torch.Tensor) -> torch.Tensor:
    """What the decoder saw: raw ids (B·K, L) with MusicGen's delay-pattern mask applied."""
    dec = model.decoder
    bos = model.generation_config.decoder_start_token_id
    start = torch.full((sequences.shape[0], 1), bos, dtype=torch.long, device=sequences.device)
    _, mask = dec.build_delay_pattern_mask(start, pad_token_id=bos, max_length=sequences.shape[-1])
    return dec.apply_delay_pattern_mask(sequences, mask)


def codes_from_sequences(sequences: torch.Tensor, num_codebooks: int) -> torch.Tensor:
    """Undo the delay pattern: (B·K, 1+N) -> (B, K, F) with F = N - (K - 1)."""
    rows, length = sequences.shape
    frames = length - 1 - (num_codebooks - 1)
    if frames < 1:
        raise ValueError(f"Too few decoding steps ({length - 1}) for {num_codebooks} codebooks.")
    seq = sequences.view(rows // num_codebooks, num_codebooks, length)
    return torch.stack([seq[:, k, 1 + k : 1 + k + frames] for k in range(num_codebooks)], dim=1)


def generate(
    adapter,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    guidance_scale: float = 3.0,
    seeds: Sequence[int] | None = None,
    temperature: float = 1.0,
    top_k: int | None = 250,
    steering: Sequence[RowSteering] | RowSteering | None = None,
    decode_audio: bool = True,
    **generate_kwargs,
) -> GenerationOutput:
    """Generate one clip per prompt.

    ``seeds=None`` is greedy decoding; otherwise each row samples from its own counter-based stream
    (:mod:`steerlit.engines.sampling`). ``steering``: one RowSteering per prompt or one for all.
    ``generate_kwargs`` go to HF ``generate`` (e.g. ``use_cache=False``).
    """
    prompts = list(prompts)
    if seeds is not None and len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts: give one seed per prompt.")
    model = adapter.model
    inputs = adapter.tokenize(prompts)
    capture = SequenceCapture()
    processors = LogitsProcessorList()
    if seeds is not None:
        processors.append(PerRowSampler(seeds, adapter.num_codebooks, temperature, top_k, guidance_scale))
    ctx = Steering(adapter, steering) if steering else nullcontext()
    with torch.inference_mode(), ctx:
        audio = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            guidance_scale=guidance_scale,
            logits_processor=processors,
            stopping_criteria=StoppingCriteriaList([capture]),
            **generate_kwargs,
        )
    sequences = capture.sequences.cpu()
    codes = codes_from_sequences(sequences, adapter.num_codebooks)
    wav = audio[:, 0].float().cpu() if decode_audio else None
    return GenerationOutput(codes=codes, audio=wav, sequences=sequences, sample_rate=adapter.sample_rate)


class HFEngine:
    """The :class:`~steerlit.engines.base.Engine` over :func:`generate`; ``request.options`` are HF ``generate``
    keyword arguments (e.g. ``use_cache=False``)."""

    name: EngineName = "hf"

    def unsupported_reason(self, adapter, request: DecodeRequest) -> str | None:
        return None  # HF generate is the reference: it runs every model and option

    def generate(self, adapter, request: DecodeRequest) -> GenerationOutput:
        return generate(adapter, request.prompts, **request.sampling(), **request.options)
