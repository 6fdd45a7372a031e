"""When the fast engine reproduces HF, and the reasons it gives when it does not."""

import pytest
import torch

from steerlit.engines.base import DecodeRequest
from steerlit.engines.fast.engine import fast_generate
from steerlit.engines.fast.support import fast_unsupported_reason, request_unsupported_reason

PROMPTS = ["a fast techno track", "slow jazz piano"]


def test_model_reasons(tiny_adapter, monkeypatch):
    assert fast_unsupported_reason(tiny_adapter) is None
    monkeypatch.setattr(tiny_adapter.model.config.decoder, "audio_channels", 2)
    assert "stereo" in fast_unsupported_reason(tiny_adapter)
    monkeypatch.setattr(tiny_adapter.model.config.decoder, "audio_channels", 1)
    monkeypatch.setattr(tiny_adapter.model.generation_config, "repetition_penalty", 1.2)
    assert "repetition_penalty" in fast_unsupported_reason(tiny_adapter)
    with pytest.raises(ValueError, match="does not support"):
        fast_generate(tiny_adapter, PROMPTS, max_new_tokens=8)


def test_hooks_are_a_reason(tiny_adapter):
    handle = tiny_adapter.decoder_layers[1].register_forward_hook(lambda m, a, o: None)
    try:
        assert "forward hooks" in fast_unsupported_reason(tiny_adapter)
    finally:
        handle.remove()
    assert fast_unsupported_reason(tiny_adapter) is None


def test_request_reasons(tiny_adapter):
    def reason(steps=8, **options):
        return request_unsupported_reason(tiny_adapter, DecodeRequest(PROMPTS, steps, options=options))

    assert reason() is None and reason(bucket=8, deterministic=True) is None
    assert "audio prompts (input_values)" in reason(input_values=torch.zeros(1, 1, 640))
    assert "HF generate options ['use_cache']" in reason(use_cache=False)
    assert "shorter than the 4 codebooks" in reason(steps=3)
