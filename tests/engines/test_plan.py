"""The batch plan and resume state shared by the local and the DDP grid."""

import numpy as np
import pytest

from steerlit.engines.plan import (
    GridPlan,
    auto_batch_size,
    commit_batch,
    estimate_row_bytes,
    plan_batches,
    plan_grid,
    records_in_row_order,
    resolve_batch_size,
    store_settings,
)
from steerlit.engines.results import ResultStore

from .grid_helpers import STEPS, grid_generation, random_directions, small_grid


def identity_keys(rows) -> dict[str, str]:
    return {r.key: r.key for r in rows}


def test_plan_is_deduplicated_sorted_and_chunked():
    rows = small_grid()
    plan = plan_batches(rows + rows[:3], 4)
    assert sum(len(b) for b in plan) == len(rows) and plan == plan_batches(list(reversed(rows)), 4)
    assert [len(b) for b in plan] == [4, 4, 4, 4, 2]
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        plan_batches(rows, 0)


def test_grid_plan_pending_batches():
    rows = small_grid()
    batches = plan_batches(rows, 4)
    done = [r.key for r in batches[0]] + [batches[2][0].key]  # batch 0 complete, batch 2 partly
    plan = GridPlan.build(rows, 4, identity_keys(rows), done)
    assert plan.batches == tuple(tuple(b) for b in batches)
    assert plan.pending == [1, 2, 3, 4] and plan.total_rows == 18 and plan.pending_rows == 14
    assert GridPlan.build(rows, 4, identity_keys(rows)).pending == [0, 1, 2, 3, 4]
    # done is matched by content key: other content keys for the same rows make every batch pending again
    other = {r.key: f"x{r.key}" for r in rows}
    assert GridPlan.build(rows, 4, other, done).pending == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="No content key for 1 grid rows"):
        GridPlan.build(rows, 4, identity_keys(rows[1:]))


def test_auto_batch_size_cpu_default(tiny_adapter):
    assert auto_batch_size(tiny_adapter, 100) == 16
    assert estimate_row_bytes(tiny_adapter, 250) > estimate_row_bytes(tiny_adapter, 50) > 0


def test_plan_grid_records_settings_and_done_rows(tiny_adapter, tmp_path):
    rows, directions = small_grid(), random_directions(32, 4)
    store = ResultStore(tmp_path)
    plan = plan_grid(
        tiny_adapter, rows, directions, grid_generation(batch_size=5), store=store, orthogonalize=True
    )
    assert plan.batch_size == 5 and plan.done == frozenset()
    settings = store.settings()
    assert settings == store_settings(tiny_adapter, grid_generation(), orthogonalize=True, batch_size=5)
    assert settings["max_new_tokens"] == STEPS and settings["dtype"] == "float32"
    # a store resumed without a batch size keeps its own; another batch size is allowed, other settings not
    assert resolve_batch_size(tiny_adapter, grid_generation(batch_size=None), store) == 5
    assert resolve_batch_size(tiny_adapter, grid_generation(batch_size=None), None) == 16
    # committed rows are done for the next plan (by content key), and a row is committed once
    first = [{**r.flat(), "key": plan.keys[r.key]} for r in plan.batches[0]]
    done: set[str] = set()
    stored = commit_batch(store, first, [None] * len(first), 32000, done)
    assert [r["key"] for r in stored] == [r["key"] for r in first] and done == {r["key"] for r in first}
    assert commit_batch(store, first, [np.zeros(4)] * len(first), 32000, done) == []
    again = plan_grid(
        tiny_adapter, rows, directions, grid_generation(batch_size=None), store=store, orthogonalize=True
    )
    assert again.done == done and again.pending == [1, 2, 3]
    assert plan_grid(  # another batch size is allowed and does not replace the stored one
        tiny_adapter, rows, directions, grid_generation(batch_size=7), store=store, orthogonalize=True
    )
    assert store.settings()["batch_size"] == 5
    with pytest.raises(ValueError, match="orthogonalize"):  # a store holding rows refuses other settings
        plan_grid(tiny_adapter, rows, directions, grid_generation(batch_size=5), store=store)


def test_records_in_row_order():
    rows = small_grid()[:4]
    keys = {r.key: f"c{r.key}" for r in rows}
    by_key = {keys[r.key]: {"key": keys[r.key]} for r in reversed(rows)}
    ordered = records_in_row_order(rows + rows[:1], by_key, "x", keys)
    assert [r["key"] for r in ordered] == [keys[r.key] for r in rows]
    with pytest.raises(RuntimeError, match="1 grid rows are missing from the store"):
        records_in_row_order(rows, {k: v for k, v in list(by_key.items())[1:]}, "the store", keys)
