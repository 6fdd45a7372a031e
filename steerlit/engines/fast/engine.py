"""A steered decode loop for ``MusicgenForConditionalGeneration`` that does what HF ``generate`` does.

:func:`fast_generate` takes the same arguments as :func:`steerlit.engines.hf.generate` and
returns the same :class:`~steerlit.engines.base.GenerationOutput`; :class:`FastEngine` is it behind the
:class:`~steerlit.engines.base.Engine` interface. Per call:

1. the text encoder runs once; under guidance the batch is ``[cond rows; uncond rows]`` with zeroed
   encoder states and a zero attention mask for the unconditional half, projected by
   ``enc_to_dec_proj`` when the widths differ and multiplied by the mask, as in ``forward``;
2. cross-attention keys/values are computed once; the self-attention cache is preallocated
   (B', heads, 1 + N, d) and written by index (:mod:`steerlit.engines.fast.layers`);
3. each step feeds the raw ids with MusicGen's delay-pattern mask applied (the pattern comes from
   ``decoder.build_delay_pattern_mask``), applies guidance ``u + g·(c − u)`` and picks tokens by
   argmax (greedy) or with the per-row Gumbel streams of :mod:`steerlit.engines.sampling`
   (``step`` = sequence length − 1, as :class:`~steerlit.engines.sampling.PerRowSampler`);
4. steering reuses :class:`steerlit.intervene.steer.Steering` (validation, per-row vector and
   coefficient tables as :class:`~steerlit.intervene.steer.SiteTable`, CFG-half policy, schedules keyed by
   the step) at the same four sites, without hooks;
5. EnCodec decodes all rows in one call, exactly as HF ``generate`` does.

Without CUDA graphs every step mirrors HF's maths and kernels (fp32 codes identical to HF). On CUDA
the step is captured into CUDA graphs per KV-length bucket (:mod:`steerlit.engines.fast.graphs`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from steerlit.engines.base import DecodeRequest, EngineName, GenerationOutput
from steerlit.engines.fast.graphs import GraphSet, run_bucketed
from steerlit.engines.fast.layers import DecoderWeights, compile_pieces
from steerlit.engines.fast.state import CacheEntry, FastDecoder, cached_decoder, weights_signature
from steerlit.engines.fast.support import fast_unsupported_reason, request_unsupported_reason
from steerlit.engines.hf import codes_from_sequences
from steerlit.intervene.steer import RowSteering, Steering

TEXT_PAD = 64  # bucketed mode pads the text length to a multiple of this (fewer distinct buffer shapes)


@dataclass(frozen=True)
class LoopOptions:
    """How the steps run: ``graphs`` (CUDA-graph replay), ``bucketed`` (the graph-shaped step, also without
    graphs), ``bucket`` steps per KV-length bucket, ``deterministic`` attention, ``compile`` of the pieces."""

    graphs: bool
    bucketed: bool
    bucket: int
    deterministic: bool
    compile: bool


def encode_text(adapter, prompts: Sequence[str], cfg: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder states (B', S, H_dec) as the decoder sees them and the 2D encoder mask (B', S)."""
    model = adapter.model
    inputs = adapter.tokenize(list(prompts))
    mask = inputs["attention_mask"]
    enc = model.text_encoder(input_ids=inputs["input_ids"], attention_mask=mask, return_dict=True)
    enc = enc.last_hidden_state
    if cfg:
        enc = torch.concatenate([enc, torch.zeros_like(enc)], dim=0)
        mask = torch.concatenate([mask, torch.zeros_like(mask)], dim=0)
    if (
        model.text_encoder.config.hidden_size != model.decoder.config.hidden_size
        and model.decoder.config.cross_attention_hidden_size is None
    ):
        enc = model.enc_to_dec_proj(enc)
    enc = enc * mask[..., None]
    return enc, mask


def steering_tables(adapter, steering, batch: int, cfg: bool, length: int) -> dict:
    """``{(kind, layer): [(operator, vec (B', H), coef (B', P)), ...]}`` from a Steering spec, read from its
    :class:`~steerlit.intervene.steer.SiteTable` slots (B' = 2B under guidance, P = decoder positions)."""
    if not steering:
        return {}
    st = Steering(adapter, steering)
    repeats = st.repeats_for(batch)
    st.check_positions(length)
    out: dict[tuple[str, int], list] = {}
    for site, tables in st.tables.items():
        for table in tables:
            vec, coef = table.batch(cfg, repeats)
            out.setdefault((site.kind, site.layer), []).append((table.operator, vec, coef))
    return out


def loop_options(adapter, use_cuda_graphs, compile, deterministic, bucket, bucketed) -> LoopOptions:
    """Resolve the fast-only options (defaults: graphs on a CUDA model; bucketed when graphs)."""
    device = adapter.device
    graphs = device.type == "cuda" if use_cuda_graphs is None else bool(use_cuda_graphs)
    if graphs and device.type != "cuda":
        raise ValueError(f"CUDA graphs need a model on CUDA, this one is on {device}; use_cuda_graphs=False.")
    if bucket < 1:
        raise ValueError(f"bucket must be >= 1, got {bucket}.")
    bucketed = graphs if bucketed is None else bool(bucketed) or graphs
    return LoopOptions(graphs, bucketed, bucket, bool(deterministic), bool(compile))


def check_call(adapter, prompts: list[str], max_new_tokens: int, seeds, temperature: float) -> None:
    """One clear error for arguments the fast loop cannot run."""
    if not prompts:
        raise ValueError("No prompts to generate: pass at least one prompt.")
    if seeds is not None and len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts: give one seed per prompt.")
    if seeds is not None and temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}; use greedy decoding instead.")
    if max_new_tokens < adapter.num_codebooks:
        raise ValueError(f"Too few decoding steps ({max_new_tokens}) for {adapter.num_codebooks} codebooks.")
    reason = fast_unsupported_reason(adapter)
    if reason:
        raise ValueError(f"The fast engine does not support this model: {reason}; use engine='hf'.")


