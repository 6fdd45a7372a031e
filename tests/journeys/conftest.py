"""A finished tiny testbed run, made once per test process and shared by the journeys that start from one."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.journeys import TINY_TESTBED, cli_env, steerlit


@dataclass(frozen=True)
class FinishedRun:
    folder: Path  # runs/R: copy it before changing it
    seconds: float  # how long `steerlit run` took


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> FinishedRun:
    """``steerlit run`` of TINY_TESTBED into ``runs/R``, finished."""
    base = tmp_path_factory.mktemp("finished")
    runs = base / "runs"
    started = time.monotonic()
    steerlit(["run", *TINY_TESTBED, f"output_dir={runs}", "run_name=R"], cli_env(base), base)
    seconds = time.monotonic() - started
    assert (runs / "R" / "summary.csv").exists()
    return FinishedRun(runs / "R", seconds)
