"""LM: delay pattern matches HF's, and a 2-step training run yields a loadable, generating model."""

import lightning as L
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader
from transformers import AutoProcessor, EncodecModel, MusicgenForConditionalGeneration

from steerlit.models.tokenizer import build_t5_tokenizer
from steerlit.testbed.captions import training_corpus
from steerlit.testbed.codec import make_encodec_config
from steerlit.testbed.lm import (
    CodeDataset,
    MusicgenLM,
    assemble,
    build_code_cache,
    build_musicgen,
    code_cache_matches,
    delay_inputs_and_labels,
)
from steerlit.testbed.model_card import main as rewrite_card


def test_delay_pattern_matches_hf(tmp_path, tiny_lm_cfg):
    torch.manual_seed(0)
    enc_dir = tmp_path / "enc"
    EncodecModel(make_encodec_config(num_filters=4, hidden_size=16, codebook_size=64)).save_pretrained(
        enc_dir
    )
    model = build_musicgen(tiny_lm_cfg, enc_dir, text_vocab_size=64)
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


def test_two_step_training_save_reload_generate(tmp_path, tiny_lm_cfg):
    torch.manual_seed(0)
    enc_dir = tmp_path / "enc"
    EncodecModel(make_encodec_config(num_filters=4, hidden_size=16, codebook_size=64)).save_pretrained(
        enc_dir
    )
    cache = tmp_path / "codes.pt"
    data = build_code_cache(enc_dir, cache, num_clips=4, clip_s=1.0)
    assert data["codes"].shape == (4, 4, 50)
    assert code_cache_matches(cache, 4, clip_s=1.0) and not list(tmp_path.glob(".codes.pt.tmp"))
    assert not code_cache_matches(cache, 5, clip_s=1.0) and not code_cache_matches(cache, 4, 1, clip_s=1.0)
    assert not code_cache_matches(cache, 4, clip_s=2.0)  # another clip length
    stale = dict(torch.load(cache, weights_only=True), render_sha256="rendered by an older synth")
    torch.save(stale, tmp_path / "stale.pt")
    assert not code_cache_matches(tmp_path / "stale.pt", 4, clip_s=1.0)
    tokenizer = build_t5_tokenizer(training_corpus(200), vocab_size=200)
    model = build_musicgen(tiny_lm_cfg, enc_dir, text_vocab_size=len(tokenizer))
    ds = CodeDataset(cache, tokenizer)
    loader = DataLoader(ds, batch_size=2, collate_fn=ds.collate)
    module = MusicgenLM(model, lr=1e-3, warmup_steps=1, max_steps=2, cond_dropout=0.5)
    trainer = L.Trainer(
        max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    before = model.decoder.lm_heads[0].weight.detach().clone()
    trainer.fit(module, loader)
    assert not torch.equal(before, model.decoder.lm_heads[0].weight)
    lm_dir, out = tmp_path / "lm", tmp_path / "out"
    model.save_pretrained(lm_dir)
    tokenizer.save_pretrained(lm_dir)
    out.mkdir()
    (out / "eval.json").write_text("{}")  # a previous model's evaluation must not survive
    (tmp_path / "stats.json").write_text('{"steps": 2}')
    assemble(lm_dir, out, tiny_lm_cfg, extra_files={"lm_train_stats.json": tmp_path / "stats.json"})
    assert (out / "README.md").exists() and not (out / "eval.json").exists()
    assert (out / "training_config.yaml").exists()
    (out / "README.md").unlink()
    rewrite_card([str(out)])
    assert "## Architecture" in (out / "README.md").read_text()
    assert (out / "lm_train_stats.json").read_text() == '{"steps": 2}'
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no tmp/old folder left
    reloaded = MusicgenForConditionalGeneration.from_pretrained(out).eval()
    processor = AutoProcessor.from_pretrained(out)
    tok = processor.tokenizer(["fast bright synth bass over a dance beat"], return_tensors="pt")
    audio = reloaded.generate(**tok, max_new_tokens=8)
    assert audio.shape[:2] == (1, 1) and audio.shape[-1] == 5 * 320
    assert torch.isfinite(audio).all()


def test_testbed_configs_hold_only_known_keys_and_typos_fail_before_work(tmp_path):
    import pytest

    from steerlit.testbed.train import main
    from steerlit.testbed.train_config import check_config

    for path in ("configs/testbed/default.yaml", "configs/testbed/smoke.yaml"):
        check_config(OmegaConf.load(path))
    run_dir = tmp_path / "run"
    for override, hint in (("codec.w_centroidd=2", "w_centroid"), ("+codec.w_centroid=2", "+codec")):
        with pytest.raises(ValueError, match="unknown testbed config key") as err:
            main(["--config", "configs/testbed/smoke.yaml", f"run_dir={run_dir}", override])
        assert hint in str(err.value)
    assert not run_dir.exists()  # nothing written


def test_resume_takes_the_newest_last_checkpoint(tmp_path):
    import os

    from steerlit.testbed.train import _resume_path

    assert _resume_path(tmp_path) is None
    (tmp_path / "epoch=0-step=100.ckpt").write_bytes(b"")
    assert _resume_path(tmp_path) is None  # only last*.ckpt resume a run
    for i, name in enumerate(("last.ckpt", "last-v1.ckpt")):
        (tmp_path / name).write_bytes(b"")
        os.utime(tmp_path / name, (1000 + i, 1000 + i))
    assert _resume_path(tmp_path) == str(tmp_path / "last-v1.ckpt")  # a copied run: Lightning wrote -v1
    os.utime(tmp_path / "last.ckpt", (2000, 2000))
    assert _resume_path(tmp_path) == str(tmp_path / "last.ckpt")
