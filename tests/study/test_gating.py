"""The head-probe stage of `steerlit patch` writes head directions that a `top_heads` grid steers from."""

import dataclasses
import json

import torch
import yaml

from steerlit.data.probe_set import load_probe_set
from steerlit.directions.io import load_directions
from steerlit.directions.settings import ProbeTrainSettings
from steerlit.engines.grid import GridRow, SteerTerm, row_steering
from steerlit.engines.hf import generate
from steerlit.engines.settings import GenerationSettings
from steerlit.intervene.injection import best_heads
from steerlit.study.gating import HEAD_METHOD, run_head_probe_maps
from steerlit.study.layout import RunLayout
from steerlit.study.patch_settings import GateSettings

NOUNS = ["drums", "piano", "bass", "organ", "strings", "synth", "choir", "guitar"]


def toy_tempo_set(folder):
    pairs = [{"fast": f"fast {n} loop", "slow": f"slow {n} loop"} for n in NOUNS]
    data = {
        "name": "toy_tempo",
        "description": "toy",
        "poles": {"positive": "fast", "negative": "slow"},
        "prompts": {pole: [p[pole] for p in pairs] for pole in ("fast", "slow")},
        "pairs": pairs,
    }
    (folder / "toy_tempo.yaml").write_text(yaml.safe_dump(data))
    return load_probe_set(str(folder / "toy_tempo.yaml"))


def test_head_probe_stage_saves_directions_that_top_heads_steers_from(tiny_adapter, tmp_path):
    gate = GateSettings(
        layers=(1,),
        strategies=("one_to_all",),
        poles=("negative",),
        head_steps=6,
        split=(0.5, 0.25, 0.25),
        probe=ProbeTrainSettings(lr=0.05, max_epochs=5, batch_size=1024),
    )
    generation = GenerationSettings(seconds=0.5, top_k=20, batch_size=16)
    probes, paths = run_head_probe_maps(
        tiny_adapter, {"toy_tempo": toy_tempo_set(tmp_path)}, generation, gate, tmp_path
    )
    path = RunLayout(tmp_path).directions("toy_tempo")
    assert path == probes["toy_tempo"].head_directions and path in paths
    directions = load_directions(path, tiny_adapter)  # checks the model's fingerprint and every head's width
    assert directions.methods == [HEAD_METHOD] and len(directions.sites(HEAD_METHOD)) == 16
    saved_accuracy = json.loads(directions.metadata["head_accuracy"])
    assert saved_accuracy == probes["toy_tempo"].head_accuracy
    term = SteerTerm("toy_tempo", HEAD_METHOD, 3, 0.0, "top_heads", site_kind="attn_head")
    (iv,) = row_steering(GridRow("a loop", 0, (term,)), {"toy_tempo": directions}, tiny_adapter.num_layers)
    assert sorted(iv.vectors) == sorted(best_heads(saved_accuracy, 3))
    assert all(v.shape == (8,) for v in iv.vectors.values())
    base = generate(tiny_adapter, ["a loop"], max_new_tokens=16)
    assert torch.equal(generate(tiny_adapter, ["a loop"], max_new_tokens=16, steering=[iv]).codes, base.codes)
    norm = min(float(v.norm()) for v in iv.vectors.values())  # diff-mean scale: small on a random model
    strong = dataclasses.replace(term, alpha=40.0 / norm)
    (iv,) = row_steering(GridRow("a loop", 0, (strong,)), {"toy_tempo": directions}, tiny_adapter.num_layers)
    assert not torch.equal(
        generate(tiny_adapter, ["a loop"], max_new_tokens=16, steering=[iv]).codes, base.codes
    )
