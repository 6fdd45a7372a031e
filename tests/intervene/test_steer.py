import pytest
import torch

from steerlit.engines.hf import generate
from steerlit.intervene.record import ActivationRecorder
from steerlit.intervene.steer import Intervention, Steering, SteeringError

PROMPTS = ["a fast techno track", "slow jazz piano"]


def unit(h, seed):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(h, generator=g)
    return v / v.norm()


def all_hooks(adapter):
    mods = [adapter.model, *adapter.model.modules()]
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in mods)


def test_alpha_zero_is_bit_identical(tiny_adapter):
    v = unit(32, 0)
    base = generate(tiny_adapter, PROMPTS, max_new_tokens=30, seeds=[5, 6])
    for op in ("add", "norm_add", "ablate"):
        iv = Intervention({f"resid_post.{i}": v for i in range(4)}, alpha=0.0, operator=op)
        steered = generate(tiny_adapter, PROMPTS, max_new_tokens=30, seeds=[5, 6], steering=[iv])
        assert torch.equal(steered.codes, base.codes), op
        assert torch.equal(steered.audio, base.audio), op


def test_steering_changes_codes_and_hooks_are_removed_on_error(tiny_adapter):
    v = unit(32, 1) * 10
    base = generate(tiny_adapter, PROMPTS, max_new_tokens=30)
    steered = generate(
        tiny_adapter, PROMPTS, max_new_tokens=30, steering=[Intervention({"resid_post.1": v}, 4.0)]
    )
    assert (steered.codes != base.codes).float().mean() > 0.2
    before = all_hooks(tiny_adapter)
    with (
        pytest.raises(RuntimeError, match="boom"),
        Steering(tiny_adapter, [Intervention({"resid_post.1": v})]),
    ):
        assert all_hooks(tiny_adapter) > before
        raise RuntimeError("boom")
    assert all_hooks(tiny_adapter) == before


def _capture_block_inputs(adapter, layer):
    """Capture (args, kwargs) of decoder block ``layer`` during a forward pass."""
    seen = {}

    def pre(_m, args, kwargs):
        seen["args"], seen["kwargs"] = args, dict(kwargs)

    return seen, adapter.decoder_layers[layer].register_forward_pre_hook(pre, with_kwargs=True)


def test_adds_exactly_alpha_v_at_chosen_layer_and_nowhere_else(tiny_adapter):
    a, L, alpha = tiny_adapter, 1, 2.5
    v = unit(32, 2)
    inputs = a.tokenize(PROMPTS)
    dec_in = torch.randint(0, 64, (2 * a.num_codebooks, 9))
    sites = [f"resid_post.{i}" for i in range(a.num_layers)]
    with torch.no_grad(), ActivationRecorder(a, sites, reduction="all") as base:
        a.model(**inputs, decoder_input_ids=dec_in, use_cache=False)
    seen, handle = _capture_block_inputs(a, L + 1)
    try:
        with (
            torch.no_grad(),
            Steering(a, [Intervention({f"resid_post.{L}": v}, alpha)]),
            ActivationRecorder(a, sites, reduction="all") as steered,
        ):
            a.model(**inputs, decoder_input_ids=dec_in, use_cache=False)
    finally:
        handle.remove()
    b, s = base.results, steered.results
    for i in range(L):
        assert torch.equal(b[f"resid_post.{i}"], s[f"resid_post.{i}"])
    torch.testing.assert_close(s[f"resid_post.{L}"], b[f"resid_post.{L}"] + alpha * v, atol=1e-6, rtol=0)
    # Downstream blocks compute on the steered stream with no other change: redo them by hand.
    h = b[f"resid_post.{L}"] + alpha * v
    kwargs = seen["kwargs"]
    with torch.no_grad():
        for i in range(L + 1, a.num_layers):
            h = a.decoder_layers[i](h, *seen["args"][1:], **kwargs)
            torch.testing.assert_close(s[f"resid_post.{i}"], h, atol=1e-5, rtol=0)


def test_batch_of_rows_equals_separate_runs(tiny_adapter):
    v1, v2 = unit(32, 3) * 3, unit(32, 4) * 3
    rows = [
        [],
        [Intervention({"resid_post.0": v1}, 1.5)],
        [Intervention({"resid_post.2": v2}, -2.0, operator="norm_add")],
        [Intervention({f"resid_post.{i}": v1 for i in range(4)}, 0.7), Intervention({"mlp_out.1": v2}, 1.0)],
    ]
    prompts = ["a fast techno track", "slow jazz piano", "bright strings", "dark bass"]
    batched = generate(tiny_adapter, prompts, max_new_tokens=25, steering=rows)
    for i, (prompt, row) in enumerate(zip(prompts, rows)):
        alone = generate(tiny_adapter, [prompt], max_new_tokens=25, steering=[row] if row else None)
        assert torch.equal(alone.codes[0], batched.codes[i]), i


