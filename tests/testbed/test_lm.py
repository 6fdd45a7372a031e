"""LM: delay pattern matches HF's, a 2-step training run changes the decoder, and its settings come from
the ``lm`` config section."""

import dataclasses

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from steerlit.models.tokenizer import build_t5_tokenizer
from steerlit.testbed.captions import training_corpus
from steerlit.testbed.code_cache import CodeDataset, build_code_cache
from steerlit.testbed.lm import LMTraining, MusicgenLM, build_musicgen, delay_inputs_and_labels


def test_delay_pattern_matches_hf(tiny_lm_cfg, tiny_codec_dir):
    model = build_musicgen(tiny_lm_cfg, tiny_codec_dir, text_vocab_size=64)
    b, k, t, pad = 2, 4, 10, 64
    codes = torch.randint(0, 64, (b, k, t))
    inputs, labels = delay_inputs_and_labels(codes, pad)
    assert inputs.shape == (b * k, t + k - 1) and labels.shape == (b, k, t + k - 1)
    bos = torch.full((b * k, 1), pad)
    _, pattern = model.decoder.build_delay_pattern_mask(bos, pad_token_id=pad, max_length=t + k)
    full = torch.cat([inputs, labels.reshape(b * k, -1)[:, -1:].clamp(min=0)], dim=1)
    full[:, -1] = torch.where(pattern[:, -1] == -1, full[:, -1], pad)
    # positions HF leaves for prediction (-1) are exactly our code positions
    assert torch.equal(pattern == -1, full != pad)
    torch.testing.assert_close(model.decoder.apply_delay_pattern_mask(full, pattern), full)
    # frame j of codebook i sits at position j + 1 + i
    assert torch.equal(full.view(b, k, -1)[:, 2, 3 : 3 + t], codes[:, 2])


def test_two_step_training_changes_the_decoder(tmp_path, tiny_lm_cfg, tiny_codec_dir):
    cache = tmp_path / "codes.pt"
    build_code_cache(tiny_codec_dir, cache, num_clips=4, clip_s=1.0)
    tokenizer = build_t5_tokenizer(training_corpus(200), vocab_size=200)
    model = build_musicgen(tiny_lm_cfg, tiny_codec_dir, text_vocab_size=len(tokenizer))
    ds = CodeDataset(cache, tokenizer)
    loader = DataLoader(ds, batch_size=2, collate_fn=ds.collate)
    module = MusicgenLM(model, LMTraining(lr=1e-3, warmup_steps=1, max_steps=2, cond_dropout=0.5))
    assert (
        module.hparams.lr == 1e-3
        and module.hparams.weight_decay == 0.01
        and module.hparams.log_audio_every == 0
    )
    trainer = L.Trainer(
        max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    before = model.decoder.lm_heads[0].weight.detach().clone()
    trainer.fit(module, loader)
    assert not torch.equal(before, model.decoder.lm_heads[0].weight)


def test_lm_training_comes_from_the_lm_section(tiny_lm_cfg):
    lm = OmegaConf.merge(tiny_lm_cfg.lm, {"warmup_steps": 5, "max_steps": 9})
    plain = LMTraining(lr=1e-3, warmup_steps=5, max_steps=9, cond_dropout=0.5)
    assert LMTraining.from_config(lm) == plain
    lm.prefix_frames, lm.freeze_text_encoder = 50, True
    assert LMTraining.from_config(lm) == dataclasses.replace(
        plain, prefix_frames=50, freeze_text_encoder=True
    )
    with pytest.raises(KeyError, match="warmup_steps"):  # the lm section must set it
        LMTraining.from_config(tiny_lm_cfg.lm)
