import dataclasses

import numpy as np
import pytest
import torch

from steerlit.directions.head_probes import (
    accuracy_map,
    head_accuracy,
    record_head_activations,
    save_head_directions,
    save_heatmap,
    train_head_probes,
)
from steerlit.directions.io import DirectionSet, load_directions
from steerlit.directions.settings import ProbeTrainSettings
from steerlit.engines.grid import GridRow, SteerTerm, row_steering
from steerlit.engines.hf import generate
from steerlit.engines.settings import GenerationSettings
from steerlit.intervene.injection import best_heads
from steerlit.models.sites import list_head_sites

SETTINGS = ProbeTrainSettings(
    lr=0.05, weight_decay=0.05, max_epochs=40, batch_size=None, val_every_n_epochs=40
)


def planted(n=160, width=8, informative="attn_head.2.1", seed=0):
    """Random head activations where only ``informative`` separates the labels."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    acts = {s: torch.randn(n, width, generator=g) for s in list_head_sites(4, 4)}
    acts[informative][:, 3] += 4.0 * (2 * labels - 1)
    splits = ["train" if i < n // 2 else "test" for i in range(n)]
    return acts, labels, splits


def test_vectorised_head_probes_find_the_informative_head():
    acts, labels, splits = planted()
    module, dm = train_head_probes(acts, labels, splits, SETTINGS)
    assert module.weight.shape == (16, 8)  # one probe per head, all in one module
    acc = head_accuracy(module, dm, "test")
    assert acc["attn_head.2.1"] == 1.0
    others = [v for s, v in acc.items() if s != "attn_head.2.1"]
    assert max(others) < 0.85 and 0.35 < np.mean(others) < 0.65
    assert best_heads(acc, 1) == ["attn_head.2.1"]
    grid = accuracy_map(acc, 4, 4)
    assert grid.shape == (4, 4) and grid[2, 1] == 1.0
    direction = module.directions("unit")["attn_head.2.1"]
    assert (
        direction.shape == (8,) and direction.abs().argmax() == 3 and direction[3] > 0.5
    )  # positive pole higher


def test_recorded_head_activations_and_the_saved_map(tiny_adapter, tmp_path):
    prompts = ["fast drums", "slow drums", "fast piano", "slow piano"]
    acts = record_head_activations(
        tiny_adapter, prompts, GenerationSettings(batch_size=3), steps=6, extra_sites=("resid_post.1",)
    )
    assert acts["attn_head.0.0"].shape == (4, 8) and acts["resid_post.1"].shape == (4, 32)
    assert len(acts) == 17
    grid = accuracy_map({"attn_head.1.2": 0.75, "attn_head.3.0": 1.0}, 4, 4)
    assert np.isnan(grid[0, 0]) and grid[1, 2] == 0.75
    csv_path, png_path = save_heatmap(
        grid, [f"L{i}" for i in range(4)], [f"h{j}" for j in range(4)], tmp_path / "map", title="acc"
    )
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "row,column,value" and len(lines) == 17
    assert png_path.read_bytes()[:4] == b"\x89PNG"


def test_top_heads_grid_strategy_steers_the_most_accurate_heads(tiny_adapter, tmp_path):
    acts, labels, splits = planted()
    module, dm = train_head_probes(acts, labels, splits, SETTINGS)
    acc = head_accuracy(module, dm, "test")
    path = save_head_directions(tmp_path / "heads.safetensors", module, acc, model_id="tiny", concept="tempo")
    directions = {"tempo": load_directions(path)}
    term = SteerTerm("tempo", "head_probe", 2, 0.0, "top_heads", site_kind="attn_head")
    (iv,) = row_steering(GridRow("a fast techno track", 0, (term,)), directions, 4)
    assert (
        len(iv.vectors) == 2 and "attn_head.2.1" in iv.vectors and iv.vectors["attn_head.2.1"].shape == (8,)
    )
    base = generate(tiny_adapter, ["a fast techno track"], max_new_tokens=16)
    assert torch.equal(
        generate(tiny_adapter, ["a fast techno track"], max_new_tokens=16, steering=[iv]).codes, base.codes
    )
    strong = dataclasses.replace(term, alpha=40.0)
    (iv,) = row_steering(GridRow("a fast techno track", 0, (strong,)), directions, 4)
    assert not torch.equal(
        generate(tiny_adapter, ["a fast techno track"], max_new_tokens=16, steering=[iv]).codes, base.codes
    )
    with pytest.raises(KeyError, match="head-probe direction file"):
        row_steering(
            GridRow("x", 0, (term,)),
            {"tempo": DirectionSet({("head_probe", "attn_head.0.0"): torch.ones(8)})},
            4,
        )
