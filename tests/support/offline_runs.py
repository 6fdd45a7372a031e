"""Reading offline W&B runs back with wandb's own tooling (no server, no hand-written .wandb parser).

``wandb leet inspect --summary --json RUN_DIR`` prints a run's config, summary and state;
``wandb leet inspect --json RUN_DIR`` streams every record (run, history, files, artifacts) as JSON lines.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path


def leet_inspect(run_folder: str | os.PathLike, *args: str) -> str:
    """stdout of ``wandb leet inspect ARGS RUN_FOLDER``."""
    wandb_cli = shutil.which("wandb") or str(Path(sys.executable).with_name("wandb"))
    done = subprocess.run(
        [wandb_cli, "leet", "inspect", *args, str(run_folder)], capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"wandb leet inspect failed on {run_folder}: {done.stderr}")
    return done.stdout


def read_records(run_folder: str | os.PathLike) -> list[dict]:
    """Every record of an offline run folder (``.../wandb/offline-run-*``), in order."""
    return [json.loads(line) for line in leet_inspect(run_folder, "--json").splitlines() if line.strip()]


def read_offline_run(run_folder: str | os.PathLike) -> dict:
    """Config, summary, group, job type, tags, notes and project of an offline run folder."""
    document = json.loads(leet_inspect(run_folder, "--summary", "--json"))
    run = next((r["run"] for r in read_records(run_folder) if r["type"] == "run"), {})
    config = {k: v for k, v in document.get("config", {}).items() if k != "_wandb"}
    return {
        "config": config,
        "summary": document.get("summary", {}),
        "group": run.get("run_group"),
        "job_type": run.get("job_type"),
        "tags": run.get("tags", []),
        "notes": run.get("notes"),
        "project": run.get("project"),
    }