def test_kv_cache_does_not_change_steered_greedy_codes(tiny_adapter):
    iv = Intervention({"resid_post.1": unit(32, 5) * 4}, 1.0, schedule={"kind": "exp_decay", "rate": 0.1})
    cached = generate(tiny_adapter, PROMPTS, max_new_tokens=20, steering=[iv])
    uncached = generate(tiny_adapter, PROMPTS, max_new_tokens=20, steering=[iv], use_cache=False)
    assert torch.equal(cached.codes, uncached.codes)


def test_cfg_half_policy(tiny_adapter):
    v = unit(32, 6) * 5
    site = "resid_post.2"
    results = {}
    for half in ("both", "cond", "uncond"):
        with (
            Steering(tiny_adapter, [Intervention({site: v}, 1.0, half=half)]),
            ActivationRecorder(tiny_adapter, [site], reduction="all", half="both") as rec,
        ):
            generate(tiny_adapter, PROMPTS[:1], max_new_tokens=4, guidance_scale=3.0)
        results[half] = rec.results[site][:, 0]  # prefill step, rows [cond, uncond]
    with ActivationRecorder(tiny_adapter, [site], reduction="all", half="both") as rec:
        generate(tiny_adapter, PROMPTS[:1], max_new_tokens=4, guidance_scale=3.0)
    base = rec.results[site][:, 0]
    torch.testing.assert_close(results["both"], base + v, atol=1e-5, rtol=0)
    torch.testing.assert_close(results["cond"][0], base[0] + v, atol=1e-5, rtol=0)
    assert torch.equal(results["cond"][1], base[1])
    assert torch.equal(results["uncond"][0], base[0])
    torch.testing.assert_close(results["uncond"][1], base[1] + v, atol=1e-5, rtol=0)


def test_schedule_is_keyed_on_decoding_step(tiny_adapter):
    v = unit(32, 7)
    site = "resid_post.0"
    with ActivationRecorder(tiny_adapter, [site], reduction="all") as base:
        generate(tiny_adapter, PROMPTS[:1], max_new_tokens=10)
    codes = generate(tiny_adapter, PROMPTS[:1], max_new_tokens=10).codes
    # Steer only steps >= 6: the first 6 steps' states and the tokens they chose stay the same.
    iv = Intervention({site: v * 50}, 1.0, schedule={"kind": "window", "start": 6})
    with Steering(tiny_adapter, [iv]), ActivationRecorder(tiny_adapter, [site], reduction="all") as st:
        out = generate(tiny_adapter, PROMPTS[:1], max_new_tokens=10)
    assert torch.equal(st.results[site][:, :6], base.results[site][:, :6])
    torch.testing.assert_close(st.results[site][:, 6], base.results[site][:, 6] + 50 * v, atol=1e-4, rtol=0)
    assert torch.equal(out.codes[..., :3], codes[..., :3])


@pytest.mark.parametrize(
    "iv, message",
    [
        (Intervention({"resid_post.7": torch.ones(32)}), "out of range"),
        (Intervention({"resid_pre.1": torch.ones(32)}), "Unknown site kind"),
        (Intervention({"resid_post.1": torch.ones(33)}), "site has hidden size 32"),
        (Intervention({"resid_post.1": torch.full((32,), float("nan"))}), "NaN or inf"),
        (Intervention({"resid_post.1": torch.ones(32)}, alpha=float("inf")), "not finite"),
        (Intervention({"resid_post.1": torch.ones(32)}, operator="multiply"), "Unknown steering operator"),
        (Intervention({"resid_post.1": torch.ones(32)}, half="left"), "Unknown CFG half"),
        (Intervention({"resid_post.1": torch.ones(32)}, schedule={"kind": "sine"}), "Unknown schedule"),
        (Intervention({}), "no target sites"),
    ],
)
def test_bad_steering_input_is_a_clear_error(tiny_adapter, iv, message):
    with pytest.raises(ValueError, match=message):
        Steering(tiny_adapter, [iv])


def test_row_count_mismatch(tiny_adapter):
    rows = [[Intervention({"resid_post.1": torch.ones(32)})]] * 3
    with pytest.raises(SteeringError, match="3 rows but the batch has 2"):
        generate(tiny_adapter, PROMPTS, max_new_tokens=3, steering=rows)
    with pytest.raises(ValueError, match="one seed per prompt"):
        generate(tiny_adapter, PROMPTS, max_new_tokens=3, seeds=[1])


