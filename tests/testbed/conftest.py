"""Shared tiny testbed objects: a training config for the LM tests, trained-RVQ codecs and a saved
random codec."""

import pytest
import torch
from omegaconf import OmegaConf


@pytest.fixture
def tiny_trained_codec():
    """Factory: (seed, num_lstm_layers=1) -> (EncodecConfig dict, EncodecModel) of a tiny codec
    (4 filters, 16-dim latents, 4 x 64 codes) whose RVQ is k-means initialised on one random batch,
    so its codebooks are in use."""
    from steerlit.testbed.codec import CodecModule, export_encodec, make_encodec_config

    def make(seed: int = 0, num_lstm_layers: int = 1):
        torch.manual_seed(seed)
        config = make_encodec_config(
            num_filters=4, hidden_size=16, codebook_size=64, num_lstm_layers=num_lstm_layers
        ).to_dict()
        module = CodecModule(config)
        module.train()
        module(torch.randn(2, 1, 16000) * 0.1)  # k-means init of the RVQ
        return config, export_encodec(module)

    return make


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


@pytest.fixture
def tiny_codec_dir(tmp_path):
    """A saved random ``EncodecModel`` (4 filters, 16-dim latents, 4 x 64 codes at 50 Hz)."""
    from transformers import EncodecModel

    from steerlit.testbed.codec import make_encodec_config

    torch.manual_seed(0)
    folder = tmp_path / "enc"
    EncodecModel(make_encodec_config(num_filters=4, hidden_size=16, codebook_size=64)).save_pretrained(folder)
    return folder
