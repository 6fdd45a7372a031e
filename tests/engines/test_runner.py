"""The local grid runner: batching does not change codes, a store resumes, a killed run resumes to the same rows."""

import functools
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from metrics.crashing_metric import LEVEL_NAMES, clip_digest, levels, levels_or_segfault_for

from steerlit.engines.grid import GridRow, SteerTerm, reference_of
from steerlit.engines.hf import generate
from steerlit.engines.results import ResultStore
from steerlit.engines.runner import (
    audio_seconds,
    codes_digest,
    degenerate_reason,
    degenerate_rows,
    run_grid,
    run_naive,
)
from steerlit.metrics.pool import ERROR_FIELD, ClipMeasurer

from .grid_helpers import (
    SECONDS,
    STEPS,
    comparable,
    grid_generation,
    random_directions,
    rms_metrics,
    small_grid,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def directions(tiny_adapter):
    return random_directions(tiny_adapter.hidden_size, tiny_adapter.num_layers)


def test_seconds_give_the_test_steps(tiny_adapter):
    assert tiny_adapter.seconds_to_steps(SECONDS) == STEPS
    assert audio_seconds(tiny_adapter, STEPS) == pytest.approx(SECONDS)
    assert tiny_adapter.seconds_to_steps(audio_seconds(tiny_adapter, 57)) == 57


def test_row_codes_do_not_depend_on_batch(tiny_adapter):
    prompts = [f"prompt number {i} with {'many ' * (i % 5)}words" for i in range(32)]
    seeds = [1000 + 7 * i for i in range(32)]
    kw = dict(max_new_tokens=8, guidance_scale=3.0)
    full = generate(tiny_adapter, prompts, seeds=seeds, **kw).codes
    order = list(range(8))
    random.Random(0).shuffle(order)
    eight = generate(tiny_adapter, [prompts[i] for i in order], seeds=[seeds[i] for i in order], **kw).codes
    alone = generate(tiny_adapter, prompts[5:6], seeds=seeds[5:6], **kw).codes
    for j, i in enumerate(order):
        assert torch.equal(eight[j], full[i])
    assert torch.equal(alone[0], full[5])


def test_batched_equals_batch_size_one(tiny_adapter, directions):
    rows = small_grid()
    kw = dict(metrics_fn=rms_metrics, progress=False, keep_codes=True)
    batched = run_grid(tiny_adapter, rows, directions, grid_generation(batch_size=8), **kw)
    single = run_grid(tiny_adapter, rows, directions, grid_generation(batch_size=1), **kw)
    assert [r["row_key"] for r in batched] == [r.key for r in rows]
    assert [r["key"] for r in batched] == [r["key"] for r in single]  # the batch size is not in the key
    for a, b in zip(batched, single):
        assert np.array_equal(a["codes"], b["codes"]) and a["codes_sha1"] == b["codes_sha1"]
        assert a["codes_sha1"] == codes_digest(a["codes"])
        # EnCodec decoding of a batch can differ from batch 1 in the last float bit
        assert a["rms"] == pytest.approx(b["rms"], rel=1e-5, abs=1e-7)
    # steering changes codes; the reference equals an unsteered plain generate
    by_key = {r["row_key"]: r for r in batched}
    ref = next(r for r in rows if r.is_reference)
    plain = generate(tiny_adapter, [ref.prompt], seeds=[ref.seed], max_new_tokens=STEPS).codes[0]
    assert np.array_equal(by_key[ref.key]["codes"], plain.numpy())
    for row in rows:  # every steered row moved away from its alpha-0 reference
        ref_key = reference_of(row).key
        if not row.is_reference and ref_key in by_key:
            assert by_key[row.key]["codes_sha1"] != by_key[ref_key]["codes_sha1"]
    naive = run_naive(tiny_adapter, rows[:3], directions, grid_generation())
    assert [r["codes_sha1"] for r in naive] == [r["codes_sha1"] for r in batched[:3]]


def test_fast_engine_grid_equals_hf_grid(tiny_adapter, directions):
    rows = small_grid()[:8]
    hf = run_grid(tiny_adapter, rows, directions, grid_generation(batch_size=4), progress=False)
    fast = run_grid(
        tiny_adapter, rows, directions, grid_generation(batch_size=4, engine="fast"), progress=False
    )
    # the engine is in the content key (in float16 the engines may differ): everything else is equal
    assert [{**r, "key": ""} for r in hf] == [{**r, "key": ""} for r in fast]
    assert not {r["key"] for r in hf} & {r["key"] for r in fast}


def test_store_resume_and_settings(tiny_adapter, directions, tmp_path):
    rows = small_grid()[:6]
    store = ResultStore(tmp_path / "s")
    out = run_grid(
        tiny_adapter,
        rows,
        directions,
        grid_generation(batch_size=4),
        store=store,
        metrics_fn=rms_metrics,
        progress=False,
    )
    assert comparable(out) == comparable(store.rows())
    assert all(r["wav"] == f"samples/{r['key']}.wav" for r in out)
    assert store.settings()["batch_size"] == 4 and store.settings()["dtype"] == "float32"
    os.remove(store.wav_path(out[5]["key"]))  # a row whose wav is missing is redone
    again = run_grid(
        tiny_adapter,
        rows,
        directions,
        grid_generation(batch_size=None),  # the store's batch size
        store=ResultStore(tmp_path / "s"),
        metrics_fn=rms_metrics,
        progress=False,
    )
    assert comparable(again) == comparable(out)
    with pytest.raises(ValueError, match="other settings"):
        run_grid(
            tiny_adapter, rows, directions, grid_generation(temperature=0.9), store=store, progress=False
        )


SWEEP_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from steerlit.engines.runner import run_grid
from steerlit.engines.results import ResultStore
from steerlit.models.loading import load_model
from engines.grid_helpers import grid_generation, random_directions, slow_rms_metrics, small_grid
a = load_model(sys.argv[1])
d = random_directions(a.hidden_size, a.num_layers)
print("ready", flush=True)
run_grid(a, small_grid()[:9], d, grid_generation(batch_size=3), store=ResultStore(sys.argv[2]),
         metrics_fn=slow_rms_metrics, progress=False)
"""


def test_kill_and_resume_equals_uninterrupted(tiny_adapter, tiny_model_dir, directions, tmp_path):
    """SIGKILL a sweep (9 rows, 3 batches) during its second batch, rerun, compare with a clean run."""
    rows = small_grid()[:9]
    clean = run_grid(
        tiny_adapter,
        rows,
        directions,
        grid_generation(batch_size=3),
        store=ResultStore(tmp_path / "clean"),
        metrics_fn=rms_metrics,
        progress=False,
    )
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'tests'}{os.pathsep}{REPO}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", SWEEP_SCRIPT, str(tiny_model_dir), str(out)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.time() + 60
        results = out / "results.jsonl"
        while time.time() < deadline and not (
            results.exists() and len(results.read_text().splitlines()) >= 3
        ):
            time.sleep(0.05)
        time.sleep(0.5)  # inside a later batch's slow metrics
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    partial = ResultStore(out).rows()
    assert 3 <= len(partial) < len(rows), "the subprocess was not killed midway"
    resumed = run_grid(
        tiny_adapter,
        rows,
        directions,
        grid_generation(batch_size=None),
        store=ResultStore(out),
        metrics_fn=rms_metrics,
        progress=False,
    )
    assert comparable(resumed) == comparable(clean)
    assert comparable(ResultStore(out).rows()) == comparable(ResultStore(tmp_path / "clean").rows())
    for r in clean:
        a, _ = ResultStore(out).read_wav(r["key"])
        b, _ = ResultStore(tmp_path / "clean").read_wav(r["key"])
        assert np.array_equal(a, b)


def test_damaged_wavs_are_regenerated(tiny_adapter, directions, tmp_path):
    """A truncated and an emptied sample WAV (which changed quality_cost or crashed libsndfile) are detected on
    resume and their rows generated again, byte for byte."""
    rows = small_grid()[:4]
    kw = dict(metrics_fn=rms_metrics, progress=False)
    out = run_grid(tiny_adapter, rows, directions, grid_generation(), store=ResultStore(tmp_path), **kw)
    store = ResultStore(tmp_path)
    truncated, emptied = store.wav_path(out[1]["key"]), store.wav_path(out[2]["key"])
    original = {p: p.read_bytes() for p in (truncated, emptied)}
    truncated.write_bytes(original[truncated][: len(original[truncated]) // 2])
    emptied.write_bytes(b"")
    assert ResultStore(tmp_path).done_keys() == {out[0]["key"], out[3]["key"]}
    again = run_grid(tiny_adapter, rows, directions, grid_generation(), store=ResultStore(tmp_path), **kw)
    assert comparable(again) == comparable(out)
    assert all(p.read_bytes() == data for p, data in original.items())


def test_non_finite_steering_is_flagged_degenerate(tiny_adapter, directions, caplog):
    """α = 1e38 makes the hidden states inf/NaN and every code 0: the row is flagged, counted and not trusted."""
    rows = [row for row in small_grid() if row.prompt_index == 1 and row.seed == 3]
    huge = GridRow(rows[0].prompt, 3, (SteerTerm("tempo", "diffmean", 1, 1e38),), rows[0].prompt_index)
    with caplog.at_level("WARNING", logger="steerlit.engines.runner"):
        out = run_grid(tiny_adapter, [*rows, huge], directions, grid_generation(), progress=False)
    assert [r["degenerate"] for r in out] == [None] * len(rows) + ["constant codes (all 0)"]
    assert degenerate_rows(out) == out[-1:]
    assert f"1 of {len(out)} grid rows are degenerate" in caplog.text
    assert (
        degenerate_reason(np.zeros((4, 9), np.int64), np.full(8, np.nan)) == "non-finite audio (NaN or inf)"
    )
    assert degenerate_reason(np.arange(36).reshape(4, 9), np.zeros(8)) is None


def test_measuring_in_workers_equals_in_process_and_a_native_crash_gives_nan(
    tiny_adapter, directions, tmp_path, caplog
):
    """Issue 23: clips measured by a spawned ClipMeasurer while the next batch generates give the in-process
    records bit for bit; a metric that segfaults on one clip gives that row nan values and a reason (after a
    retry in a fresh process), and the grid completes and stores every row."""
    rows, generation = small_grid(), grid_generation(batch_size=4)
    reference = run_grid(
        tiny_adapter, rows, directions, generation, store=ResultStore(tmp_path / "a"), metrics_fn=levels
    )
    digests = {r["key"]: clip_digest(ResultStore(tmp_path / "a").read_wav(r["key"])[0]) for r in reference}
    crash = frozenset({digests[reference[5]["key"]]})
    victims = {k for k, d in digests.items() if d in crash}  # the tiny codec gives some rows the same audio
    assert 0 < len(victims) < len(reference) // 2
    measure = functools.partial(levels_or_segfault_for, crash=crash)
    caplog.set_level("WARNING", logger="steerlit.metrics.pool")
    with ClipMeasurer(workers=1, measure=measure, value_names=LEVEL_NAMES) as measurer:
        pooled = run_grid(
            tiny_adapter, rows, directions, generation, store=ResultStore(tmp_path / "b"), measurer=measurer
        )
    stored = {r["key"]: r for r in ResultStore(tmp_path / "b").rows()}
    assert set(stored) == {r["key"] for r in reference}  # the run completed: every row committed
    for key in victims:
        crashed = stored[key]
        assert all(math.isnan(crashed[name]) for name in LEVEL_NAMES)
        assert "SIGSEGV" in crashed[ERROR_FIELD] and "retried alone" in crashed[ERROR_FIELD]
        unmeasured = {
            k: v for k, v in crashed.items() if k not in (*LEVEL_NAMES, ERROR_FIELD, "record_sha256")
        }
        victim = next(r for r in reference if r["key"] == key)
        assert unmeasured == {k: v for k, v in victim.items() if k not in (*LEVEL_NAMES, "record_sha256")}
    assert "could not be measured" in caplog.text
    same = [r for r in comparable(reference) if r["key"] not in victims]
    assert [r for r in comparable(pooled) if r["key"] not in victims] == same  # codes, metrics, wav hashes
