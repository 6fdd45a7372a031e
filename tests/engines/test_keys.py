"""Content keys of grid rows: the exact steering vectors and the generation settings are in a row's key, so a
refit regenerates exactly the rows whose vectors changed and a rerun with the same inputs reuses every row."""

import dataclasses

import torch

from steerlit.directions.io import DirectionSet
from steerlit.engines.grid import row_steering
from steerlit.engines.keys import content_keys, generation_digest, row_content_key, steering_digest
from steerlit.engines.results import ResultStore
from steerlit.engines.runner import run_grid
from steerlit.models.loading import load_model

from .grid_helpers import comparable, grid_generation, random_directions, rms_metrics, small_grid


def refit(directions: dict, concept: str, cosine: float = 0.87) -> dict:
    """``directions`` with ``concept``'s vectors turned to cosine ``cosine`` with the old ones (same norm)."""
    old = directions[concept]
    g = torch.Generator().manual_seed(7)
    vectors = {}
    for name, v in old.vectors.items():
        noise = torch.randn(v.shape, generator=g)
        noise -= noise @ v / (v @ v) * v
        turned = cosine * v / v.norm() + (1 - cosine**2) ** 0.5 * noise / noise.norm()
        vectors[name] = turned * v.norm()
    return {**directions, concept: DirectionSet(vectors, dict(old.metadata))}


def test_keys_cover_vectors_and_settings_but_not_the_batch_size(tiny_adapter):
    rows, directions = small_grid(), random_directions(32, 4)
    keys = content_keys(tiny_adapter, rows, directions, grid_generation())
    assert keys == content_keys(tiny_adapter, list(reversed(rows)), directions, grid_generation(batch_size=3))
    assert len(set(keys.values())) == len(rows)
    # a row's key is its row key, the digest of the vectors row_steering gives it, and the generation digest
    row = rows[1]
    vectors = steering_digest(row_steering(row, directions, tiny_adapter.num_layers))
    assert keys[row.key] == row_content_key(row, vectors, generation_digest(tiny_adapter, grid_generation()))
    # other sampling settings change every key; other directions only the steered rows' keys
    hotter = content_keys(tiny_adapter, rows, directions, grid_generation(temperature=0.9))
    assert not set(hotter.values()) & set(keys.values())
    other = content_keys(tiny_adapter, rows, random_directions(32, 4, norm=4.0), grid_generation())
    assert {r.key for r in rows if other[r.key] == keys[r.key]} == {r.key for r in rows if r.is_reference}
    # orthogonalising changes only the rows with two terms
    ortho = content_keys(tiny_adapter, rows, directions, grid_generation(), orthogonalize=True)
    assert {r.key for r in rows if ortho[r.key] != keys[r.key]} == {r.key for r in rows if len(r.terms) > 1}


def test_refitted_directions_regenerate_exactly_the_rows_that_use_them(tiny_adapter, tmp_path):
    """Issue 23: refitted directions (cosine 0.87) under the same run folder used to be served the old rows."""
    rows, before = small_grid(), random_directions(32, 4)
    after = refit(before, "timbre")  # only the two-concept rows use timbre
    kw = dict(metrics_fn=rms_metrics, progress=False)
    first = run_grid(tiny_adapter, rows, before, grid_generation(), store=ResultStore(tmp_path), **kw)
    lines = ResultStore(tmp_path).results_path.read_text().splitlines()
    wavs = {r["key"]: (tmp_path / r["wav"]).read_bytes() for r in first}
    second = run_grid(tiny_adapter, rows, after, grid_generation(), store=ResultStore(tmp_path), **kw)
    changed = {r["row_key"] for r, s in zip(first, second) if r["key"] != s["key"]}
    assert changed == {r.key for r in rows if len(r.terms) > 1}
    for old, new in zip(first, second):  # the rows that do not use timbre are reused: same record and WAV
        if old["row_key"] not in changed:
            assert new == old and (tmp_path / new["wav"]).read_bytes() == wavs[old["key"]]
    assert any(n["rms"] != o["rms"] for o, n in zip(first, second) if o["row_key"] in changed)
    new_lines = ResultStore(tmp_path).results_path.read_text().splitlines()
    assert new_lines[: len(lines)] == lines and len(new_lines) == len(lines) + len(changed)
    # back to the old directions: every row is served from the store, byte-identical to the first run
    third = run_grid(tiny_adapter, rows, before, grid_generation(), store=ResultStore(tmp_path), **kw)
    assert third == first
    assert ResultStore(tmp_path).results_path.read_text().splitlines() == new_lines


def test_reference_keys_depend_only_on_model_and_generation(tiny_adapter, tiny_model_dir):
    refs = [r for r in small_grid() if r.is_reference]
    keys = content_keys(tiny_adapter, refs, None, grid_generation())
    assert keys == content_keys(tiny_adapter, refs, random_directions(32, 4), grid_generation())
    generation = dataclasses.replace(
        grid_generation(), seeds=(1, 2, 3)
    )  # the grid's seed axis is in the rows
    assert content_keys(tiny_adapter, refs, None, generation) == keys
    assert all(len(k) == 16 for k in keys.values())


def test_other_weights_change_every_key(tiny_model_dir):
    """A weight changed in place (e.g. a model trained further in this process) gives other keys."""
    adapter = load_model(str(tiny_model_dir))
    refs = [r for r in small_grid() if r.is_reference]
    before = content_keys(adapter, refs, None, grid_generation())
    with torch.no_grad():
        adapter.model.decoder.lm_heads[0].weight[0, 0] += 1e-3
    after = content_keys(adapter, refs, None, grid_generation())
    assert not set(before.values()) & set(after.values())


def test_same_inputs_same_results_with_refits_in_between(tiny_adapter, tmp_path):
    """A rerun with unchanged directions reuses every row: the records are those of the first run."""
    rows, directions = small_grid()[:6], random_directions(32, 4)
    kw = dict(metrics_fn=rms_metrics, progress=False)
    first = run_grid(tiny_adapter, rows, directions, grid_generation(), store=ResultStore(tmp_path), **kw)
    again = run_grid(tiny_adapter, rows, directions, grid_generation(), store=ResultStore(tmp_path), **kw)
    assert comparable(again) == comparable(first) and len(ResultStore(tmp_path)) == len(rows)
