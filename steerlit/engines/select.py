"""Pick a generation engine: HF ``generate`` or the fast decode loop, with a logged fallback.

``generate_with("fast", ...)`` runs :func:`steerlit.engines.fast.engine.fast_generate` when it
reproduces HF for this model and call, and otherwise logs the reason (``logging.warning``) and runs
:func:`steerlit.engines.hf.generate`: results are never silently different.
"""

from __future__ import annotations

import logging
from typing import Literal, get_args

from steerlit.engines import hf as hf_engine
from steerlit.engines.hf import GenerationOutput

log = logging.getLogger(__name__)

EngineName = Literal["hf", "fast"]
ENGINES: tuple[EngineName, ...] = get_args(EngineName)
FAST_ONLY = ("use_cuda_graphs", "compile", "deterministic", "bucket", "bucketed")
AUDIO_PROMPT_KEYS = ("input_values", "padding_mask", "decoder_input_ids")


def fast_fallback_reason(adapter, kwargs: dict) -> str | None:
    """Why ``generate_with("fast", ...)`` would fall back to HF for this model and these arguments."""
    from steerlit.engines.fast.engine import fast_unsupported_reason

    prompt = [k for k in AUDIO_PROMPT_KEYS if kwargs.get(k) is not None]
    if prompt:
        return f"audio prompts ({', '.join(prompt)}) are not handled by the fast engine"
    known = {
        "max_new_tokens",
        "guidance_scale",
        "seeds",
        "temperature",
        "top_k",
        "steering",
        "decode_audio",
        *FAST_ONLY,
    }
    extra = sorted(set(kwargs) - known - set(AUDIO_PROMPT_KEYS))
    if extra:
        return f"HF generate options {extra} have no fast-engine equivalent"
    steps = kwargs.get("max_new_tokens")
    if steps is not None and steps < adapter.num_codebooks:
        return f"max_new_tokens={steps} is shorter than the {adapter.num_codebooks} codebooks"
    return fast_unsupported_reason(adapter)


def generate_with(engine: str, adapter, prompts, **kwargs) -> GenerationOutput:
    """Generate with ``engine`` ("hf" or "fast"); arguments as :func:`hf_engine.generate`, plus the
    fast-only ``use_cuda_graphs``, ``compile``, ``deterministic``, ``bucket``, ``bucketed`` (ignored by
    "hf")."""
    if engine not in ENGINES:
        raise ValueError(f"Unknown generation engine {engine!r}; use one of {ENGINES}.")
    kwargs = {k: v for k, v in kwargs.items() if not (k in AUDIO_PROMPT_KEYS and v is None)}
    if engine == "fast":
        reason = fast_fallback_reason(adapter, kwargs)
        if reason is None:
            from steerlit.engines.fast.engine import fast_generate

            return fast_generate(adapter, prompts, **kwargs)
        log.warning("Fast engine not used, falling back to HF generate: %s.", reason)
    hf_kwargs = {k: v for k, v in kwargs.items() if k not in FAST_ONLY}
    return hf_engine.generate(adapter, prompts, **hf_kwargs)
