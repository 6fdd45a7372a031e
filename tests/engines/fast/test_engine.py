"""The fast decode loop reproduces HF generate: codes, raw sequences and audio (CPU, fp32, tiny model)."""

import gc
import weakref

import pytest
import torch

from steerlit.directions.io import load_directions
from steerlit.engines.base import DecodeRequest
from steerlit.engines.fast.engine import FastEngine, fast_generate
from steerlit.engines.fast.state import cached_entry, cached_model_count, clear_fast_cache
from steerlit.engines.hf import HFEngine, generate
from steerlit.intervene.injection import inject
from steerlit.intervene.steer import Intervention, SteeringError
from steerlit.models.loading import CHECKPOINTS_DIR, load_model
from steerlit.models.tiny import build_tiny_musicgen

PROMPTS = ["a fast techno track", "slow jazz piano", "bright acoustic guitar with many words"]
STEPS = 24


def vec(seed, norm=6.0, h=32):
    v = torch.randn(h, generator=torch.Generator().manual_seed(seed))
    return v / v.norm() * norm


def mixed_rows():
    """One row per prompt: different alphas, layers, sites, operators, schedules, CFG halves, and several
    directions at once."""
    return [
        [Intervention({"resid_post.1": vec(1)}, 1.5, schedule={"kind": "exp_decay", "rate": 0.1})],
        [
            Intervention({"attn_out.0": vec(2), "mlp_out.3": vec(3)}, -2.0, operator="norm_add", half="cond"),
            Intervention({"resid_post.2": vec(4)}, 0.8, schedule={"kind": "window", "start": 5, "stop": 15}),
        ],
        [
            Intervention({f"resid_post.{i}": vec(5) for i in range(4)}, 0.7, half="uncond"),
            Intervention({"xattn_out.1": vec(6)}, 1.0, operator="ablate"),
            Intervention({"resid_post.2": vec(7)}, 1.2, schedule={"kind": "every_k", "k": 3}),
        ],
    ]


def assert_same(hf, fast):
    assert torch.equal(fast.sequences, hf.sequences)
    assert torch.equal(fast.codes, hf.codes)
    assert fast.audio.shape == hf.audio.shape
    torch.testing.assert_close(fast.audio, hf.audio, rtol=0, atol=1e-6)
    assert fast.sample_rate == hf.sample_rate


@pytest.mark.parametrize("guidance", [3.0, 1.0])
@pytest.mark.parametrize("steered", [False, True])
def test_greedy_matches_hf(tiny_adapter, guidance, steered):
    steering = mixed_rows() if steered else None
    kw = dict(max_new_tokens=STEPS, guidance_scale=guidance, steering=steering)
    hf = generate(tiny_adapter, PROMPTS, **kw)
    if steered:  # the steering is strong enough to matter
        assert not torch.equal(hf.codes, generate(tiny_adapter, PROMPTS, **dict(kw, steering=None)).codes)
    assert_same(hf, fast_generate(tiny_adapter, PROMPTS, **kw))
    # the graph-shaped step (device step counter, fused weights, masked fixed-length cache), no graphs
    bucketed = fast_generate(tiny_adapter, PROMPTS, bucketed=True, bucket=8, decode_audio=False, **kw)
    assert torch.equal(bucketed.codes, hf.codes)


@pytest.mark.parametrize("guidance", [3.0, 1.0])
def test_seeded_sampling_matches_hf(tiny_adapter, guidance):
    seeds = [11, 12, 13]
    kw = dict(max_new_tokens=STEPS, guidance_scale=guidance, seeds=seeds, top_k=20, temperature=1.3)
    hf = generate(tiny_adapter, PROMPTS, **kw)
    assert_same(hf, fast_generate(tiny_adapter, PROMPTS, **kw))
    steered = dict(kw, steering=mixed_rows())
    assert_same(generate(tiny_adapter, PROMPTS, **steered), fast_generate(tiny_adapter, PROMPTS, **steered))
    # a row's codes depend only on its own seed
    alone = fast_generate(tiny_adapter, PROMPTS[1:2], **dict(kw, seeds=seeds[1:2]))
    assert torch.equal(alone.codes[0], hf.codes[1])


def test_broadcast_steering_matches_hf(tiny_adapter):
    one = [Intervention({"resid_post.2": vec(8)}, 2.0, operator="norm_add", half="cond")]
    kw = dict(max_new_tokens=STEPS, seeds=[1, 2, 3], steering=one, decode_audio=False)
    hf = generate(tiny_adapter, PROMPTS, **kw)
    fast = fast_generate(tiny_adapter, PROMPTS, **kw)
    assert torch.equal(fast.sequences, hf.sequences) and fast.audio is None


def test_alpha_zero_is_unsteered(tiny_adapter):
    kw = dict(max_new_tokens=STEPS, seeds=[5, 6, 7])
    base = fast_generate(tiny_adapter, PROMPTS, **kw)
    for op in ("add", "norm_add", "ablate"):
        iv = Intervention({f"{k}.{i}": vec(9) for k in ("resid_post", "mlp_out") for i in range(4)}, 0.0, op)
        steered = fast_generate(tiny_adapter, PROMPTS, steering=[iv], **kw)
        assert torch.equal(steered.codes, base.codes), op
        assert torch.equal(steered.audio, base.audio), op
    moved = fast_generate(
        tiny_adapter, PROMPTS, steering=[Intervention({"resid_post.1": vec(9, 20)}, 4.0)], **kw
    )
    assert (moved.codes != base.codes).any()


