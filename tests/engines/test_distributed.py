"""The DDP grid (Lightning, 2 CPU ranks over gloo) gives the rows of a one-process grid, with every model
setting reaching the ranks: a hub id found through ``hf_cache_dir`` and a non-default dtype."""

import functools
import math

import pytest
import torch
from metrics.crashing_metric import LEVEL_NAMES, clip_digest, levels, levels_or_segfault_for

from steerlit.engines.distributed import check_same_model, default_strategy, run_grid_distributed
from steerlit.engines.results import ResultStore
from steerlit.engines.runner import run_grid
from steerlit.metrics.pool import ERROR_FIELD, MeasurerSpec
from steerlit.models.loading import load_adapter
from steerlit.models.settings import ModelSettings
from steerlit.models.tiny import install_in_hub_cache

from .grid_helpers import comparable, grid_generation, random_directions, rms_metrics, small_grid

HUB_ID = "facebook/musicgen-small"


def test_two_ranks_bfloat16_hub_model_equal_one_process(tiny_adapter, tiny_model_dir, tmp_path):
    """9 rows in 5 batches of 2 over 2 gloo ranks (forked by Lightning; the padded sampler repeats one batch).
    The model is the tiny one installed in a hub cache as facebook/musicgen-small, loaded in bfloat16 by
    every rank from its ModelSettings."""
    hub = tmp_path / "hub"
    install_in_hub_cache(tiny_model_dir, hub, HUB_ID)
    settings = ModelSettings(name=HUB_ID, hf_cache_dir=str(hub), dtype="bfloat16")
    rows, generation = small_grid()[::2], grid_generation(batch_size=2)
    directions = random_directions(32, 4)
    kw = dict(metrics_fn=rms_metrics, progress=False)
    adapter = load_adapter(settings)
    assert adapter.dtype == torch.bfloat16 and adapter.model_id == HUB_ID
    one = run_grid(adapter, rows, directions, generation, store=ResultStore(tmp_path / "one"), **kw)
    fp32 = run_grid(tiny_adapter, rows, directions, generation, **kw)
    records = run_grid_distributed(
        settings, rows, directions, generation, out_dir=tmp_path / "two", devices=2, metrics_fn=rms_metrics
    )
    assert [r["row_key"] for r in records] == [r.key for r in rows]
    assert [r["key"] for r in records] == [r["key"] for r in one]  # the same content keys on every rank
    two = ResultStore(tmp_path / "two")
    assert comparable(two.rows()) == comparable(records) == comparable(one)  # codes_sha1 and metric values
    assert two.settings() == ResultStore(tmp_path / "one").settings()
    assert two.settings()["dtype"] == "bfloat16" and two.settings()["model_id"] == HUB_ID
    # bfloat16 really was used on both ranks: every row's audio differs from the float32 grid's
    assert all(a["rms"] != b["rms"] for a, b in zip(comparable(one), comparable(fp32)))


def test_ranks_must_hold_the_same_model():
    same = {"model_id": "tiny", "dtype": "bfloat16"}
    check_same_model([same, dict(same)])
    with pytest.raises(RuntimeError, match="different models"):
        check_same_model([same, {"model_id": "tiny", "dtype": "float32"}])
    assert default_strategy(1, "cpu") == "auto" and default_strategy(2, "cpu") == "ddp_fork"
    assert default_strategy(4, "gpu") == "ddp_spawn"


@pytest.mark.slow
def test_ddp_ranks_measure_in_workers_and_a_native_crash_gives_nan(tiny_adapter, tiny_model_dir, tmp_path):
    """Issue 23: each DDP rank measures its clips in a spawned worker of its own: a metric that segfaults on one
    clip gives that row nan values and a reason (after a retry) instead of killing its rank, and every other row
    equals a one-process grid measured in-process."""
    rows, generation = small_grid()[::2], grid_generation(batch_size=2)
    directions = random_directions(32, 4)
    one = ResultStore(tmp_path / "one")
    reference = run_grid(
        tiny_adapter, rows, directions, generation, store=one, metrics_fn=levels, progress=False
    )
    digests = {r["key"]: clip_digest(one.read_wav(r["key"])[0]) for r in reference}
    crash = frozenset({digests[reference[-1]["key"]]})
    victims = {k for k, d in digests.items() if d in crash}
    assert 0 < len(victims) < len(reference) // 2
    spec = MeasurerSpec(functools.partial(levels_or_segfault_for, crash=crash), value_names=LEVEL_NAMES)
    model = ModelSettings(name=str(tiny_model_dir))
    records = run_grid_distributed(
        model, rows, directions, generation, out_dir=tmp_path / "two", measurer=spec
    )
    assert [r["key"] for r in records] == [r["key"] for r in reference]
    for record in records:
        if record["key"] in victims:
            assert all(math.isnan(record[name]) for name in LEVEL_NAMES)
            assert "SIGSEGV" in record[ERROR_FIELD] and "retried alone" in record[ERROR_FIELD]
    same = [r for r in comparable(reference) if r["key"] not in victims]
    assert [r for r in comparable(records) if r["key"] not in victims] == same  # codes, metrics, wav hashes
