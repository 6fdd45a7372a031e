"""Journey (issue 23): a run SIGKILLed at random points, then resumed, ends with the files of an uninterrupted run."""

import hashlib
import json
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors import safe_open
from support.journeys import TINY_TESTBED, cli_env, steerlit, tree_hashes

RESULT_FILES = ("summary.csv", "per_alpha.csv", "metrics.csv")


def safetensors_digest(path) -> str:
    """sha256 of a safetensors file's metadata and tensors (its header's key order varies between processes:
    two uninterrupted runs give the same tensors in files whose bytes differ)."""
    digest = hashlib.sha256()
    with safe_open(str(path), framework="pt") as f:
        digest.update(json.dumps(f.metadata() or {}, sort_keys=True).encode())
        for key in sorted(f.keys()):
            tensor = f.get_tensor(key)
            digest.update(f"{key}{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def result_files(root) -> dict[str, str]:
    """Digests of the files a run's results are read from: the tables, the sample WAVs, the activation index,
    and by content the shards, directions and probes (not the logs, the lock, the report page or the plots)."""
    out = {
        k: v for k, v in tree_hashes(root).items() if k in RESULT_FILES or k.endswith((".wav", "index.json"))
    }
    out.update({str(p.relative_to(root)): safetensors_digest(p) for p in sorted(root.rglob("*.safetensors"))})
    return out


@pytest.mark.slow
def test_three_kills_at_random_points_give_the_uninterrupted_results(finished_run, tmp_path):
    """Kill -9 at three random moments of the run (spread over its stages by the uninterrupted run's
    duration), resume each time; the final folder's result files equal the uninterrupted run's."""
    env = cli_env(tmp_path)
    args = ["run", *TINY_TESTBED, f"output_dir={tmp_path / 'runs'}"]
    duration = finished_run.seconds  # the uninterrupted TINY_TESTBED run
    seed = int(time.time())
    rng = random.Random(seed)
    moments = sorted(rng.uniform(0.15, 0.95) * duration for _ in range(3))
    for moment in moments:
        proc = subprocess.Popen(
            [sys.executable, "-m", "steerlit.cli", *args, "run_name=killed"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            proc.wait(timeout=moment)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    steerlit([*args, "run_name=killed"], env, tmp_path)
    clean, killed = result_files(finished_run.folder), result_files(tmp_path / "runs" / "killed")
    detail = f"seed {seed}, kills at {[round(m, 1) for m in moments]} s of {duration:.0f} s"
    assert set(clean) == set(killed), detail
    different = [k for k in clean if clean[k] != killed[k]]
    assert not different, f"{detail}: {different}"
