import numpy as np
import pytest
import torch

from steerlit.directions.probes import LinearProbeModule
from steerlit.engines.hf import generate
from steerlit.intervene.gate import GateError, ProbeGate, check_gate_levels, load_probe_gate
from steerlit.intervene.steer import Intervention, Steering, SteeringError, hook_only_reason

PROMPTS = ["a fast techno track", "slow jazz piano"]
GATE_SITE = "resid_post.1"
STEPS = 24


def vector(seed, width=32):
    return torch.randn(width, generator=torch.Generator().manual_seed(seed)) * 3


def steered(adapter, gate=None, alpha=2.0, seeds=(5, 6)):
    sites = {f"resid_post.{i}": vector(0) for i in (1, 2, 3)} | {"attn_head.2.1": vector(1, 8)}
    iv = Intervention(sites, alpha, gate=gate)
    with Steering(adapter, [iv]) as st:
        out = generate(adapter, PROMPTS, max_new_tokens=STEPS, seeds=list(seeds))
    return out, (st.gate_openness()[:STEPS] if gate is not None else None)


@pytest.mark.parametrize("mode, smoothing", [("stop", 0.0), ("proportional", 0.0), ("stop", 0.9)])
def test_present_probe_equals_no_steering_and_absent_equals_constant(tiny_adapter, mode, smoothing):
    base = generate(tiny_adapter, PROMPTS, max_new_tokens=STEPS, seeds=[5, 6])
    constant, _ = steered(tiny_adapter)
    assert not torch.equal(constant.codes, base.codes)
    present, open_present = steered(
        tiny_adapter, ProbeGate(GATE_SITE, torch.zeros(32), 60.0, mode, 0.5, smoothing)
    )
    absent, open_absent = steered(
        tiny_adapter, ProbeGate(GATE_SITE, torch.zeros(32), -60.0, mode, 0.5, smoothing)
    )
    assert torch.equal(present.codes, base.codes) and torch.equal(present.audio, base.audio)
    assert torch.equal(absent.codes, constant.codes) and torch.equal(absent.audio, constant.audio)
    np.testing.assert_array_equal(open_present, np.zeros(STEPS))
    np.testing.assert_array_equal(open_absent, np.ones(STEPS))


def test_a_real_probe_gate_closes_as_the_pole_appears(tiny_adapter):
    # A probe along the steering vector: steering pushes the stream towards "present", so the gate closes.
    gate = ProbeGate(GATE_SITE, vector(0) / 9, -1.0, "stop", threshold=0.55)
    constant, _ = steered(tiny_adapter, alpha=3.0)
    out, openness = steered(tiny_adapter, gate, alpha=3.0)
    assert set(np.unique(openness)) <= {0.0, 0.5, 1.0}
    assert openness[0] == 1.0 and openness[-1] < 1.0
    assert np.all(np.diff(openness) <= 0)  # stop latches: a closed gate stays closed
    assert not torch.equal(out.codes, constant.codes)


def test_probe_gate_schedule_reads_a_saved_probe(tiny_adapter, tmp_path):
    sites = ["resid_post.0", GATE_SITE]
    probe = LinearProbeModule(sites, 32, mean=torch.full((2, 32), 0.5), std=torch.full((2, 32), 2.0))
    with torch.no_grad():
        probe.weight.copy_(torch.randn(2, 32))
        probe.bias.fill_(0.3)
    path = probe.save(tmp_path / "probe.safetensors")
    gate = load_probe_gate(path, GATE_SITE, mode="proportional", threshold=0.7)
    x = torch.randn(5, 32)
    expected = torch.sigmoid(probe(torch.stack([x, x], dim=1))[:, 1])
    torch.testing.assert_close(torch.sigmoid(x @ gate.weight + gate.bias), expected, atol=1e-5, rtol=0)
    schedule = {"kind": "probe_gate", "probe": str(path), "site": GATE_SITE, "mode": "proportional"}
    by_schedule = Intervention({"resid_post.2": vector(2)}, 1.0, schedule=schedule)
    by_gate = Intervention(
        {"resid_post.2": vector(2)}, 1.0, gate=load_probe_gate(path, GATE_SITE, mode="proportional")
    )
    codes = [
        generate(tiny_adapter, PROMPTS, max_new_tokens=12, steering=[iv]).codes
        for iv in (by_schedule, by_gate)
    ]
    assert torch.equal(*codes)
    with pytest.raises(GateError, match="no probe for site"):
        load_probe_gate(path, "resid_post.3")


