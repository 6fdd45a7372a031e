"""``MusicGenAdapter``: a loaded MusicGen plus what steerlit needs to know about it."""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter

import torch
from torch import nn

from steerlit.models.sites import SITE_KINDS, Site, list_sites, parse_site, parse_sites, site_module


def config_fact(path: str, kind: type) -> property:
    """A read-only attribute read from the model's config at ``path`` (e.g. ``decoder.hidden_size``) as ``kind``."""
    read = attrgetter(path)
    return property(
        lambda adapter: kind(read(adapter.model.config)), doc=f"``model.config.{path}`` as {kind.__name__}"
    )


@dataclass
class MusicGenAdapter:
    """A ``MusicgenForConditionalGeneration`` with its processor and shape facts.

    Attributes: ``hidden_size`` H of the decoder residual stream, ``num_layers`` decoder blocks,
    ``num_codebooks`` K, ``sample_rate`` of the codec, ``frame_rate`` (codec frames per second,
    = decoding steps per second of audio), ``model_id`` (hub id, folder or short name).
    """

    model: nn.Module
    processor: object
    model_id: str

    hidden_size = config_fact("decoder.hidden_size", int)
    num_layers = config_fact("decoder.num_hidden_layers", int)
    num_codebooks = config_fact("decoder.num_codebooks", int)
    num_heads = config_fact("decoder.num_attention_heads", int)
    max_positions = config_fact("decoder.max_position_embeddings", int)
    sample_rate = config_fact("audio_encoder.sampling_rate", int)
    frame_rate = config_fact("audio_encoder.frame_rate", float)

    @property
    def tokenizer(self):
        return getattr(self.processor, "tokenizer", self.processor)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.decoder.parameters()).dtype

    @property
    def decoder_layers(self) -> nn.ModuleList:
        return self.model.decoder.model.decoder.layers

    def sites(self, kinds: tuple[str, ...] | None = None) -> list[str]:
        """All site names, e.g. ``resid_post.0 .. resid_post.{L-1}``; see :mod:`steerlit.models.sites`."""
        return list_sites(self.num_layers, kinds)

    @property
    def site_kinds(self) -> dict[str, str]:
        return dict(SITE_KINDS)

    def parse_site(self, name: str | Site) -> Site:
        """One site of this model, its layer and attention head range-checked (:func:`.sites.parse_site`)."""
        return parse_site(name, self.num_layers, self.num_heads)

    def parse_sites(self, names) -> list[Site]:
        return parse_sites(names, self.num_layers, self.num_heads)

    def site_module(self, name: str | Site) -> nn.Module:
        return site_module(self.decoder_layers, self.parse_site(name))

    def tokenize(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Tokenise prompts (padded batch) onto the model's device: input_ids/attention_mask (B, S)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not prompts:
            raise ValueError("No prompts to tokenise: pass at least one prompt.")
        enc = self.tokenizer(list(prompts), return_tensors="pt", padding=True)
        return {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    def seconds_to_steps(self, seconds: float) -> int:
        """Decoding steps (``max_new_tokens``) that yield ``seconds`` of audio (delay pattern included)."""
        return int(round(seconds * self.frame_rate)) + self.num_codebooks - 1

    def describe(self) -> dict:
        return {
            "model_id": self.model_id,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "num_codebooks": self.num_codebooks,
            "sample_rate": self.sample_rate,
            "frame_rate": self.frame_rate,
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
        }
