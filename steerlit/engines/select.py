"""The one way steerlit generates: :func:`generate` picks the engine and runs it, with a logged fallback.

``generation.engine="fast"`` runs :class:`~steerlit.engines.fast.engine.FastEngine` when it reproduces HF for
this model and request, and otherwise logs the reason (``logging.warning``, once per distinct reason) and runs
:class:`~steerlit.engines.hf.HFEngine`: results are never silently different. The grid runner, the DDP grid
and ``steerlit generate`` all call :func:`generate`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from steerlit.engines.base import (
    AUDIO_PROMPT_KEYS,
    ENGINES,
    DecodeRequest,
    Engine,
    EngineName,
    GenerationOutput,
)
from steerlit.engines.fast.engine import FastEngine
from steerlit.engines.fast.support import FAST_OPTIONS
from steerlit.engines.hf import HFEngine
from steerlit.engines.settings import GenerationSettings
from steerlit.intervene.steer import RowSteering

log = logging.getLogger(__name__)

__all__ = ["ENGINES", "EngineName", "engine_named", "generate", "generate_with", "select_engine"]

_ENGINES: dict[str, Engine] = {"hf": HFEngine(), "fast": FastEngine()}
_logged_reasons: set[tuple[str, str]] = set()


def engine_named(name: str) -> Engine:
    """The engine called ``name`` (one of :data:`~steerlit.engines.base.ENGINES`)."""
    if name not in _ENGINES:
        raise ValueError(f"Unknown generation engine {name!r}; use one of {ENGINES}.")
    return _ENGINES[name]


def _warn_once(engine: str, reason: str) -> None:
    if (engine, reason) not in _logged_reasons:
        _logged_reasons.add((engine, reason))
        log.warning("The %s engine is not used, falling back to HF generate: %s.", engine, reason)


def select_engine(name: str, adapter, request: DecodeRequest) -> tuple[Engine, DecodeRequest]:
    """The engine that runs ``request`` and the request it runs: ``name``'s engine when it reproduces HF here,
    else HF, with the reason logged. The HF engine ignores the fast-only options."""
    engine = engine_named(name)
    reason = engine.unsupported_reason(adapter, request)
    if reason is not None:
        _warn_once(engine.name, reason)
        engine = _ENGINES["hf"]
    if engine.name == "hf":
        options = {k: v for k, v in request.options.items() if k not in FAST_OPTIONS}
        request = dataclasses.replace(request, options=options)
    return engine, request


def _engine_options(options: dict) -> dict:
    return {k: v for k, v in options.items() if not (k in AUDIO_PROMPT_KEYS and v is None)}


def generate(
    adapter,
    prompts: Sequence[str],
    generation: GenerationSettings,
    *,
    seeds: Sequence[int] | None = None,
    steering: Sequence[RowSteering] | RowSteering | None = None,
    decode_audio: bool = True,
    max_new_tokens: int | None = None,
    **engine_options,
) -> GenerationOutput:
    """Generate one clip per prompt with ``generation.engine`` (falling back to HF with a logged reason).

    Decoding steps: ``adapter.seconds_to_steps(generation.seconds)``, or exactly ``max_new_tokens`` when given
    (tests, benchmarks). ``seeds``: one sampling seed per prompt (None: greedy; a grid's seed axis
    ``generation.seeds`` is already in its rows). ``steering``: one RowSteering per prompt or one for all.
    ``engine_options``: HF ``generate`` options (``use_cache=False``; the fast engine falls back on them) or
    the fast engine's (``use_cuda_graphs``, ``compile``, ``deterministic``, ``bucket``, ``bucketed``; ignored
    by HF). Returns codes (B, K, F), audio (B, S) (None without ``decode_audio``) and raw sequences.
    """
    steps = adapter.seconds_to_steps(generation.seconds) if max_new_tokens is None else int(max_new_tokens)
    request = DecodeRequest(
        prompts=tuple(prompts),
        max_new_tokens=steps,
        guidance_scale=generation.guidance_scale,
        temperature=generation.temperature,
        top_k=generation.top_k,
        seeds=None if seeds is None else tuple(seeds),
        steering=steering,
        decode_audio=decode_audio,
        options=_engine_options(engine_options),
    )
    engine, request = select_engine(generation.engine, adapter, request)
    return engine.generate(adapter, request)


def generate_with(
    engine: EngineName,
    adapter,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    guidance_scale: float | None = 3.0,
    temperature: float = 1.0,
    top_k: int | None = 250,
    **options,
) -> GenerationOutput:
    """The keyword form of :func:`generate` (kept until every caller passes GenerationSettings); ``options``:
    ``seeds``, ``steering``, ``decode_audio`` and the engine options of :func:`generate`."""
    settings = GenerationSettings(
        guidance_scale=guidance_scale, temperature=temperature, top_k=top_k, engine=engine
    )
    return generate(adapter, prompts, settings, max_new_tokens=max_new_tokens, **options)