def decoder_entry(
    adapter, text_len: int, steer: dict, sampling: dict, dims: dict, loop: LoopOptions
) -> CacheEntry:
    """The decoder of this call. Bucketed: the cached one (with its graphs) when every shape, option and
    the steering layout match, else a new cached one; exact mode: a fresh, uncached decoder."""
    model = adapter.model
    if not loop.bucketed:
        w = DecoderWeights(model, fuse=False)
        return CacheEntry((), FastDecoder(adapter, w, text_len=None, sampling=dict(sampling), **dims))
    text_len = TEXT_PAD * -(-text_len // TEXT_PAD)
    layout = tuple(sorted((k, tuple(op for op, _, _ in v)) for k, v in steer.items()))
    key = (weights_signature(model), str(adapter.device), text_len, layout)
    key += (loop.bucket, loop.deterministic, loop.compile, loop.graphs)
    key += tuple(sorted(dims.items(), key=str)) + tuple(sorted(sampling.items()))

    def make():
        w = DecoderWeights(model, fuse=True)
        return FastDecoder(adapter, w, text_len=text_len, sampling=dict(sampling), **dims)

    return cached_decoder(model, key, make)


def run_steps(entry: CacheEntry, num_steps: int, loop: LoopOptions, compiled: dict | None) -> None:
    """Decode ``num_steps`` steps into the loaded decoder: graph replay, bucketed eager, or exact mode."""
    dec = entry.dec
    kw = {"deterministic": loop.deterministic, "compiled": compiled}
    if loop.graphs:
        entry.graphs = entry.graphs or GraphSet()
        entry.graphs.run(dec, num_steps, loop.bucket, **kw)
    elif loop.bucketed:
        run_bucketed(dec, num_steps, loop.bucket, **kw)
    else:
        exact_math = loop.deterministic and dec.raw.device.type == "cuda" and dec.w.attn_impl == "sdpa"
        with sdpa_kernel([SDPBackend.MATH]) if exact_math else contextlib.nullcontext():
            for t in range(num_steps):
                dec.step(t, compiled=compiled)


def fast_generate(
    adapter,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    guidance_scale: float | None = 3.0,
    seeds: Sequence[int] | None = None,
    temperature: float = 1.0,
    top_k: int | None = 250,
    steering: Sequence[RowSteering] | RowSteering | None = None,
    decode_audio: bool = True,
    use_cuda_graphs: bool | None = None,
    compile: bool = False,
    deterministic: bool = False,
    bucket: int = 64,
    bucketed: bool | None = None,
) -> GenerationOutput:
    """Generate one clip per prompt with the fast loop; same results as ``hf_engine.generate``.

    ``use_cuda_graphs`` (default: on for a CUDA model) replays each step from a CUDA graph per
    ``bucket``-step KV-length bucket, with fused q/k/v and heads (fp16 rounding then differs slightly
    from HF, as HF's own sdpa does). ``compile``: ``torch.compile`` the layer's LN+projection and MLP.
    ``deterministic``: plain matmul attention in graphs, the SDPA math backend otherwise.
    ``bucketed`` (default: ``use_cuda_graphs``): run the graph-shaped step without graphs (any
    device), the bit-exact reference for graph replay.
    Raises ValueError for models the loop does not reproduce (see :func:`fast_unsupported_reason`).
    """
    prompts = list(prompts)
    check_call(adapter, prompts, max_new_tokens, seeds, temperature)
    loop = loop_options(adapter, use_cuda_graphs, compile, deterministic, bucket, bucketed)
    cfg = guidance_scale is not None and guidance_scale > 1
    sampling = {
        "guidance_scale": float(guidance_scale) if cfg else 1.0,
        "temperature": temperature,
        "top_k": top_k,
        "seeded": seeds is not None,
    }
    device = adapter.device
    seeds_t = None if seeds is None else torch.as_tensor(list(seeds), dtype=torch.int64, device=device)
    compiled = compile_pieces(adapter.model.config.decoder.activation_function) if compile else None
    with torch.inference_mode():
        enc, enc_mask = encode_text(adapter, prompts, cfg)
        steer = steering_tables(adapter, steering, len(prompts), cfg, 1 + max_new_tokens)
        dims = dict(batch=len(prompts), length=1 + max_new_tokens, cfg=cfg, dtype=enc.dtype)
        entry = decoder_entry(adapter, enc.shape[1], steer, sampling, dims, loop)
        entry.dec.load(enc, enc_mask, steer, seeds_t)
        run_steps(entry, max_new_tokens, loop, compiled)
        sequences = entry.dec.raw.to("cpu", copy=True)  # the buffers are reused by the next call
        wav = entry.dec.audio() if decode_audio else None
    codes = codes_from_sequences(sequences, adapter.num_codebooks)
    return GenerationOutput(codes=codes, audio=wav, sequences=sequences, sample_rate=adapter.sample_rate)


class FastEngine:
    """The :class:`~steerlit.engines.base.Engine` over :func:`fast_generate`; ``request.options`` are its
    fast-only keyword options (``use_cuda_graphs``, ``compile``, ``deterministic``, ``bucket``, ``bucketed``)."""

    name: EngineName = "fast"

    def unsupported_reason(self, adapter, request: DecodeRequest) -> str | None:
        return request_unsupported_reason(adapter, request)

    def generate(self, adapter, request: DecodeRequest) -> GenerationOutput:
        return fast_generate(adapter, request.prompts, **request.sampling(), **request.options)
