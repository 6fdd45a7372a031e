"""The one generate entry point: engine choice, a logged fallback (once per reason), exact steps."""

import logging

import pytest
import torch

from steerlit.engines.hf import generate as hf_generate
from steerlit.engines.select import ENGINES, generate, generate_with
from steerlit.engines.settings import GenerationSettings

PROMPTS = ["a fast techno track", "slow jazz piano", "bright acoustic guitar with many words"]


def fallbacks(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "falling back to HF" in r.getMessage()]


def test_steps_from_seconds_and_both_engines_agree(tiny_adapter, caplog):
    settings = GenerationSettings(seconds=0.3, top_k=20, engine="hf")
    hf = generate(tiny_adapter, PROMPTS, settings, seeds=[1, 2, 3])
    assert hf.codes.shape == (3, 4, 15)  # 0.3 s at 50 Hz; steps = 15 frames + 3 codebook delays
    reference = hf_generate(tiny_adapter, PROMPTS, max_new_tokens=18, seeds=[1, 2, 3], top_k=20)
    assert torch.equal(hf.sequences, reference.sequences) and torch.equal(hf.audio, reference.audio)
    with caplog.at_level(logging.WARNING):
        fast = generate(
            tiny_adapter, PROMPTS, GenerationSettings(seconds=0.3, top_k=20, engine="fast"), seeds=[1, 2, 3]
        )
    assert not fallbacks(caplog)
    assert torch.equal(fast.codes, hf.codes)
    exact = generate(tiny_adapter, PROMPTS[:1], settings, max_new_tokens=7, decode_audio=False)
    assert exact.codes.shape == (1, 4, 4) and exact.audio is None
    # the fast-only options are ignored by HF
    assert torch.equal(generate(tiny_adapter, PROMPTS, settings, seeds=[1, 2, 3], bucket=8).codes, hf.codes)


def test_fallback_is_logged_once_per_reason(tiny_adapter, caplog):
    fast = GenerationSettings(engine="fast")
    kw = dict(seeds=[1, 2, 3], max_new_tokens=9, decode_audio=False)
    reference = generate(tiny_adapter, PROMPTS, GenerationSettings(engine="hf"), **kw)
    with caplog.at_level(logging.WARNING, logger="steerlit.engines.select"):
        first = generate(tiny_adapter, PROMPTS, fast, use_cache=False, compile=True, **kw)
        second = generate(tiny_adapter, PROMPTS, fast, use_cache=False, **kw)
    assert torch.equal(first.codes, reference.codes) and torch.equal(second.codes, reference.codes)
    assert len(fallbacks(caplog)) == 1 and "use_cache" in fallbacks(caplog)[0]
    caplog.clear()
    handle = tiny_adapter.decoder_layers[2].register_forward_hook(lambda m, a, o: None)
    try:  # another reason is logged again; an audio prompt given as None is no audio prompt
        with caplog.at_level(logging.WARNING, logger="steerlit.engines.select"):
            hooked = generate(tiny_adapter, PROMPTS, fast, input_values=None, **kw)
    finally:
        handle.remove()
    assert len(fallbacks(caplog)) == 1 and "forward hooks" in fallbacks(caplog)[0]
    assert torch.equal(hooked.codes, reference.codes)


def test_unknown_engine_and_keyword_form(tiny_adapter):
    assert ENGINES == ("hf", "fast")
    with pytest.raises(ValueError, match="Unknown generation engine 'vllm'"):
        generate(tiny_adapter, PROMPTS, GenerationSettings(engine="vllm"))
    kw = dict(max_new_tokens=9, seeds=[4, 5, 6], decode_audio=False)
    keyword = generate_with("fast", tiny_adapter, PROMPTS, **kw)
    assert torch.equal(keyword.codes, generate(tiny_adapter, PROMPTS, GenerationSettings(), **kw).codes)
