"""The testbed stages' Lightning side: resuming from the newest ``last*.ckpt``, loaded weights-only
whatever torch's default, and the train stats a stage writes."""

import fractions
import json
import os

import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from steerlit.testbed.codec import ClipCropDataset, CodecModule, make_encodec_config
from steerlit.testbed.trainer import (
    FIT_TAKES_WEIGHTS_ONLY,
    fit_resuming,
    last_checkpoint,
    save_train_stats,
    stage_trainer,
)


def test_resume_takes_the_newest_last_checkpoint(tmp_path):
    assert last_checkpoint(tmp_path) is None
    (tmp_path / "epoch=0-step=100.ckpt").write_bytes(b"")
    assert last_checkpoint(tmp_path) is None  # only last*.ckpt resume a run
    for i, name in enumerate(("last.ckpt", "last-v1.ckpt")):
        (tmp_path / name).write_bytes(b"")
        os.utime(tmp_path / name, (1000 + i, 1000 + i))
    assert last_checkpoint(tmp_path) == str(tmp_path / "last-v1.ckpt")  # a copied run: Lightning wrote -v1
    os.utime(tmp_path / "last.ckpt", (2000, 2000))
    assert last_checkpoint(tmp_path) == str(tmp_path / "last.ckpt")


def _fit_codec(cfg, max_steps: int):
    """A tiny codec trained to ``max_steps`` through the stage plumbing: (trainer, checkpoint resumed from)."""
    stage_cfg = OmegaConf.create({"max_steps": max_steps, "max_time_min": 5, "checkpoint_every": 1})
    trainer, ckpt_dir = stage_trainer(cfg, stage_cfg, "codec")
    torch.manual_seed(0)
    module = CodecModule(make_encodec_config(num_filters=4, hidden_size=16, codebook_size=64).to_dict())
    data = DataLoader(ClipCropDataset(4, 0.2, 0, 0), batch_size=2)
    return trainer, fit_resuming(trainer, module, data, ckpt_dir)


def test_a_stage_resumes_weights_only_even_where_torch_would_unpickle(tmp_path, monkeypatch):
    # torch 2.4/2.5 load with full unpickling unless told otherwise; this makes torch 2.6+ do the same
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    cfg = OmegaConf.create({"run_dir": str(tmp_path), "logger": "none"})
    trainer, resumed = _fit_codec(cfg, 2)
    assert resumed is None and trainer.global_step == 2
    ckpt = tmp_path / "codec" / "checkpoints" / "last.ckpt"
    assert last_checkpoint(ckpt.parent) == str(ckpt)
    trainer, resumed = _fit_codec(cfg, 3)
    assert resumed == str(ckpt) and trainer.global_step == 3  # continued from step 2
    save_train_stats(trainer, 0.0, tmp_path, "codec", params=1)
    stats = json.loads((tmp_path / "train_stats.json").read_text())
    assert stats["steps"] == 3 and stats["params"] == 1 and "codec/loss" in stats

    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint["payload"] = fractions.Fraction(1, 3)  # a pickled object, as a crafted file would hold
    torch.save(checkpoint, ckpt)
    assert torch.load(ckpt)["payload"] == fractions.Fraction(1, 3)  # torch's default now unpickles it
    assert FIT_TAKES_WEIGHTS_ONLY  # Lightning 2.6 here: Trainer.fit(weights_only=True) refuses it
    with pytest.raises(ValueError, match="full unpickling would load, so it is not resumed"):
        _fit_codec(cfg, 4)