def test_projection_and_eager_attention(tmp_path):
    """A text encoder narrower than the decoder (enc_to_dec_proj) and eager attention."""
    path = build_tiny_musicgen(tmp_path / "proj", seed=3, text_d_model=16)
    adapter = load_model(str(path), attn_implementation="eager")
    assert hasattr(adapter.model, "enc_to_dec_proj")
    kw = dict(max_new_tokens=STEPS, seeds=[3, 4], steering=mixed_rows()[:2])
    assert_same(generate(adapter, PROMPTS[:2], **kw), fast_generate(adapter, PROMPTS[:2], **kw))


def test_errors(tiny_adapter):
    with pytest.raises(SteeringError, match="built for 2 rows"):
        fast_generate(tiny_adapter, PROMPTS, max_new_tokens=STEPS, steering=mixed_rows()[:2])
    with pytest.raises(ValueError, match="seed per prompt"):
        fast_generate(tiny_adapter, PROMPTS, max_new_tokens=STEPS, seeds=[1])
    with pytest.raises(ValueError, match="CUDA graphs"):
        fast_generate(tiny_adapter, PROMPTS, max_new_tokens=STEPS, use_cuda_graphs=True)


def test_engines_behind_one_interface(tiny_adapter):
    request = DecodeRequest(PROMPTS, STEPS, seeds=(1, 2, 3), steering=mixed_rows(), options={"bucket": 8})
    fast = FastEngine()
    assert fast.name == "fast" and fast.unsupported_reason(tiny_adapter, request) is None
    hf = HFEngine().generate(
        tiny_adapter, DecodeRequest(PROMPTS, STEPS, seeds=(1, 2, 3), steering=mixed_rows())
    )
    assert_same(hf, fast.generate(tiny_adapter, request))


def test_bucketed_decoder_is_reused_and_refilled(tiny_adapter):
    """Bucketed (graph-shaped) decoders are cached per model and refilled in place by the next call of the
    same shape: text, seeds and steering values change, results stay equal to HF."""
    clear_fast_cache()
    rows = mixed_rows()
    calls = [
        (PROMPTS, [1, 2, 3], rows),
        (PROMPTS[::-1], [7, 8, 9], [rows[1], rows[2], rows[0]]),  # other text lengths, values per row
        (PROMPTS, [1, 2, 3], rows),
    ]
    entries, outs = [], []
    for prompts, seeds, steering in calls:
        kw = dict(max_new_tokens=STEPS, seeds=seeds, steering=steering, decode_audio=False)
        hf = generate(tiny_adapter, prompts, **kw)
        outs.append((hf, fast_generate(tiny_adapter, prompts, bucketed=True, bucket=8, **kw)))
        entries.append(cached_entry(tiny_adapter.model))
    for hf, fast in outs:  # also: outputs do not alias the reused buffers
        assert torch.equal(fast.sequences, hf.sequences)
    assert entries[0] is entries[1] is entries[2]
    fast_generate(tiny_adapter, PROMPTS[:2], max_new_tokens=STEPS, bucketed=True, decode_audio=False)
    assert cached_entry(tiny_adapter.model) is not entries[0]
    clear_fast_cache()


def test_cache_does_not_keep_models_alive(tiny_model_dir):
    clear_fast_cache()
    adapter = load_model(str(tiny_model_dir))
    fast_generate(adapter, PROMPTS[:1], max_new_tokens=STEPS, bucketed=True, decode_audio=False)
    ref = weakref.ref(adapter.model)
    assert cached_entry(ref()) is not None and cached_model_count() == 1
    del adapter
    gc.collect()
    assert ref() is None and cached_model_count() == 0


def test_shipped_testbed_matches_hf():
    """The fast loop on the shipped testbed (T5 + 4-layer decoder + 16 kHz EnCodec): greedy and seeded
    sampled codes identical to HF, unsteered and steered with the shipped direction."""
    adapter = load_model("testbed")
    directions = load_directions(CHECKPOINTS_DIR / "testbed/directions/testbed_timbre.safetensors", adapter)
    vectors = inject("one_to_all", directions.for_method("diffmean"), [1], adapter.num_layers)
    prompts = ["bright plucked synth", "a dark organ groove", "quick bass line"]
    steering = [[Intervention(vectors, a)] for a in (-4.0, 0.0, 4.0)]
    for kw in (dict(), dict(seeds=[3, 4, 5], top_k=50)):
        codes = {}
        for name, rows in (("plain", None), ("steered", steering)):
            args = dict(max_new_tokens=30, steering=rows, decode_audio=False, **kw)
            codes[name] = generate(adapter, prompts, **args).codes
            assert torch.equal(fast_generate(adapter, prompts, **args).codes, codes[name]), (kw, name)
        assert torch.equal(codes["steered"][1], codes["plain"][1])  # the α = 0 row
        assert not torch.equal(codes["steered"][[0, 2]], codes["plain"][[0, 2]])
