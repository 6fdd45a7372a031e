"""Tiny random MusicGen models for fast offline tests (in the spirit of audiocraft's debug builders).

The factory builds a real ``MusicgenForConditionalGeneration`` (T5 text encoder + EnCodec codec +
MusicGen decoder) with random weights and an offline tokenizer, and writes it with
``save_pretrained`` so that tests load it through exactly the same path as ``facebook/musicgen-*``.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from steerlit.files import atomic_write_text
from steerlit.models.tokenizer import build_t5_tokenizer

if TYPE_CHECKING:
    from transformers import EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, T5Config

TINY_UPSAMPLING_RATIOS = (8, 5, 4, 4)  # product 640: 50 Hz frames at 32 kHz, as musicgen-small's EnCodec


def encodec_config(
    *,
    sampling_rate: int,
    codebook_size: int,
    num_codebooks: int,
    upsampling_ratios: Sequence[int],
    num_filters: int,
    hidden_size: int,
    num_lstm_layers: int = 1,
) -> EncodecConfig:
    """A small mono EnCodec config whose single target bandwidth selects exactly ``num_codebooks`` codebooks.

    Bandwidth (kbps) = num_codebooks * log2(codebook_size) * frame_rate / 1000, with frame rate
    ``ceil(sampling_rate / prod(upsampling_ratios))``; codebook vectors have ``hidden_size`` dimensions.
    """
    from transformers import EncodecConfig  # deferred: transformers

    frame_rate = math.ceil(sampling_rate / math.prod(upsampling_ratios))
    bits = int(math.log2(codebook_size))
    if 2**bits != codebook_size:
        raise ValueError(f"codebook_size must be a power of two, got {codebook_size}.")
    bandwidth_kbps = num_codebooks * bits * frame_rate / 1000.0
    sizes = dict(sampling_rate=sampling_rate, num_filters=num_filters, hidden_size=hidden_size)
    codebooks = dict(
        codebook_size=codebook_size, codebook_dim=hidden_size, target_bandwidths=[bandwidth_kbps]
    )
    layers = dict(
        upsampling_ratios=list(upsampling_ratios), num_lstm_layers=num_lstm_layers, num_residual_layers=1
    )
    config = EncodecConfig(
        **sizes, **codebooks, **layers, audio_channels=1, use_causal_conv=False, normalize=False
    )
    if config.num_quantizers != num_codebooks:
        raise ValueError(
            f"Bandwidth {bandwidth_kbps} kbps gives {config.num_quantizers} codebooks, not {num_codebooks}."
        )
    return config


def t5_text_config(*, d_model: int, vocab_size: int) -> T5Config:
    """A one-layer T5 text encoder of width ``d_model`` (pad 0, eos 1, as T5)."""
    from transformers import T5Config  # deferred: transformers

    sizes = dict(vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=1, num_heads=4)
    special_ids = dict(decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    return T5Config(**sizes, **special_ids, relative_attention_num_buckets=8)


def decoder_config(
    *, hidden_size: int, num_layers: int, num_heads: int, ffn_dim: int, num_codebooks: int, codebook_size: int
) -> MusicgenDecoderConfig:
    """A mono MusicGen decoder; pad, BOS and decoder start are the extra token ``codebook_size``."""
    from transformers import MusicgenDecoderConfig  # deferred: transformers

    special_ids = dict.fromkeys(("pad_token_id", "bos_token_id", "decoder_start_token_id"), codebook_size)
    blocks = dict(
        num_hidden_layers=num_layers, num_attention_heads=num_heads, hidden_size=hidden_size, ffn_dim=ffn_dim
    )
    codebooks = dict(vocab_size=codebook_size, num_codebooks=num_codebooks, audio_channels=1)
    return MusicgenDecoderConfig(**special_ids, **blocks, **codebooks, max_position_embeddings=1024)


# The default toy sizes; any of them can be given to tiny_musicgen_config / build_tiny_musicgen.
TINY_DECODER_SIZES = dict(
    hidden_size=32, num_layers=4, num_heads=4, ffn_dim=64, num_codebooks=4, codebook_size=64
)
TINY_TEXT_SIZES = dict(text_d_model=32, text_vocab_size=256)
TINY_SAMPLING_RATE = 32000


def tiny_musicgen_config(**sizes: int) -> MusicgenConfig:
    """A MusicGen config with musicgen-small's structure and toy sizes (``TINY_DECODER_SIZES``,
    ``TINY_TEXT_SIZES`` and ``sampling_rate``, each overridable by keyword).

    EnCodec at 32 kHz with upsampling ratios (8, 5, 4, 4) (product 640) gives 50 Hz frames;
    ``target_bandwidths`` is chosen so that exactly ``num_codebooks`` codebooks are used.
    """
    from transformers import MusicgenConfig  # deferred: transformers

    unknown = set(sizes) - {*TINY_DECODER_SIZES, *TINY_TEXT_SIZES, "sampling_rate"}
    if unknown:
        raise TypeError(
            f"Unknown tiny MusicGen sizes {sorted(unknown)}; use {[*TINY_DECODER_SIZES, *TINY_TEXT_SIZES]}."
        )
    decoder_sizes = {k: sizes.get(k, v) for k, v in TINY_DECODER_SIZES.items()}
    text_sizes = {k: sizes.get(k, v) for k, v in TINY_TEXT_SIZES.items()}
    text = t5_text_config(d_model=text_sizes["text_d_model"], vocab_size=text_sizes["text_vocab_size"])
    codebooks = {k: decoder_sizes[k] for k in ("codebook_size", "num_codebooks")}
    audio = encodec_config(
        sampling_rate=sizes.get("sampling_rate", TINY_SAMPLING_RATE),
        upsampling_ratios=TINY_UPSAMPLING_RATIOS,
        num_filters=4,
        hidden_size=16,
        **codebooks,
    )
    decoder = decoder_config(**decoder_sizes)
    return MusicgenConfig(
        text_encoder=text.to_dict(), audio_encoder=audio.to_dict(), decoder=decoder.to_dict()
    )


def build_tiny_musicgen(out_dir: str | Path, *, seed: int = 0, **sizes) -> Path:
    """Build a random tiny MusicGen, save it (model + processor) to ``out_dir`` and return the path.

    ``sizes`` are forwarded to :func:`tiny_musicgen_config` (e.g. ``hidden_size=1024,
    num_layers=24`` for a musicgen-small-shaped decoder in benchmarks).
    """
    from transformers import (  # deferred: transformers
        EncodecFeatureExtractor,
        MusicgenForConditionalGeneration,
        MusicgenProcessor,
    )

    out_dir = Path(out_dir)
    tokenizer = build_t5_tokenizer(vocab_size=sizes.get("text_vocab_size", 256))
    sizes.setdefault("text_vocab_size", max(len(tokenizer), 8))
    config = tiny_musicgen_config(**sizes)
    torch.manual_seed(seed)
    model = MusicgenForConditionalGeneration(config)
    # EnCodec's codebooks are zero buffers at init: give them random entries so that different codes
    # decode to different audio (a random model should still let tests see steering in the waveform).
    with torch.no_grad():
        for layer in model.audio_encoder.quantizer.layers:
            layer.codebook.embed.normal_()
    gen = model.generation_config
    gen.do_sample = True
    gen.guidance_scale = 3.0
    gen.max_length = 256
    gen.top_k = 50
    gen.decoder_start_token_id = config.decoder.decoder_start_token_id
    gen.pad_token_id = config.decoder.pad_token_id
    gen.bos_token_id = config.decoder.bos_token_id
    feature_extractor = EncodecFeatureExtractor(
        feature_size=1, sampling_rate=config.audio_encoder.sampling_rate, padding_value=0.0
    )
    processor = MusicgenProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def install_in_hub_cache(
    folder: str | Path, cache_dir: str | Path, repo_id: str, revision: str = "0" * 40
) -> Path:
    """Copy a saved model ``folder`` into a Hugging Face hub cache as ``repo_id`` and return the snapshot.

    The layout is the one ``hf download`` writes (``models--<org>--<name>/{refs/main,snapshots/<rev>/}``), so
    ``from_pretrained(repo_id, cache_dir=cache_dir, local_files_only=True)`` finds it with no network.
    """
    repo = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    for item in Path(folder).iterdir():
        if item.is_file():
            shutil.copy2(item, snapshot / item.name)
    atomic_write_text(repo / "refs" / "main", revision)
    return snapshot
