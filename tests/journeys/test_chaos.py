"""Journey (issue 23): a run SIGKILLed at random points, then resumed, ends with the files of an uninterrupted run."""

import random
import signal
import subprocess
import sys
import time

import pytest
from support.journeys import TINY_TESTBED, cli_env, steerlit, tree_hashes

RESULT_FILES = ("summary.csv", "per_alpha.csv", "metrics.csv")


def result_files(root) -> dict[str, str]:
    """The hashes of the files a run's results are read from: tables, directions, probes, activation shards
    and index, and the sample WAVs (not the logs, the lock, the report page or the plots' PNG metadata)."""
    hashes = tree_hashes(root)
    keep = ("directions.safetensors", "index.json", ".safetensors", ".wav")
    return {k: v for k, v in hashes.items() if k in RESULT_FILES or k.endswith(keep)}


@pytest.mark.slow
def test_three_kills_at_random_points_give_the_uninterrupted_results(tmp_path):
    """Kill -9 at three random moments of the run (spread over its stages by the uninterrupted run's
    duration), resume each time; the final folder's result files equal the uninterrupted run's."""
    env = cli_env(tmp_path)
    args = ["run", *TINY_TESTBED, f"output_dir={tmp_path / 'runs'}"]
    started = time.monotonic()
    steerlit([*args, "run_name=clean"], env, tmp_path)
    duration = time.monotonic() - started
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
    clean, killed = result_files(tmp_path / "runs" / "clean"), result_files(tmp_path / "runs" / "killed")
    detail = f"seed {seed}, kills at {[round(m, 1) for m in moments]} s of {duration:.0f} s"
    assert set(clean) == set(killed), detail
    different = [k for k in clean if clean[k] != killed[k]]
    assert not different, f"{detail}: {different}"