def test_site_tables_hold_per_row_vectors_and_coefficients(tiny_adapter):
    """Steering.tables: per site, SiteTable slots with (R, H) vectors and (R, P) coefficients per CFG half."""
    v1, v2 = unit(32, 8), unit(32, 9)
    rows = [
        [Intervention({"resid_post.1": v1}, 2.0, half="cond")],
        [],
        [
            Intervention({"resid_post.1": v2}, -1.0, schedule={"kind": "window", "start": 3}),
            Intervention({"resid_post.1": v1}, 0.5),  # a second add at the same site: a second slot
        ],
    ]
    st = Steering(tiny_adapter, rows)
    assert st.sites == ["resid_post.1"] and not st.broadcast
    first, second = st.tables[tiny_adapter.parse_site("resid_post.1")]
    P = tiny_adapter.max_positions
    assert (
        first.operator == "add"
        and first.vectors.shape == (3, 32)
        and first.coefficients["cond"].shape == (3, P)
    )
    vec, coef = first.batch(cfg=False)
    assert vec.shape == (3, 32) and coef.shape == (3, P) and vec.dtype == tiny_adapter.dtype
    torch.testing.assert_close(vec[0], v1) and torch.testing.assert_close(vec[2], v2)
    assert (
        (coef[0] == 2.0).all()
        and (coef[1] == 0).all()
        and (coef[2, :3] == 0).all()
        and (coef[2, 3:] == -1).all()
    )
    vec, coef = first.batch(cfg=True, positions=slice(2, 6))  # [cond rows; uncond rows], positions 2..5
    assert vec.shape == (6, 32) and coef.shape == (6, 4)
    assert (coef[0] == 2.0).all() and (coef[3] == 0).all()  # row 0 steers its conditional half only
    assert torch.equal(coef[2], coef[5]) and torch.equal(coef[2], torch.tensor([0.0, -1.0, -1.0, -1.0]))
    _, coef = second.batch(cfg=False)
    assert (coef[2] == 0.5).all() and (coef[:2] == 0).all()
    assert st.repeats_for(3) == 1
    with pytest.raises(SteeringError, match="built for 3 rows but the batch has 2"):
        st.repeats_for(2)
    with pytest.raises(SteeringError, match="exceeds the decoder's"):
        st.check_positions(P + 1)


def test_broadcast_tables_repeat_per_prompt(tiny_adapter):
    st = Steering(tiny_adapter, [Intervention({"mlp_out.0": unit(32, 10)}, 1.5, half="uncond")])
    assert st.broadcast and st.repeats_for(4) == 4
    (table,) = st.tables[tiny_adapter.parse_site("mlp_out.0")]
    vec, coef = table.batch(cfg=True, repeats=4, positions=slice(0, 2))
    assert vec.shape == (8, 32) and coef.shape == (8, 2)
    assert (coef[:4] == 0).all() and (coef[4:] == 1.5).all()  # the unconditional half only


def test_head_steering_at_alpha_zero_is_bit_identical(tiny_adapter):
    v = unit(8, 7)
    base = generate(tiny_adapter, PROMPTS, max_new_tokens=30, seeds=[5, 6])
    for op in ("add", "norm_add", "ablate"):
        iv = Intervention(
            {f"attn_head.{i}.{h}": v for i in range(4) for h in range(4)}, alpha=0.0, operator=op
        )
        steered = generate(tiny_adapter, PROMPTS, max_new_tokens=30, seeds=[5, 6], steering=[iv])
        assert torch.equal(steered.codes, base.codes), op
        assert torch.equal(steered.audio, base.audio), op


def test_head_steering_moves_only_its_head_columns(tiny_adapter):
    a, alpha = tiny_adapter, 3.0
    v = unit(8, 8)
    inputs = a.tokenize(PROMPTS)
    dec_in = torch.randint(0, 64, (2 * a.num_codebooks, 7))
    heads = [f"attn_head.1.{h}" for h in range(4)]
    with torch.no_grad(), ActivationRecorder(a, heads, reduction="all") as base:
        a.model(**inputs, decoder_input_ids=dec_in, use_cache=False)
    ivs = [
        Intervention({"attn_head.1.2": v}, alpha),
        Intervention({"attn_head.1.0": v}, 1.0, operator="ablate"),
    ]
    with torch.no_grad(), Steering(a, ivs), ActivationRecorder(a, heads, reduction="all") as steered:
        a.model(**inputs, decoder_input_ids=dec_in, use_cache=False)
    b, s = base.results, steered.results
    assert torch.equal(b["attn_head.1.1"], s["attn_head.1.1"]) and torch.equal(
        b["attn_head.1.3"], s["attn_head.1.3"]
    )
    torch.testing.assert_close(s["attn_head.1.2"], b["attn_head.1.2"] + alpha * v, atol=1e-6, rtol=0)
    torch.testing.assert_close(s["attn_head.1.0"] @ v, torch.zeros(2, 7), atol=1e-5, rtol=0)
    with pytest.raises(SteeringError, match="site has head_dim 8"):
        Steering(a, [Intervention({"attn_head.1.2": torch.ones(32)})])
    with pytest.raises(SteeringError, match="4 attention heads"):
        Steering(a, [Intervention({"attn_head.1.9": v})])
