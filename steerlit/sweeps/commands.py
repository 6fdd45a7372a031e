"""Sweep points as the command lines a ``wandb agent`` runs, and the ``steerlit sweep`` command.

:func:`agent_command` renders a point with W&B's own code (``create_sweep_command`` and
``create_sweep_command_args`` from ``wandb.sdk.launch.sweeps.utils``, which ``wandb agent`` calls), so a local
sweep runs exactly what an agent would, one subprocess per point: the study logs the point's W&B run itself
(full config, the sweep's group, the ``best/`` objective), with no W&B run around it to patch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from steerlit.sweeps.agent import COMMAND, RESULT_FILE
from steerlit.sweeps.definition import SweepDefinitionError, load_sweep
from steerlit.sweeps.local import launch_agents, point_id, run_local_sweep, wandb_online


def agent_command(definition: Mapping, point: Mapping, base: Sequence[str] = ()) -> list[str]:
    """The command line ``wandb agent`` runs for ``point`` ({name: value}), with ``base`` dotlist items put
    before the point's; ``${interpreter}`` is this Python (the agent says ``python``)."""
    from wandb.sdk.launch.sweeps.utils import (  # deferred: wandb
        create_sweep_command,
        create_sweep_command_args,
    )

    command = create_sweep_command(list(definition.get("command") or COMMAND))
    rendered = create_sweep_command_args({"args": {k: {"value": v} for k, v in point.items()}})
    rendered["args_no_hyphens"] = [*base, *rendered["args_no_hyphens"]]
    rendered.update(interpreter=[sys.executable], env=["/usr/bin/env"], program=[definition.get("program")])
    out: list[str] = []
    for chunk in map(str, command):
        is_macro = chunk.startswith("${") and chunk.endswith("}")
        out += (rendered.get(chunk[2:-1]) or []) if is_macro else [chunk]
    return out


class AgentPoint:
    """A picklable ``run_fn`` for :func:`run_local_sweep`: runs a point's agent command in a subprocess (group
    ``WANDB_RUN_GROUP=group``) with its study under ``out_dir/<group>-<point id>``; returns the objective."""

    def __init__(self, definition: Mapping, base: Sequence[str], out_dir: str | os.PathLike, group: str):
        self.definition, self.base, self.out_dir, self.group = (
            dict(definition),
            list(base),
            Path(out_dir),
            group,
        )

    def __call__(self, point: Mapping) -> dict:
        run_dir = self.out_dir / f"{self.group}-{point_id(point)}"
        base = [*self.base, f"output_dir={self.out_dir}", f"run_name={run_dir.name}"]
        env = {**os.environ, "WANDB_RUN_GROUP": self.group, "WANDB_JOB_TYPE": "sweep"}
        subprocess.run(agent_command(self.definition, point, base), env=env, check=True)
        return json.loads((run_dir / RESULT_FILE).read_text())


def run_sweep_cli(
    sweep_file: str | os.PathLike,
    overrides=(),
    *,
    workers: int | None = None,
    out_dir: str | os.PathLike | None = None,
    project: str | None = None,
) -> int:
    """``steerlit sweep SWEEP.yaml [overrides]``: online, registers the sweep and starts one ``wandb agent`` per
    GPU; offline, runs each point's agent command locally (``overrides`` before the point's items), in
    ``runs/sweeps/<name>-<time>/``, and prints each point's objective."""
    definition = load_sweep(sweep_file)
    name = definition.get("name") or Path(sweep_file).stem
    project = project or definition.get("project") or "steerlit"
    if "program" not in definition and "command" not in definition:
        definition["command"] = list(COMMAND)
    if wandb_online():
        if overrides:
            raise SweepDefinitionError("Online, give fixed settings as sweep parameters ({value: ...}).")
        sweep_id, _ = launch_agents(definition, project=project)
        print(f"sweep {sweep_id} finished")
        return 0
    out_dir = Path(out_dir or Path("runs") / "sweeps" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    run_fn = AgentPoint(definition, list(overrides or []), out_dir, name)
    summaries = run_local_sweep(definition, run_fn, out_dir=out_dir, name=name, project=None, workers=workers)
    metric = (definition.get("metric") or {}).get("name")
    for s in summaries:
        value = s["result"].get(metric) if metric else None
        mark = " (best)" if s.get("best") else ""
        print(f"{s['index']:03d} {s['status']:8s} {metric}={value}{mark} {json.dumps(s['overrides'])}")
    print(f"offline runs in {out_dir}; upload with `wandb sync {out_dir}/*/wandb/wandb/offline-run-*`")
    return 0 if all(s["status"] == "finished" for s in summaries) else 1
