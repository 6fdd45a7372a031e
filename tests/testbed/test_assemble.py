"""The shipped folder: assembled whole into a hidden sibling that replaces the old folder, loadable with
the stock HF classes, and its card rewritable from what the folder holds."""

import pytest
import torch
from transformers import AutoProcessor, MusicgenForConditionalGeneration

from steerlit.models.tokenizer import build_t5_tokenizer
from steerlit.testbed.assemble import assemble, replacing_folder
from steerlit.testbed.captions import training_corpus
from steerlit.testbed.lm import build_musicgen
from steerlit.testbed.model_card import main as rewrite_card


def test_assembled_folder_replaces_the_old_one_and_generates(tmp_path, tiny_lm_cfg, tiny_codec_dir):
    tokenizer = build_t5_tokenizer(training_corpus(200), vocab_size=200)
    model = build_musicgen(tiny_lm_cfg, tiny_codec_dir, text_vocab_size=len(tokenizer))
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


def test_a_failed_assembly_leaves_the_old_folder_and_no_temp(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "config.json").write_text("old")
    with pytest.raises(RuntimeError, match="crash"), replacing_folder(out) as tmp:
        (tmp / "config.json").write_text("new")
        raise RuntimeError("crash while saving")
    assert (out / "config.json").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == [
        "model"
    ]
    with replacing_folder(out) as tmp:
        (tmp / "config.json").write_text("new")
    assert (out / "config.json").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == [
        "model"
    ]
