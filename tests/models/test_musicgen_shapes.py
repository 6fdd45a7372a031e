"""The public MusicGen configurations, built offline: sizes, parameter counts, codec, and a random checkpoint
in a hub-cache layout that loads by hub id (built here with a scaled-down config through the same code)."""

from __future__ import annotations

import json

import pytest
import torch

from steerlit.engines.hf import generate
from steerlit.models.loading import load_model
from steerlit.models.musicgen_shapes import (
    DECODER_SHAPES,
    MUSICGEN_SIZES,
    PUBLISHED_PARAMETERS,
    build_random_checkpoint,
    checkpoint_bytes,
    hub_id,
    musicgen_config,
    parameter_count,
    size_of,
)
from steerlit.models.tiny import tiny_musicgen_config

PUBLIC = {  # layers, hidden, heads, ffn of facebook/musicgen-*
    "small": (24, 1024, 16, 4096),
    "medium": (48, 1536, 24, 6144),
    "large": (48, 2048, 32, 8192),
}


def decoder_formula(layers: int, hidden: int, ffn: int, codebooks: int = 4, entries: int = 2048) -> int:
    """Counted by hand: embeddings (entries + pad) per codebook, 4 H^2 self- + 4 H^2 cross-attention, 2 H F FFN
    and 3 LayerNorms per block, the final LayerNorm, one head per codebook (no biases anywhere)."""
    block = 8 * hidden**2 + 2 * hidden * ffn + 3 * 2 * hidden
    return codebooks * (entries + 1) * hidden + layers * block + 2 * hidden + codebooks * hidden * entries


@pytest.mark.parametrize("size", MUSICGEN_SIZES)
def test_public_decoder_sizes(size):
    dec = musicgen_config(size).decoder
    layers, hidden, heads, ffn = PUBLIC[size]
    assert (dec.num_hidden_layers, dec.hidden_size, dec.num_attention_heads, dec.ffn_dim) == PUBLIC[size]
    assert (dec.num_codebooks, dec.vocab_size, dec.pad_token_id, dec.bos_token_id) == (4, 2048, 2048, 2048)
    assert dec.max_position_embeddings == 2048 and dec.activation_function == "gelu"
    assert not dec.tie_word_embeddings
    shape = DECODER_SHAPES[size]
    assert (shape.layers, shape.hidden, shape.heads, shape.ffn) == (layers, hidden, heads, ffn)


def test_codec_and_text_encoder_are_the_public_ones():
    config = musicgen_config("small")
    audio, text = config.audio_encoder, config.text_encoder
    assert audio.sampling_rate == 32000 and audio.frame_rate == 50
    assert list(audio.upsampling_ratios) == [8, 5, 4, 4] and list(audio.target_bandwidths) == [2.2]
    assert audio.num_quantizers == 4 and audio.codebook_size == 2048 and audio.num_filters == 64
    assert (audio.use_causal_conv, audio.normalize, audio.use_conv_shortcut) == (False, False, False)
    assert (audio.audio_channels, audio.num_lstm_layers, audio.codebook_dim) == (1, 2, 128)
    t5_base = (768, 12, 12, 3072, 32128)
    assert (text.d_model, text.num_layers, text.num_heads, text.d_ff, text.vocab_size) == t5_base
    assert text.feed_forward_proj == "relu" and text.d_kv == 64


def test_parameter_counts_match_the_formula_and_the_published_sizes():
    counts = {size: parameter_count(size) for size in MUSICGEN_SIZES}
    for size, count in counts.items():
        layers, hidden, _, ffn = PUBLIC[size]
        assert count.decoder == decoder_formula(layers, hidden, ffn)
        assert count.text_encoder == 109_628_544  # T5-base encoder (shared embedding + 12 blocks)
        assert count.total == count.decoder + count.text_encoder + count.audio_encoder + count.projection
        # the model cards' labels (300M, 1.5B, 3.3B) are rounded: the decoders are 1.40x, 1.23x, 0.99x of them
        assert 0.95 <= count.decoder / PUBLISHED_PARAMETERS[size] <= 1.45
    assert counts["small"].total == 586_884_674  # 2.35 GB in fp32, the size of the hub's model.safetensors
    assert counts["small"].decoder < counts["medium"].decoder < counts["large"].decoder


def test_size_names():
    for name in ("small", "musicgen_small", "musicgen-small", "facebook/musicgen-small"):
        assert size_of(name) == "small"
    assert size_of("facebook/musicgen-melody") is None and size_of("testbed") is None
    assert hub_id("large") == "facebook/musicgen-large"
    with pytest.raises(ValueError, match="Unknown MusicGen size"):
        hub_id("huge")


def test_random_checkpoint_loads_by_hub_id(tmp_path):
    config = tiny_musicgen_config(codebook_size=2048)  # scaled down; the same build path as the public shapes
    snapshot = build_random_checkpoint("small", tmp_path, config=config, seed=3)
    repo = tmp_path / "models--facebook--musicgen-small"
    assert (repo / "refs" / "main").read_text() == snapshot.name and snapshot.parent == repo / "snapshots"
    assert json.loads((snapshot / "config.json").read_text())["dtype"] == "float32"  # as the public config
    assert checkpoint_bytes(snapshot) > 0
    adapter = load_model("facebook/musicgen-small", hf_cache_dir=str(tmp_path))
    assert adapter.model_id == "facebook/musicgen-small" and adapter.dtype == torch.float32
    assert (adapter.num_codebooks, adapter.frame_rate, adapter.sample_rate) == (4, 50.0, 32000)
    gen = adapter.model.generation_config
    public_generation = (250, 3.0, 1500, 2048)  # top-k 250 sampling, guidance 3, 30 s, BOS 2048
    assert (gen.top_k, gen.guidance_scale, gen.max_length, gen.decoder_start_token_id) == public_generation
    out = generate(adapter, ["a fast song"], max_new_tokens=8, seeds=[0])
    assert out.codes.shape == (1, 4, 5) and int(out.codes.max()) < 2048
    again = build_random_checkpoint("small", tmp_path, config=config, seed=3)  # reused, not rebuilt
    assert again == snapshot
    half = load_model("facebook/musicgen-small", hf_cache_dir=str(tmp_path), dtype="float16")
    assert half.dtype == torch.float16
