"""Codebook copy into a stock EncodecModel reproduces our codes exactly; decoder-only fine-tuning
keeps the codes; the centroid, envelope, mel and low-band L1 losses measure what they claim."""

import pytest
import torch

from steerlit.testbed.codec import (
    CodecModule,
    band_envelope_loss,
    decode_codes,
    encode_codes,
    export_encodec,
    init_from_encodec,
    low_band_l1_loss,
    lowpass_waveform,
    make_encodec_config,
    multi_resolution_stft_loss,
    multi_scale_mel_loss,
    spectral_centroid_torch,
)


def test_config_uses_four_codebooks_at_50hz():
    cfg = make_encodec_config(codebook_size=512)
    assert cfg.num_quantizers == 4 and cfg.frame_rate == 50 and cfg.sampling_rate == 16000


def test_codebook_copy_is_exact():
    torch.manual_seed(0)
    module = CodecModule(make_encodec_config(num_filters=4, hidden_size=16, codebook_size=64).to_dict())
    x = torch.randn(3, 1, 16000) * 0.1
    module.train()
    recon, codes, commit = module(x)  # k-means init of the RVQ on this batch
    assert recon.shape == x.shape and codes.shape == (3, 4, 50)
    loss = multi_resolution_stft_loss(recon[:, 0], x[:, 0])
    assert torch.isfinite(loss)
    module.eval()
    with torch.no_grad():
        z = module.encodec.encoder(x)
        ours = module.rvq.encode(z)
        ours_wav = module.encodec.decoder(module.rvq.decode(ours))
    encodec = export_encodec(module)
    theirs = encode_codes(encodec, x)
    torch.testing.assert_close(theirs, ours, rtol=0, atol=0)
    torch.testing.assert_close(decode_codes(encodec, theirs), ours_wav, rtol=0, atol=0)


def test_init_from_encodec_restores_weights_and_codebooks():
    torch.manual_seed(0)
    config = make_encodec_config(num_filters=4, hidden_size=16, codebook_size=64).to_dict()
    trained = CodecModule(config)
    x = torch.randn(2, 1, 16000) * 0.1
    trained.train()
    trained(x)  # k-means init of the RVQ
    encodec = export_encodec(trained)
    torch.manual_seed(1)
    fresh = CodecModule(config)
    init_from_encodec(fresh, encodec)
    fresh.eval()
    with torch.no_grad():
        _, codes, _ = fresh(x)
    assert all(bool(layer.inited.item()) for layer in fresh.rvq.layers)
    torch.testing.assert_close(codes, encode_codes(encodec, x), rtol=0, atol=0)


def test_decoder_only_training_keeps_codes_and_changes_decoder(tiny_trained_codec):
    import lightning as L

    config, encodec = tiny_trained_codec()
    before = {k: v.clone() for k, v in encodec.state_dict().items()}
    x = torch.randn(2, 1, 16000) * 0.1
    codes_before = encode_codes(encodec, x)
    module = CodecModule(config, lr=1e-2, w_envelope=1.0, w_centroid=1.0, decoder_only=True)
    init_from_encodec(module, encodec)
    batches = torch.utils.data.DataLoader(torch.randn(6, 1, 4000) * 0.1, batch_size=2)
    L.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False).fit(
        module, batches
    )
    tuned = export_encodec(module)
    torch.testing.assert_close(encode_codes(tuned, x), codes_before, rtol=0, atol=0)
    after = tuned.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("decoder.") for k in changed)


