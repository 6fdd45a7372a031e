"""Codebook copy into a stock EncodecModel reproduces our codes exactly."""

import torch

from steerlit.testbed.codec import (
    CodecModule,
    decode_codes,
    encode_codes,
    export_encodec,
    init_from_encodec,
    make_encodec_config,
    multi_resolution_stft_loss,
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
