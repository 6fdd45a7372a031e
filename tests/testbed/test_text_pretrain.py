"""Text-encoder pre-training reads clip attributes from captions; a frozen encoder stays fixed in LM
training while the decoder learns."""

import lightning as L
import torch
from torch.utils.data import DataLoader
from transformers import EncodecModel, T5EncoderModel

from steerlit.models.tiny import tiny_musicgen_config
from steerlit.models.tokenizer import build_t5_tokenizer
from steerlit.testbed.captions import training_corpus
from steerlit.testbed.code_cache import CodeDataset, build_code_cache
from steerlit.testbed.codec import make_encodec_config
from steerlit.testbed.lm import LMTraining, MusicgenLM, build_musicgen
from steerlit.testbed.text_pretrain import (
    CaptionAttributeDataset,
    TextAttributeModule,
    collate_captions,
    readout_report,
)


def _fit(module, loader, steps: int) -> None:
    L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(module, loader)


def test_pretraining_makes_attributes_readable_on_heldout_captions():
    torch.manual_seed(0)
    tok = build_t5_tokenizer(training_corpus(), vocab_size=400, word_level=True)
    encoder = T5EncoderModel(tiny_musicgen_config(text_vocab_size=len(tok)).text_encoder)
    module = TextAttributeModule(encoder, lr=3e-3)
    before = readout_report(module, tok, n=200)
    module.train()
    loader = DataLoader(CaptionAttributeDataset(200), batch_size=64, collate_fn=collate_captions(tok))
    _fit(module, loader, 150)
    after = readout_report(module, tok, n=200)  # captions of held-out clips (another seed stream)
    assert min(after.values()) >= 0.9, after
    assert before["tempo_pole_acc"] < 0.9 or before["instrument_acc"] < 0.9  # it was learned


def test_frozen_text_encoder_stays_fixed_while_decoder_trains(tmp_path, tiny_lm_cfg):
    torch.manual_seed(0)
    enc_dir = tmp_path / "enc"
    EncodecModel(make_encodec_config(num_filters=4, hidden_size=16, codebook_size=64)).save_pretrained(
        enc_dir
    )
    build_code_cache(enc_dir, tmp_path / "codes.pt", num_clips=4, clip_s=1.0)
    tokenizer = build_t5_tokenizer(training_corpus(200), vocab_size=200)
    model = build_musicgen(tiny_lm_cfg, enc_dir, text_vocab_size=len(tokenizer))
    ds = CodeDataset(tmp_path / "codes.pt", tokenizer)
    module = MusicgenLM(model, LMTraining(warmup_steps=1, max_steps=2, freeze_text_encoder=True))
    text_before = {k: v.clone() for k, v in model.text_encoder.state_dict().items()}
    head_before = model.decoder.lm_heads[0].weight.detach().clone()
    _fit(module, DataLoader(ds, batch_size=2, collate_fn=ds.collate), 2)
    assert not torch.equal(head_before, model.decoder.lm_heads[0].weight)
    for k, v in model.text_encoder.state_dict().items():
        torch.testing.assert_close(v, text_before[k], rtol=0, atol=0)
    optimised = {id(p) for g in module.configure_optimizers()["optimizer"].param_groups for p in g["params"]}
    assert not optimised & {id(p) for p in model.text_encoder.parameters()}
