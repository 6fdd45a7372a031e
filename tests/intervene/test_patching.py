import numpy as np
import pytest
import torch

from steerlit.engines.hf import generate
from steerlit.intervene.patching import (
    WHOLE_GENERATION,
    Patching,
    PatchingError,
    PatchRow,
    StepWindow,
    first_steps,
    normalised_effect,
    patch_grid,
    record_sources,
)
from steerlit.intervene.record import ActivationRecorder

SOURCES = ["a fast techno track", "bright acoustic guitar"]
TARGETS = ["slow jazz piano", "dark ambient drone"]
STEPS = 20


def run(adapter, prompts, guidance=3.0):
    return generate(adapter, prompts, max_new_tokens=STEPS, guidance_scale=guidance)


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_patching_everything_gives_the_source_and_nothing_the_target(tiny_adapter, guidance):
    sites = [f"resid_post.{i}" for i in range(4)]
    src = {}
    sources = record_sources(
        tiny_adapter, sites, lambda: src.setdefault("out", run(tiny_adapter, SOURCES, guidance))
    )
    assert sources["resid_post.0"].shape == (2 * (2 if guidance > 1 else 1), STEPS, 32)
    prompts = [*TARGETS, *TARGETS]
    rows = [PatchRow(0, tuple(sites)), PatchRow(1, tuple(sites)), PatchRow(0), PatchRow(1)]
    with Patching(tiny_adapter, sources, rows):
        patched = run(tiny_adapter, prompts, guidance)
    target = run(tiny_adapter, prompts, guidance)
    assert torch.equal(patched.codes[:2], src["out"].codes)
    assert torch.equal(patched.codes[2:], target.codes[2:])
    assert torch.equal(run(tiny_adapter, TARGETS, guidance).codes, patched.codes[2:])
    assert not torch.equal(target.codes[:2], src["out"].codes)


def test_head_and_cross_attention_patching_at_every_layer_is_exact(tiny_adapter):
    sites = [f"attn_head.{i}.{h}" for i in range(4) for h in range(4)] + [f"xattn_out.{i}" for i in range(4)]
    src = {}
    sources = record_sources(tiny_adapter, sites, lambda: src.setdefault("out", run(tiny_adapter, SOURCES)))
    with Patching(tiny_adapter, sources, [PatchRow(0, tuple(sites)), PatchRow(1, tuple(sites[:16]))]):
        patched = run(tiny_adapter, TARGETS)
    assert torch.equal(patched.codes[0], src["out"].codes[0])
    assert not torch.equal(patched.codes[1], src["out"].codes[1])  # heads alone: the text still differs


def test_cross_attention_at_every_layer_carries_the_whole_prompt(tiny_adapter):
    sites = [f"xattn_out.{i}" for i in range(4)]
    src = {}
    sources = record_sources(tiny_adapter, sites, lambda: src.setdefault("out", run(tiny_adapter, SOURCES)))
    with Patching(tiny_adapter, sources, [PatchRow(0, tuple(sites)), PatchRow(1, tuple(sites))]):
        patched = run(tiny_adapter, TARGETS)
    assert torch.equal(patched.codes, src["out"].codes)


def test_a_step_window_patches_only_its_steps(tiny_adapter):
    last = "resid_post.3"
    src = {}
    sources = record_sources(tiny_adapter, [last], lambda: src.setdefault("out", run(tiny_adapter, SOURCES)))
    k = 6
    rows = [PatchRow(0, (last,), first_steps(k)), PatchRow(1, (last,), StepWindow(4, 9))]
    with (
        Patching(tiny_adapter, sources, rows),
        ActivationRecorder(tiny_adapter, [last], reduction="all", half="both") as rec,
    ):
        patched = run(tiny_adapter, TARGETS)
    seen, recorded = rec.results[last], sources[last]
    assert torch.equal(seen[0, :k], recorded[0, :k]) and torch.equal(
        seen[2, :k], recorded[2, :k]
    )  # both halves
    assert not torch.equal(seen[0, k:], recorded[0, k:])
    assert torch.equal(seen[1, 4:9], recorded[1, 4:9]) and not torch.equal(seen[1, :4], recorded[1, :4])
    # Greedy tokens 1..k come from the last layer's patched states: the source's.
    src_seq = src["out"].sequences.view(2, 4, -1)
    assert torch.equal(patched.sequences.view(2, 4, -1)[0, :, 1 : k + 1], src_seq[0, :, 1 : k + 1])


def test_bad_patching_input(tiny_adapter):
    sources = record_sources(tiny_adapter, ["resid_post.1"], lambda: run(tiny_adapter, SOURCES))
    with pytest.raises(PatchingError, match="not recorded"):
        Patching(tiny_adapter, sources, [PatchRow(0, ("resid_post.2",))])
    with pytest.raises(PatchingError, match="empty"):
        StepWindow(5, 5)
    with (
        pytest.raises(PatchingError, match="outside the 2 recorded"),
        Patching(tiny_adapter, sources, [PatchRow(2, ("resid_post.1",))]),
    ):
        run(tiny_adapter, TARGETS[:1])
    with (
        pytest.raises(PatchingError, match="beyond the 20 recorded"),
        Patching(tiny_adapter, sources, [PatchRow(0, ("resid_post.1",)), PatchRow(1)]),
    ):
        generate(tiny_adapter, TARGETS, max_new_tokens=STEPS + 3)


def test_grid_windows_and_effect():
    rows = patch_grid(2, [("resid_post.0",), ("resid_post.1",)], [WHOLE_GENERATION, first_steps(5)])
    assert len(rows) == 8 and rows[1] == PatchRow(0, ("resid_post.0",), StepWindow(0, 5))
    assert [w.name for w in (WHOLE_GENERATION, StepWindow(25, 100))] == ["0-end", "25-100"]
    effect = normalised_effect(
        np.array([1.0, 3.0, 2.0]), np.array([3.0, 3.0, 2.0]), np.array([1.0, 1.0, 2.0])
    )
    np.testing.assert_array_equal(effect[:2], [0.0, 1.0])
    assert np.isnan(effect[2])
