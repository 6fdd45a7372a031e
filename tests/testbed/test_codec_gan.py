"""The adversarial codec: hinge and feature losses score what they should, and a decoder-only
adversarial fit trains decoder and discriminator while the codes stay the same."""

import lightning as L
import torch

from steerlit.testbed.codec import encode_codes, export_encodec, init_from_encodec
from steerlit.testbed.codec_gan import (
    AdversarialCodecModule,
    MultiScaleSTFTDiscriminator,
    discriminator_hinge_loss,
    feature_matching_loss,
    generator_hinge_loss,
)


def test_hinge_losses_vanish_only_past_the_margin():
    real, fake = [torch.full((2, 1, 4, 4), 1.5)], [torch.full((2, 1, 4, 4), -1.5)]
    assert discriminator_hinge_loss(real, fake) == 0
    assert discriminator_hinge_loss(fake, real) == 5.0  # (1 + 1.5) twice
    assert generator_hinge_loss(real) == 0 and generator_hinge_loss(fake) == 2.5


def test_discriminator_features_differ_for_a_missing_partial():
    """Shapes per scale, and feature matching is 0 on identical audio but not when a partial is gone."""
    torch.manual_seed(0)
    disc = MultiScaleSTFTDiscriminator((256, 512), channels=4)
    t = torch.arange(8000) / 16000
    full = (torch.sin(2 * torch.pi * 220 * t) + 0.5 * torch.sin(2 * torch.pi * 660 * t))[None, None]
    thin = torch.sin(2 * torch.pi * 220 * t)[None, None]
    outs = disc(full)
    assert len(outs) == 2 and outs[0][0].shape[:2] == (1, 1) and len(outs[0][1]) == 5
    feats = [f for _, f in outs]
    assert feature_matching_loss(feats, feats) == 0
    assert feature_matching_loss(feats, [f for _, f in disc(thin)]) > 0.05


def test_decoder_only_adversarial_fit_keeps_codes(tiny_trained_codec):
    config, encodec = tiny_trained_codec()
    x = torch.randn(2, 1, 16000) * 0.1
    codes_before = encode_codes(encodec, x)
    module = AdversarialCodecModule(
        config, lr=1e-3, decoder_only=True, disc_channels=4, disc_fft_sizes=(256,)
    )
    init_from_encodec(module, encodec)
    disc_before = [p.clone() for p in module.discriminator.parameters()]
    dec_before = [p.clone() for p in module.encodec.decoder.parameters()]
    trainer = L.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(module, torch.utils.data.DataLoader(torch.randn(8, 1, 4000) * 0.1, batch_size=2))
    assert trainer.global_step == 3  # codec steps: the discriminator's steps are not counted
    assert all(torch.isfinite(v) for v in trainer.callback_metrics.values())
    assert {"codec/adv", "codec/feat", "codec/disc"} <= set(trainer.callback_metrics)
    assert any(not torch.equal(a, b) for a, b in zip(disc_before, module.discriminator.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(dec_before, module.encodec.decoder.parameters()))
    torch.testing.assert_close(encode_codes(export_encodec(module), x), codes_before, rtol=0, atol=0)
