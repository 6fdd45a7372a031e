"""What every decode engine takes and returns: :class:`DecodeRequest`, :class:`GenerationOutput`, :class:`Engine`.

An engine turns one request (prompts, decoding steps, sampling, per-row seeds and steering) into codes and
audio. Two exist: ``hf`` (:mod:`steerlit.engines.hf`, HF ``generate`` with hooks: the reference) and ``fast``
(:mod:`steerlit.engines.fast`, a decode loop over the model's own weights with the same results).
:mod:`steerlit.engines.select` picks one and is the entry point every generating path uses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args

import torch

from steerlit.intervene.steer import RowSteering

EngineName = Literal["hf", "fast"]
ENGINES: tuple[EngineName, ...] = get_args(EngineName)
AUDIO_PROMPT_KEYS = (
    "input_values",
    "padding_mask",
    "decoder_input_ids",
)  # HF generate options: audio prompts


@dataclass
class GenerationOutput:
    """``codes`` (B, K, F) int64 on CPU; ``audio`` (B, S) float32 on CPU (None without decoding);
    ``sequences`` (B·K, 1+N) raw decoder ids as generated (before the delay-pattern mask); ``sample_rate``
    of ``audio``."""

    codes: torch.Tensor
    audio: torch.Tensor | None
    sequences: torch.Tensor
    sample_rate: int


@dataclass(frozen=True)
class DecodeRequest:
    """One engine call: B ``prompts`` decoded for ``max_new_tokens`` steps (N).

    ``seeds``: one sampling seed per prompt (None: greedy); ``steering``: one RowSteering per prompt or a
    single one for all (None: unsteered); ``options``: engine-specific keyword options (HF ``generate``
    arguments such as ``use_cache``, or the fast engine's ``use_cuda_graphs``, ``bucket``, ...).
    """

    prompts: tuple[str, ...]
    max_new_tokens: int
    guidance_scale: float | None = 3.0
    temperature: float = 1.0
    top_k: int | None = 250
    seeds: tuple[int, ...] | None = None
    steering: Sequence[RowSteering] | RowSteering | None = None
    decode_audio: bool = True
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "prompts", tuple(self.prompts))
        if self.seeds is not None:
            object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "options", dict(self.options))

    def sampling(self) -> dict[str, Any]:
        """The keyword arguments both engines' generate functions take (everything but the prompts)."""
        return {
            "max_new_tokens": self.max_new_tokens,
            "guidance_scale": self.guidance_scale,
            "seeds": None if self.seeds is None else list(self.seeds),
            "temperature": self.temperature,
            "top_k": self.top_k,
            "steering": self.steering,
            "decode_audio": self.decode_audio,
        }


class Engine(Protocol):
    """A decode engine. ``unsupported_reason`` says why it cannot reproduce HF ``generate`` for this model and
    request (None: it can); ``generate`` runs the request (it raises ValueError where the reason is not None)."""

    name: EngineName

    def unsupported_reason(self, adapter, request: DecodeRequest) -> str | None: ...

    def generate(self, adapter, request: DecodeRequest) -> GenerationOutput: ...
