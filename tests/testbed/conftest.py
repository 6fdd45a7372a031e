"""A tiny testbed training config shared by the LM tests."""

import pytest
from omegaconf import OmegaConf


@pytest.fixture
def tiny_lm_cfg():
    return OmegaConf.create(
        {
            "run_dir": "unused",
            "data": {"train_clips": 4, "base_seed": 0, "heldout_base_seed": 1},
            "codec": {"batch_size": 4, "crop_s": 0.5},
            "lm": {
                "text_d_model": 32,
                "text_layers": 1,
                "text_heads": 2,
                "text_d_ff": 64,
                "hidden_size": 32,
                "num_layers": 2,
                "num_heads": 2,
                "ffn_dim": 64,
                "dropout": 0.0,
                "batch_size": 2,
                "lr": 1e-3,
                "cond_dropout": 0.5,
            },
            "generation": {"guidance_scale": 3.0, "top_k": 10, "max_length": 64},
        }
    )
