"""Widening a trained codec keeps its codes and audio exactly, and the new channels can learn."""

import pytest
import torch
from transformers import EncodecModel

from steerlit.testbed.codec import (
    decode_codes,
    encode_codes,
)
from steerlit.testbed.widen import widen_encodec, with_tuned_decoder


@pytest.fixture
def trained_codec(tiny_trained_codec) -> EncodecModel:
    return tiny_trained_codec(0, num_lstm_layers=2)[1]  # two LSTM layers: both are widened


def _clip(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(16000) / 16000
    return (0.3 * torch.sin(2 * torch.pi * 440 * t) + 0.05 * torch.randn(16000, generator=g))[None, None]


def test_widened_codec_keeps_codes_and_audio(trained_codec, tmp_path):
    wide = widen_encodec(trained_codec, factor=2)
    assert wide.config.num_filters == 2 * trained_codec.config.num_filters
    n_narrow = sum(p.numel() for p in trained_codec.parameters())
    assert sum(p.numel() for p in wide.parameters()) > 3 * n_narrow
    wide.save_pretrained(tmp_path)  # the stock HF round trip keeps the weight-norm parametrisation
    wide = EncodecModel.from_pretrained(tmp_path).eval()
    for seed in range(3):
        x = _clip(seed)
        codes = encode_codes(trained_codec, x)
        assert torch.equal(encode_codes(wide, x), codes)
        before, after = decode_codes(trained_codec, codes), decode_codes(wide, codes)
        assert before.abs().max() > 1e-3  # the test would be empty on silence
        torch.testing.assert_close(after, before, atol=1e-5, rtol=0)


def test_new_channels_feed_the_output_after_a_step(trained_codec):
    """The weights out of the new channels start at zero but get gradients, so decoder fine-tuning
    can use the added width: after one SGD step the decoder's output moves, and the final conv's
    columns that read new channels are no longer zero."""
    wide = widen_encodec(trained_codec, factor=2)
    last = [m for m in wide.decoder.modules() if isinstance(m, torch.nn.Conv1d)][-1]
    old_in = trained_codec.config.num_filters
    assert torch.all(last.weight[:, old_in:] == 0)
    codes = encode_codes(trained_codec, _clip(0))
    with torch.no_grad():
        emb = wide.quantizer.decode(codes.transpose(0, 1))
    before = wide.decoder(emb).detach()
    opt = torch.optim.SGD(wide.decoder.parameters(), lr=0.1)
    (wide.decoder(emb) - _clip(0)[..., : before.shape[-1]]).abs().mean().backward()
    opt.step()
    assert last.weight[:, old_in:].abs().max() > 0
    assert (wide.decoder(emb).detach() - before).abs().max() > 1e-4


def test_widening_factor_must_be_a_positive_integer(trained_codec):
    with pytest.raises(ValueError, match="positive integer"):
        widen_encodec(trained_codec, factor=1.5)


def test_a_widened_tuned_decoder_goes_into_the_narrow_model(trained_codec):
    """What ``assemble`` does with a ``codec_decoder`` stage run with ``widen: 2``: the narrow model's
    codec is widened the same way and takes the tuned decoder; a wide codec widened with other
    random channels (so with another encoder) is refused."""
    tuned = widen_encodec(trained_codec, factor=2)
    with torch.no_grad():
        for p in tuned.decoder.parameters():
            p.add_(0.01)
    merged = with_tuned_decoder(trained_codec, tuned)
    assert merged.config.num_filters == tuned.config.num_filters
    for a, b in zip(merged.state_dict().values(), tuned.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="encoder/codebook tensors differ"):
        with_tuned_decoder(trained_codec, widen_encodec(trained_codec, factor=2, seed=1))
