import pytest
import torch

from steerlit.engines.hf import delay_masked, generate
from steerlit.intervene.record import ActivationRecorder

PROMPTS = ["a fast techno track", "slow jazz piano"]


def teacher_forced_hidden(adapter, prompts, sequences):
    """Decoder hidden states of a teacher-forced pass over generated ids: tuple of (B, T, H)."""
    dec_in = delay_masked(adapter.model, sequences)[:, :-1]
    with torch.no_grad():
        out = adapter.model(**adapter.tokenize(prompts), decoder_input_ids=dec_in, output_hidden_states=True)
    return out.decoder_hidden_states


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_recorded_generation_equals_teacher_forced_pass(tiny_adapter, guidance):
    sites = ["resid_post.0", "resid_post.2"]
    with ActivationRecorder(tiny_adapter, sites, reduction="all") as rec:
        out = generate(tiny_adapter, PROMPTS, max_new_tokens=24, seeds=[3, 4], guidance_scale=guidance)
    hidden = teacher_forced_hidden(tiny_adapter, PROMPTS, out.sequences)
    for site in sites:
        layer = int(site.split(".")[1])
        got = rec.results[site]
        assert got.shape == (2, 24, tiny_adapter.hidden_size)  # one state per decoding step, prefill included
        torch.testing.assert_close(got, hidden[layer + 1], atol=1e-5, rtol=0)


def test_reductions_are_consistent(tiny_adapter):
    site = "resid_post.1"
    recs = {}
    for red in ("all", "first", "mean", "last"):
        with ActivationRecorder(tiny_adapter, [site], reduction=red) as rec:
            generate(tiny_adapter, PROMPTS, max_new_tokens=12)
        recs[red] = rec.results[site]
    full = recs["all"]
    torch.testing.assert_close(recs["first"], full[:, 0])
    torch.testing.assert_close(recs["last"], full[:, -1])
    torch.testing.assert_close(recs["mean"], full.mean(dim=1), atol=1e-6, rtol=0)


def test_cfg_halves_and_float16(tiny_adapter):
    site = "resid_post.3"
    with ActivationRecorder(tiny_adapter, [site], reduction="all", half="both", dtype=torch.float16) as both:
        generate(tiny_adapter, PROMPTS, max_new_tokens=8, guidance_scale=3.0)
    with ActivationRecorder(tiny_adapter, [site], reduction="all", half="uncond") as uncond:
        generate(tiny_adapter, PROMPTS, max_new_tokens=8, guidance_scale=3.0)
    assert both.results[site].shape[0] == 4 and both.results[site].dtype == torch.float16
    torch.testing.assert_close(both.results[site][2:].float(), uncond.results[site], atol=1e-2, rtol=1e-2)
    # The unconditional half sees zeroed text: both of its rows are the same sequence given the same codes.
    assert not torch.allclose(both.results[site][0].float(), both.results[site][2].float())


def test_teacher_forced_recording_without_generate(tiny_adapter):
    inputs = tiny_adapter.tokenize(PROMPTS)
    dec_in = torch.full((2 * tiny_adapter.num_codebooks, 5), 64, dtype=torch.long)
    with ActivationRecorder(tiny_adapter, ["mlp_out.1"], reduction="all") as rec, torch.no_grad():
        tiny_adapter.model(**inputs, decoder_input_ids=dec_in)
    assert rec.results["mlp_out.1"].shape == (2, 5, 32)


def test_bad_recorder_arguments(tiny_adapter):
    with pytest.raises(ValueError, match="Unknown reduction"):
        ActivationRecorder(tiny_adapter, ["resid_post.0"], reduction="median")
    with pytest.raises(ValueError, match="out of range"):
        ActivationRecorder(tiny_adapter, ["resid_post.9"])
    with pytest.raises(ValueError, match="Unknown CFG half"):
        ActivationRecorder(tiny_adapter, ["resid_post.0"], half="left")
    with pytest.raises(RuntimeError, match="Nothing was recorded"):
        with ActivationRecorder(tiny_adapter, ["resid_post.0"]) as rec:
            pass
        rec.results  # noqa: B018


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_head_tensors_projected_by_out_proj_equal_the_attention_output(tiny_adapter, guidance):
    layer = 2
    heads = [f"attn_head.{layer}.{h}" for h in range(4)]
    sites = [*heads, f"attn_out.{layer}"]
    with ActivationRecorder(tiny_adapter, sites, reduction="all", half="both") as rec:
        generate(tiny_adapter, PROMPTS, max_new_tokens=16, seeds=[1, 2], guidance_scale=guidance)
    got = rec.results
    rows = 4 if guidance > 1 else 2
    assert got[heads[0]].shape == (rows, 16, 8)  # (B', T, head_dim)
    out_proj = tiny_adapter.decoder_layers[layer].self_attn.out_proj
    with torch.no_grad():
        projected = out_proj(torch.cat([got[h] for h in heads], dim=-1))
    torch.testing.assert_close(projected, got[f"attn_out.{layer}"], atol=1e-5, rtol=0)
    with ActivationRecorder(tiny_adapter, [heads[1]], reduction="mean") as pooled:
        generate(tiny_adapter, PROMPTS, max_new_tokens=16, seeds=[1, 2], guidance_scale=guidance)
    torch.testing.assert_close(pooled.results[heads[1]], got[heads[1]][:2].mean(1), atol=1e-6, rtol=0)


def test_recorder_refuses_heads_out_of_range(tiny_adapter):
    with pytest.raises(ValueError, match="4 attention heads"):
        ActivationRecorder(tiny_adapter, ["attn_head.0.4"])
