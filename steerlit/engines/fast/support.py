"""When the fast engine reproduces HF ``generate``, and when it does not (the selector then falls back to HF).

:func:`fast_unsupported_reason` checks the model (class, stereo, attention implementation, training mode,
foreign hooks, biases, generation-config processing); :func:`request_unsupported_reason` also checks one
request (audio prompts, HF-only options, too few steps).
"""

from __future__ import annotations

import torch
from transformers import MusicgenForConditionalGeneration

from steerlit.engines.base import AUDIO_PROMPT_KEYS, DecodeRequest
from steerlit.engines.fast.layers import SUPPORTED_ATTN
from steerlit.intervene.steer import hook_only_reason

FAST_OPTIONS = ("use_cuda_graphs", "compile", "deterministic", "bucket", "bucketed")  # fast-only options

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


def request_unsupported_reason(adapter, request: DecodeRequest) -> str | None:
    """Why the fast engine cannot reproduce HF ``generate`` for this model and request (None: it can)."""
    prompt = [k for k in AUDIO_PROMPT_KEYS if request.options.get(k) is not None]
    if prompt:
        return f"audio prompts ({', '.join(prompt)}) are not handled by the fast engine"
    extra = sorted(set(request.options) - set(FAST_OPTIONS) - set(AUDIO_PROMPT_KEYS))
    if extra:
        return f"HF generate options {extra} have no fast-engine equivalent"
    if request.max_new_tokens < adapter.num_codebooks:
        return (
            f"max_new_tokens={request.max_new_tokens} is shorter than the {adapter.num_codebooks} codebooks"
        )
    reason = hook_only_reason(request.steering)  # head sites and probe gates run only in the hooks
    if reason is not None:
        return reason
    return fast_unsupported_reason(adapter)
