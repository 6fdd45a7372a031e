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

from steerlit.engines.grid import reference_of
from steerlit.engines.hf import generate
from steerlit.engines.results import ResultStore
from steerlit.engines.runner import auto_batch_size, estimate_row_bytes, plan_batches, run_grid, run_naive

from .grid_helpers import STEPS, comparable, random_directions, rms_metrics, small_grid

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def one_thread():
    """Under CPU contention two OpenMP threads made tiny generate ~10x slower than one."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def directions(tiny_adapter):
    return random_directions(tiny_adapter.hidden_size, tiny_adapter.num_layers)


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
    batched = run_grid(
        tiny_adapter,
        rows,
        directions,
        max_new_tokens=STEPS,
        batch_size=8,
        metrics_fn=rms_metrics,
        progress=False,
        keep_codes=True,
    )
    single = run_grid(
        tiny_adapter,
        rows,
        directions,
        max_new_tokens=STEPS,
        batch_size=1,
        metrics_fn=rms_metrics,
        progress=False,
        keep_codes=True,
    )
    assert [r["key"] for r in batched] == [r.key for r in rows]
    for a, b in zip(batched, single):
        assert np.array_equal(a["codes"], b["codes"]) and a["codes_sha1"] == b["codes_sha1"]
        # EnCodec decoding of a batch can differ from batch 1 in the last float bit
        assert a["rms"] == pytest.approx(b["rms"], rel=1e-5, abs=1e-7)
    # steering changes codes; the reference equals an unsteered plain generate
    by_key = {r["key"]: r for r in batched}
    ref = next(r for r in rows if r.is_reference)
    plain = generate(tiny_adapter, [ref.prompt], seeds=[ref.seed], max_new_tokens=STEPS).codes[0]
    assert np.array_equal(by_key[ref.key]["codes"], plain.numpy())
    for row in rows:  # every steered row moved away from its alpha-0 reference
        ref_key = reference_of(row).key
        if not row.is_reference and ref_key in by_key:
            assert by_key[row.key]["codes_sha1"] != by_key[ref_key]["codes_sha1"]
    naive = run_naive(tiny_adapter, rows[:3], directions, max_new_tokens=STEPS)
    assert [r["codes_sha1"] for r in naive] == [r["codes_sha1"] for r in batched[:3]]


def test_plan_and_batch_size():
    rows = small_grid()
    plan = plan_batches(rows + rows[:3], 4)
    assert sum(len(b) for b in plan) == len(rows) and plan == plan_batches(list(reversed(rows)), 4)
    with pytest.raises(ValueError):
        plan_batches(rows, 0)


def test_auto_batch_size_cpu_default(tiny_adapter):
    assert auto_batch_size(tiny_adapter, 100) == 16
    assert estimate_row_bytes(tiny_adapter, 250) > estimate_row_bytes(tiny_adapter, 50) > 0


def test_store_roundtrip_torn_line_and_settings(tiny_adapter, directions, tmp_path):
    rows = small_grid()[:6]
    store = ResultStore(tmp_path / "s")
    out = run_grid(
        tiny_adapter,
        rows,
        directions,
        max_new_tokens=STEPS,
        batch_size=4,
        store=store,
        metrics_fn=rms_metrics,
        progress=False,
    )
    assert len(store.rows()) == 6 and store.done_keys() == {r.key for r in rows}
    audio, sr = store.read_wav(rows[0].key)
    assert sr == tiny_adapter.sample_rate and audio.dtype == np.float32 and audio.size > 0
    assert comparable(out) == comparable(store.rows())
    # a torn line is ignored, and cut before the next append; a row whose wav is missing is redone
    with open(store.results_path, "a") as f:
        f.write('{"key": "torn", "pro')
    os.remove(store.wav_path(rows[5].key))
    assert len(ResultStore(tmp_path / "s").rows()) == 5
    again = run_grid(
        tiny_adapter,
        rows,
        directions,
        max_new_tokens=STEPS,
        store=ResultStore(tmp_path / "s"),
        metrics_fn=rms_metrics,
        progress=False,
    )
    assert comparable(again) == comparable(out)
    assert all(line.endswith("}\n") for line in store.results_path.read_text().splitlines(keepends=True))
    csv_path = store.to_csv()
    assert len(csv_path.read_text().strip().splitlines()) == 7
    with pytest.raises(ValueError, match="other settings"):
        run_grid(tiny_adapter, rows, directions, max_new_tokens=STEPS + 1, store=store, progress=False)


SWEEP_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from steerlit.engines.runner import run_grid
from steerlit.engines.results import ResultStore
from steerlit.models.loading import load_model
from engines.grid_helpers import STEPS, random_directions, slow_rms_metrics, small_grid
a = load_model(sys.argv[1])
d = random_directions(a.hidden_size, a.num_layers)
print("ready", flush=True)
run_grid(a, small_grid()[:9], d, max_new_tokens=STEPS, batch_size=3, store=ResultStore(sys.argv[2]),
         metrics_fn=slow_rms_metrics, progress=False)
"""


def test_kill_and_resume_equals_uninterrupted(tiny_adapter, tiny_model_dir, directions, tmp_path):
    """SIGKILL a sweep (9 rows, 3 batches) during its second batch, rerun, compare with a clean run."""
    rows = small_grid()[:9]
    clean = run_grid(
        tiny_adapter,
        rows,
        directions,
        max_new_tokens=STEPS,
        batch_size=3,
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
        max_new_tokens=STEPS,
        store=ResultStore(out),
        metrics_fn=rms_metrics,
        progress=False,
    )
    assert comparable(resumed) == comparable(clean)
    assert comparable(ResultStore(out).rows()) == comparable(ResultStore(tmp_path / "clean").rows())
    for r in rows:
        a, _ = ResultStore(out).read_wav(r.key)
        b, _ = ResultStore(tmp_path / "clean").read_wav(r.key)
        assert np.array_equal(a, b)


DDP_SCRIPT = """
import sys, json
from steerlit.engines.distributed import run_grid_distributed
from engines.grid_helpers import STEPS, random_directions, rms_metrics, small_grid
if __name__ == "__main__":
    d = random_directions(32, 4)
    recs = run_grid_distributed(sys.argv[1], small_grid()[::2], d, out_dir=sys.argv[2], max_new_tokens=STEPS,
                                batch_size=2, devices=2, accelerator="cpu", strategy=sys.argv[3],
                                metrics_fn=rms_metrics)
    print("RESULT " + json.dumps([r["key"] for r in recs]))
"""


@pytest.mark.parametrize("strategy", ["ddp_fork"])
def test_ddp_two_processes_equal_one(tiny_adapter, tiny_model_dir, directions, tmp_path, strategy):
    """9 rows in 5 batches of 2 over 2 gloo ranks (the padded sampler repeats one batch)."""
    rows = small_grid()[::2]
    local = run_grid(
        tiny_adapter,
        rows,
        directions,
        max_new_tokens=STEPS,
        batch_size=2,
        store=ResultStore(tmp_path / "one"),
        metrics_fn=rms_metrics,
        progress=False,
    )
    script = tmp_path / "ddp_grid.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'tests'}{os.pathsep}{REPO}"}
    proc = subprocess.run(
        [sys.executable, str(script), str(tiny_model_dir), str(tmp_path / "two"), strategy],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    assert line == "RESULT " + str([r.key for r in rows]).replace("'", '"')
    two = ResultStore(tmp_path / "two").rows()
    assert comparable(two) == comparable(local)
