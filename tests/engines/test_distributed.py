"""The DDP grid (Lightning, 2 CPU ranks over gloo) gives the rows of a one-process grid, with every model
setting reaching the ranks: a hub id found through ``hf_cache_dir`` and a non-default dtype."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from steerlit.engines.distributed import check_same_model, default_strategy
from steerlit.engines.results import ResultStore
from steerlit.engines.runner import run_grid
from steerlit.models.loading import load_adapter
from steerlit.models.settings import ModelSettings
from steerlit.models.tiny import install_in_hub_cache

from .grid_helpers import comparable, grid_generation, random_directions, rms_metrics, small_grid

REPO = Path(__file__).resolve().parents[2]
HUB_ID = "facebook/musicgen-small"

DDP_SCRIPT = """
import json, sys
from steerlit.engines.distributed import run_grid_distributed
from steerlit.models.settings import ModelSettings
from engines.grid_helpers import grid_generation, random_directions, rms_metrics, small_grid
if __name__ == "__main__":
    model = ModelSettings(name=sys.argv[1], hf_cache_dir=sys.argv[2], dtype="bfloat16")
    recs = run_grid_distributed(model, small_grid()[::2], random_directions(32, 4), grid_generation(batch_size=2),
                                out_dir=sys.argv[3], devices=2, accelerator="cpu", metrics_fn=rms_metrics)
    print("RESULT " + json.dumps([r["key"] for r in recs]))
"""


def test_two_ranks_bfloat16_hub_model_equal_one_process(tiny_adapter, tiny_model_dir, tmp_path):
    """9 rows in 5 batches of 2 over 2 gloo ranks (the padded sampler repeats one batch); the model is the
    tiny one installed in a hub cache as facebook/musicgen-small, loaded in bfloat16 on every rank."""
    hub = tmp_path / "hub"
    install_in_hub_cache(tiny_model_dir, hub, HUB_ID)
    settings = ModelSettings(name=HUB_ID, hf_cache_dir=str(hub), dtype="bfloat16")
    rows, generation = small_grid()[::2], grid_generation(batch_size=2)
    directions = random_directions(32, 4)
    script = tmp_path / "ddp_grid.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'tests'}{os.pathsep}{REPO}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(  # the ranks run while this process makes the one-process references
        [sys.executable, str(script), HUB_ID, str(hub), str(tmp_path / "two")],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    adapter = load_adapter(settings)
    assert adapter.dtype == torch.bfloat16 and adapter.model_id == HUB_ID
    kw = dict(metrics_fn=rms_metrics, progress=False)
    one = run_grid(adapter, rows, directions, generation, store=ResultStore(tmp_path / "one"), **kw)
    fp32 = run_grid(tiny_adapter, rows, directions, generation, **kw)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    line = next(ln for ln in stdout.splitlines() if ln.startswith("RESULT "))
    assert json.loads(line.removeprefix("RESULT ")) == [r.key for r in rows]
    two = ResultStore(tmp_path / "two")
    assert comparable(two.rows()) == comparable(one)  # codes_sha1 and metric values of every row
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
