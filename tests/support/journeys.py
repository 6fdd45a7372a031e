"""Journey-test helpers: the ``steerlit`` CLI in a subprocess, and a tiny testbed study's overrides."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# A testbed study small enough for a shared CPU: one concept, 8 prompts per pole, diff-mean only, 2 grid rows,
# measured in the run's own process (the measuring pool's spawned worker costs 10-20 s per run; its journeys are
# tests/journeys/test_ddp_cli.py, tests/journeys/test_wheel.py and tests/sweeps).
TINY_TESTBED = [
    "logger=none",
    "trainer.enable_progress_bar=false",
    "probe.concepts=[testbed_tempo]",
    "probe.max_per_pole=8",
    "fit.methods=[diffmean]",
    "steer.methods=[diffmean]",
    "steer.strategies=[one_to_all]",
    "steer.n_prompts=1",
    "steer.seconds=0.5",
    "steer.alphas=[0,1]",
    "metrics.quality=none",
    "metrics.workers=0",
]


def cli_env(tmp_path: Path, pythonpath: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=pythonpath if pythonpath is not None else str(REPO),
        STEERLIT_CACHE=str(tmp_path / "cache"),
        WANDB_MODE="disabled",
        TOKENIZERS_PARALLELISM="false",
    )
    env.setdefault("NUMBA_CACHE_DIR", str(tmp_path / "numba"))
    return env


def steerlit(args, env, cwd, timeout=600, check=True) -> subprocess.CompletedProcess:
    """``python -m steerlit.cli ARGS`` (the interpreter of the tests), output captured."""
    done = subprocess.run(
        [sys.executable, "-m", "steerlit.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"steerlit {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return done


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