def test_with_tuned_decoder_refuses_another_codec(tiny_trained_codec):
    from steerlit.testbed.widen import with_tuned_decoder

    _, encodec = tiny_trained_codec(0)
    _, other = tiny_trained_codec(1)
    with pytest.raises(ValueError, match="encoder/codebook tensors differ"):
        with_tuned_decoder(encodec, other)
    _, same_encoder = tiny_trained_codec(0)
    with torch.no_grad():
        for p in same_encoder.decoder.parameters():
            p.mul_(0.5)
    assert with_tuned_decoder(encodec, same_encoder) is encodec
    for a, b in zip(encodec.decoder.parameters(), same_encoder.decoder.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_torch_centroid_matches_metric_and_envelope_loss_sees_lost_highs():
    import numpy as np

    from steerlit.metrics.brightness import spectral_centroid

    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    clips = [
        0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 3000 * t),
        0.1 * rng.standard_normal(16000),
    ]
    for y in clips:
        ours = float(spectral_centroid_torch(torch.from_numpy(y).float()[None])[0])
        assert abs(ours / spectral_centroid(y, 16000) - 1) < 0.05
    noise = torch.from_numpy(clips[1]).float()[None]
    dull = lowpass_waveform(noise, 2000.0)
    assert float(band_envelope_loss(noise, noise)) == 0.0
    assert float(band_envelope_loss(dull, noise)) > 1.0


def test_lowpass_keeps_the_low_band_and_removes_the_high_band():
    t = torch.arange(16000) / 16000
    low, high = torch.sin(2 * torch.pi * 440 * t)[None], torch.sin(2 * torch.pi * 5000 * t)[None]
    out = lowpass_waveform(low + high, 2000.0)
    assert float((out - low).abs().max()) < 1e-3


def test_low_band_l1_is_phase_sensitive_below_the_cutoff_only():
    """A steady tone in the wrong phase costs as much as silence (so the codec must carry its phase),
    while differences above the cutoff (noisy highs) cost nothing; magnitude losses miss the phase."""
    t = torch.arange(16000) / 16000
    tone = (0.2 * torch.sin(2 * torch.pi * 440 * t))[None]
    shifted = (0.2 * torch.sin(2 * torch.pi * 440 * t + torch.pi / 2))[None]
    hiss = 0.05 * torch.randn(generator=torch.Generator().manual_seed(0), size=tone.shape)
    silence = torch.zeros_like(tone)
    assert (
        float(low_band_l1_loss(tone + lowpass_waveform(hiss, 8000.0) - lowpass_waveform(hiss, 3000.0), tone))
        < 1e-3
    )
    assert float(low_band_l1_loss(shifted, tone)) > 0.8 * float(low_band_l1_loss(silence, tone))
    assert float(multi_scale_mel_loss(shifted, tone)) < 0.25 * float(multi_scale_mel_loss(silence, tone))


def test_mel_loss_prefers_a_detuned_tone_to_silence_more_than_per_bin_log_stft():
    t = torch.arange(16000) / 16000
    target = (0.2 * torch.sin(2 * torch.pi * 900 * t))[None]
    detuned = (0.2 * torch.sin(2 * torch.pi * 950 * t))[None]
    silence = 1e-6 * torch.randn(generator=torch.Generator().manual_seed(0), size=target.shape)
    assert float(multi_scale_mel_loss(target, target)) == 0.0
    mel = float(multi_scale_mel_loss(detuned, target)) / float(multi_scale_mel_loss(silence, target))
    sizes = (128, 256, 512, 1024, 2048)
    stft = float(multi_resolution_stft_loss(detuned, target, sizes, 1e-4)) / float(
        multi_resolution_stft_loss(silence, target, sizes, 1e-4)
    )
    assert mel < 0.3 and stft > 1.5 * mel, (mel, stft)  # measured 0.22 and 0.54


def test_crop_dataset_mixes_in_single_stems():
    """With stem_prob 1 every crop is the drums or the pitched part alone; with 0 the mix, as before."""
    import itertools

    import numpy as np

    from steerlit.testbed.codec import ClipCropDataset
    from steerlit.testbed.synth import render, render_stems, spec_for_index

    spec = spec_for_index(0)
    stems = render_stems(spec)
    crops = [c[0].numpy() for c in itertools.islice(iter(ClipCropDataset(1, crop_s=4.0, stem_prob=1.0)), 8)]
    which = [next(k for k, s in enumerate(stems) if np.array_equal(c, s)) for c in crops]
    assert set(which) == {0, 1}  # both stems turn up in 8 draws
    mix = next(iter(ClipCropDataset(1, crop_s=4.0)))[0].numpy()
    np.testing.assert_array_equal(mix, render(spec))
    with pytest.raises(ValueError, match="stem_prob"):
        ClipCropDataset(1, stem_prob=1.5)
