"""The testbed pipeline end to end through ``python -m steerlit.testbed.train`` (smoke config, two
steps per stage) with a widened, adversarial decoder fine-tune: the assembled model ships the wide
decoder and still makes the codes its LM was trained on."""

import json

import torch
from transformers import EncodecModel, MusicgenForConditionalGeneration

from steerlit.testbed.codec import encode_codes
from steerlit.testbed.train import main


def test_assembled_model_takes_a_widened_adversarial_decoder(tmp_path):
    run_dir, out_dir = tmp_path / "run", tmp_path / "model"
    main(
        ["--config", "configs/testbed/smoke.yaml", "--stages", "codec,codes,lm,codec_decoder,assemble"]
        + [f"run_dir={run_dir}", f"out_dir={out_dir}", f"cache_dir={tmp_path / 'cache'}"]
        + ["codec.max_steps=2", "lm.max_steps=2", "codec_decoder.max_steps=2", "codec_decoder.widen=2"]
        + ["codec_decoder.w_adv=1.0", "codec_decoder.disc_channels=4", "codec_decoder.disc_fft_sizes=[256]"]
    )
    stats = json.loads((run_dir / "codec" / "decoder_ft" / "train_stats.json").read_text())
    assert {"codec/adv", "codec/feat", "codec/disc"} <= set(stats) and stats["steps"] == 2
    codec = EncodecModel.from_pretrained(run_dir / "codec" / "encodec").eval()
    tuned = EncodecModel.from_pretrained(run_dir / "codec" / "decoder_ft").eval()
    shipped = MusicgenForConditionalGeneration.from_pretrained(out_dir).audio_encoder.eval()
    assert shipped.config.num_filters == tuned.config.num_filters == 2 * codec.config.num_filters
    for name, p in tuned.decoder.state_dict().items():
        torch.testing.assert_close(shipped.decoder.state_dict()[name], p, rtol=0, atol=0)
    x = torch.randn(1, 1, 8000) * 0.1
    assert torch.equal(encode_codes(shipped, x), encode_codes(codec, x))  # the LM's codes still hold