def test_rows_gated_at_different_sites_in_one_batch_equal_separate_runs(tiny_adapter):
    present = ProbeGate("resid_post.0", torch.zeros(32), 60.0)
    absent = ProbeGate("resid_post.2", torch.zeros(32), -60.0, "proportional")
    v = {f"resid_post.{i}": vector(3) for i in (2, 3)}
    rows = [[Intervention(v, 2.0, gate=present)], [Intervention(v, 2.0, gate=absent)]]
    with Steering(tiny_adapter, rows) as st:
        batched = generate(tiny_adapter, PROMPTS, max_new_tokens=STEPS, seeds=[5, 6])
    base = generate(tiny_adapter, PROMPTS[:1], max_new_tokens=STEPS, seeds=[5])
    constant = generate(
        tiny_adapter, PROMPTS[1:], max_new_tokens=STEPS, seeds=[6], steering=[Intervention(v, 2.0)]
    )
    assert torch.equal(batched.codes[0], base.codes[0]) and torch.equal(batched.codes[1], constant.codes[0])
    assert st.gate_openness("resid_post.0")[0] == 0.0 and st.gate_openness("resid_post.2")[0] == 1.0


@pytest.mark.parametrize(("threshold", "smoothing"), [(0.0, 0.5), (1.0, 0.5), (0.5, 1.0), (0.5, -0.1)])
def test_gate_levels_refuse_the_edges_a_gate_cannot_use(threshold, smoothing):
    check_gate_levels(0.5, 0.0)  # a probability inside (0, 1), no smoothing
    with pytest.raises(GateError, match="threshold" if smoothing == 0.5 else "smoothing"):
        check_gate_levels(threshold, smoothing)


def test_bad_gates(tiny_adapter):
    with pytest.raises(GateError, match="Unknown gate mode"):
        ProbeGate(GATE_SITE, torch.zeros(32), mode="sometimes")
    with pytest.raises(GateError, match="threshold"):
        ProbeGate(GATE_SITE, torch.zeros(32), threshold=1.5)
    with pytest.raises(GateError, match="smoothing"):
        ProbeGate(GATE_SITE, torch.zeros(32), smoothing=1.0)
    with pytest.raises(SteeringError, match="width 8"):
        Steering(
            tiny_adapter,
            [Intervention({"resid_post.2": vector(0)}, gate=ProbeGate(GATE_SITE, torch.zeros(8)))],
        )
    two = [
        Intervention({"resid_post.2": vector(0)}, gate=ProbeGate(GATE_SITE, torch.zeros(32))),
        Intervention({"resid_post.3": vector(0)}, gate=ProbeGate("resid_post.0", torch.zeros(32))),
    ]
    with pytest.raises(SteeringError, match="gates at two sites"):
        Steering(tiny_adapter, [two])
    with pytest.raises(SteeringError, match="no probe gate"):
        Steering(tiny_adapter, [Intervention({"resid_post.2": vector(0)})]).gate_openness()


def test_hook_only_reason_names_heads_and_gates():
    plain = Intervention({"resid_post.2": vector(0)})
    assert (
        hook_only_reason(None) is None
        and hook_only_reason([plain]) is None
        and hook_only_reason([[plain], []]) is None
    )
    assert "attention-head" in hook_only_reason([Intervention({"attn_head.1.0": vector(0, 8)})])
    gated = Intervention({"resid_post.2": vector(0)}, gate=ProbeGate(GATE_SITE, torch.zeros(32)))
    assert "probe-gated" in hook_only_reason([[plain], [gated]])
    scheduled = Intervention(
        {"resid_post.2": vector(0)}, schedule={"kind": "probe_gate", "probe": "p", "site": GATE_SITE}
    )
    assert "probe-gated" in hook_only_reason([scheduled])
