"""A tiny random CLAP model built offline, for tests of the CLAP metrics (like the tiny MusicGen factory)."""

from __future__ import annotations

import json
from pathlib import Path

CORPUS = [
    "fast energetic drums with bright synths",
    "slow dark piano ballad",
    "a calm ambient pad with soft strings",
    "upbeat funk bass and guitar",
]
FE_SR = 16000


def build_tiny_clap(folder: str | Path) -> Path:
    """Save a random ~100k-parameter ClapModel with its processor (BPE tokenizer trained here)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        ClapAudioConfig,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapProcessor,
        ClapTextConfig,
        RobertaTokenizer,
    )

    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa ids: pad = 1 as in ClapTextConfig
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(CORPUS * 4, trainer)
    vocab = bpe.get_vocab()
    merges = [tuple(m) for m in json.loads(bpe.to_str())["model"]["merges"]]
    tokenizer = RobertaTokenizer(vocab=vocab, merges=merges, model_max_length=64)

    # 2 s windows at 16 kHz, hop 160 -> 201 frames x 16 mel bins; spec_size 64 = 4 x 16 bins.
    extractor = ClapFeatureExtractor(
        feature_size=16,
        sampling_rate=FE_SR,
        hop_length=160,
        max_length_s=2,
        fft_window_size=400,
        frequency_max=8000,
        truncation="rand_trunc",
        padding="repeatpad",
    )
    text_cfg = ClapTextConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=66,
    )
    audio_cfg = ClapAudioConfig(
        num_mel_bins=16,
        spec_size=64,
        window_size=4,
        patch_size=4,
        patch_stride=(4, 4),
        depths=(1, 1),
        num_attention_heads=(1, 2),
        patch_embeds_hidden_size=16,
        hidden_size=32,  # = patch_embeds_hidden_size * 2 ** (len(depths) - 1)
    )
    config = ClapConfig(text_config=text_cfg.to_dict(), audio_config=audio_cfg.to_dict(), projection_dim=16)
    torch.manual_seed(0)
    ClapModel(config).eval().save_pretrained(folder)
    ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    return Path(folder)
