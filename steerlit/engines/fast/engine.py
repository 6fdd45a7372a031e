"""A steered decode loop for ``MusicgenForConditionalGeneration`` that does what HF ``generate`` does.

:func:`fast_generate` takes the same arguments as :func:`steerlit.engines.hf.generate` and
returns the same :class:`~steerlit.engines.hf.GenerationOutput`. Per call:

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
   coefficient tables, CFG-half policy, schedules keyed by the step) at the same four sites;
5. EnCodec decodes all rows in one call, exactly as HF ``generate`` does.

Without CUDA graphs every step mirrors HF's maths and kernels (fp32 codes identical to HF). On CUDA
the step is captured into CUDA graphs per KV-length bucket (:mod:`steerlit.engines.fast.graphs`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from steerlit.engines.fast.layers import SUPPORTED_ATTN, DecoderWeights
from steerlit.engines.fast.state import FastDecoder, cached_decoder, weights_signature
from steerlit.engines.hf import GenerationOutput, codes_from_sequences
from steerlit.intervene.steer import RowSteering, Steering, SteeringError

# generation-config fields that add logits processors or stopping in greedy mode: (name, neutral values)
_GREEDY_PROCESSORS = {
    "repetition_penalty": (None, 1.0),
    "encoder_repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "sequence_bias": (None,),
    "eos_token_id": (None,),
    "num_beams": (None, 1),
    "num_return_sequences": (None, 1),
}


def _foreign_hooks(module) -> list:
    """Hooks the fast loop would bypass; transformers' own output-capturing hooks (installed once by a
    forward with ``output_hidden_states``/``output_attentions`` and inactive otherwise) do not count."""
    hooks = [*module._forward_hooks.values(), *module._forward_pre_hooks.values()]
    return [h for h in hooks if getattr(h, "__name__", "") != "output_capturing_hook"]


def fast_unsupported_reason(adapter) -> str | None:
    """Why the fast engine cannot reproduce HF ``generate`` for this model (None: it can)."""
    from transformers import MusicgenForConditionalGeneration

    model = adapter.model
    if type(model) is not MusicgenForConditionalGeneration:
        return f"model class {type(model).__name__} is not MusicgenForConditionalGeneration"
    dec = model.config.decoder
    if int(getattr(dec, "audio_channels", 1)) != 1:
        return f"audio_channels={dec.audio_channels} (stereo) is not handled"
    impl = model.decoder.model.decoder.config._attn_implementation
    if impl not in SUPPORTED_ATTN:
        return f"decoder attention implementation {impl!r} is not one of {SUPPORTED_ATTN}"
    if model.training:
        return "the model is in training mode (dropout)"
    hooked = [n for n, m in model.decoder.named_modules() if _foreign_hooks(m)]
    if hooked:
        return f"forward hooks are installed on decoder modules {hooked[:3]} (the fast loop would skip them)"
    for name, mod in model.decoder.named_modules():
        if isinstance(mod, torch.nn.Linear) and mod.bias is not None:
            return f"decoder linear {name} has a bias (MusicGen's have none)"
    gen = model.generation_config
    if gen.pad_token_id is None or (gen.decoder_start_token_id is None and gen.bos_token_id is None):
        return "generation_config lacks pad_token_id or decoder_start_token_id"
    for name, neutral in _GREEDY_PROCESSORS.items():
        value = getattr(gen, name, None)
        if value not in neutral and not (isinstance(value, list | tuple) and not value):
            return f"generation_config.{name}={value!r} adds processing the fast engine does not mirror"
    return None


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
    """``{(kind, layer): [(operator, vec (B', H), coef (B', P)), ...]}`` from a Steering spec."""
    if not steering:
        return {}
    st = Steering(adapter, steering)
    if not st.broadcast and len(st.rows) != batch:
        raise SteeringError(
            f"Steering was built for {len(st.rows)} rows but the batch has {batch} prompts; "
            "give one RowSteering per prompt (or a single one for all)."
        )
    if st.slots and length > adapter.max_positions:
        raise SteeringError(f"Position {length - 1} exceeds the decoder's {adapter.max_positions} positions.")
    out: dict[tuple[str, int], list] = {}
    for site, slots in st.slots.items():
        for slot in slots:
            vec, coef = slot.tables[cfg]
            if st.broadcast:
                vec, coef = vec.repeat_interleave(batch, 0), coef.repeat_interleave(batch, 0)
            out.setdefault((site.kind, site.layer), []).append((slot.operator, vec, coef))
    return out


def _sdpa_context(w: DecoderWeights, deterministic: bool, device: torch.device):
    if deterministic and device.type == "cuda" and w.attn_impl == "sdpa":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.MATH])
    return contextlib.nullcontext()


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
    device = adapter.device
    graphs = device.type == "cuda" if use_cuda_graphs is None else bool(use_cuda_graphs)
    if graphs and device.type != "cuda":
        raise ValueError(f"CUDA graphs need a model on CUDA, this one is on {device}; use_cuda_graphs=False.")
    if bucket < 1:
        raise ValueError(f"bucket must be >= 1, got {bucket}.")
    model = adapter.model
    batch, length = len(prompts), 1 + max_new_tokens
    cfg = guidance_scale is not None and guidance_scale > 1
    bucketed = graphs if bucketed is None else bool(bucketed) or graphs
    sampling = {
        "guidance_scale": float(guidance_scale) if cfg else 1.0,
        "temperature": temperature,
        "top_k": top_k,
        "seeded": seeds is not None,
    }
    seeds_t = None if seeds is None else torch.as_tensor(list(seeds), dtype=torch.int64, device=device)
    compiled = None
    if compile:
        from steerlit.engines.fast.layers import compile_pieces

        compiled = compile_pieces(model.config.decoder.activation_function)
    with torch.inference_mode():
        enc, enc_mask = encode_text(adapter, prompts, cfg)
        steer = steering_tables(adapter, steering, batch, cfg, length)
        dims = dict(batch=batch, length=length, cfg=cfg, dtype=enc.dtype)
        if bucketed:  # fixed buffers, reused (with their graphs) by the next call of the same shape
            text_len = 64 * -(-enc.shape[1] // 64)
            layout = tuple(sorted((k, tuple(op for op, _, _ in v)) for k, v in steer.items()))
            key = (
                weights_signature(model),
                str(device),
                text_len,
                layout,
                bucket,
                deterministic,
                compile,
                graphs,
            )
            key += tuple(sorted(dims.items(), key=str)) + tuple(sorted(sampling.items()))

            def make():
                w = DecoderWeights(model, fuse=True)
                return FastDecoder(adapter, w, text_len=text_len, sampling=dict(sampling), **dims)

            entry = cached_decoder(model, key, make)
            dec = entry.dec
        else:
            w = DecoderWeights(model, fuse=False)
            dec = FastDecoder(adapter, w, text_len=None, sampling=dict(sampling), **dims)
        dec.load(enc, enc_mask, steer, seeds_t)
        kw = {"deterministic": deterministic, "compiled": compiled}
        if graphs:
            from steerlit.engines.fast.graphs import GraphSet

            entry.graphs = entry.graphs or GraphSet()
            entry.graphs.run(dec, max_new_tokens, bucket, **kw)
        elif bucketed:
            from steerlit.engines.fast.graphs import run_bucketed

            run_bucketed(dec, max_new_tokens, bucket, **kw)
        else:
            with _sdpa_context(dec.w, deterministic, device):
                for t in range(max_new_tokens):
                    dec.step(t, compiled=compiled)
        sequences = dec.raw.to("cpu", copy=True)  # the buffers are reused by the next call
        wav = dec.audio() if decode_audio else None
    codes = codes_from_sequences(sequences, adapter.num_codebooks)
    return GenerationOutput(codes=codes, audio=wav, sequences=sequences, sample_rate=adapter.sample_rate)
