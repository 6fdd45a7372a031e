"""What a ``wandb agent`` runs for each sweep point: ``python -m steerlit.sweeps.agent key=value ...``.

The sweep YAMLs (``configs/sweep/*.yaml``) say ``command: ["${env}", "${interpreter}", -m, steerlit.sweeps.agent,
"${args_no_hyphens}"]`` (quoted, or as a block list: YAML reads ``{`` in a flow list as a mapping), so the agent passes each parameter as an OmegaConf dotlist item: W&B renders a value with
Python's ``str``, e.g. ``steer.layers=[1]`` or ``steer.methods=['diffmean']``, which OmegaConf reads as lists.
Null values render as ``None`` (a string): leave such parameters out of a sweep. Each point is one
:func:`steerlit.study.run.run_study`, whose W&B run (created by the study, joined to the sweep through the
agent's ``WANDB_SWEEP_ID``/``WANDB_RUN_ID``) gets the full resolved config, the group (the sweep id, or
``WANDB_RUN_GROUP`` when set), job type ``sweep`` and the objective ``best/abs_spearman`` in its summary.
The objective is also written to ``<run folder>/sweep_result.json`` for local sweeps.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from steerlit.config import compose
from steerlit.files import atomic_write_json
from steerlit.study.layout import RunLayout
from steerlit.study.objective import best_summary
from steerlit.study.run import run_study
from steerlit.study.settings import ConfigError

COMMAND = ["${env}", "${interpreter}", "-m", "steerlit.sweeps.agent", "${args_no_hyphens}"]
RESULT_FILE = "sweep_result.json"


def sweep_environment(overrides: list[str]) -> list[str]:
    """Group and job type of the point's W&B run (``WANDB_RUN_GROUP``/``WANDB_JOB_TYPE``, read by ``wandb.init``),
    and, under an agent, a run folder named ``<group>-<run id>`` unless ``run_name=`` is given."""
    group = os.environ.get("WANDB_RUN_GROUP") or os.environ.get("WANDB_SWEEP_ID")
    if group:
        os.environ["WANDB_RUN_GROUP"] = group
    os.environ.setdefault("WANDB_JOB_TYPE", "sweep")
    run_id = os.environ.get("WANDB_RUN_ID")  # the same in every DDP rank the launcher starts
    if not run_id or any(o.startswith("run_name=") for o in overrides):
        return list(overrides)
    return [*overrides, f"run_name={group or 'sweep'}-{run_id}"]


def run_point(overrides: list[str]) -> dict:
    """One sweep point: the study with ``overrides``; returns (and writes) its ``best/`` objective summary."""
    settings = compose(sweep_environment(overrides))
    summary = best_summary(run_study(settings))
    if settings.run_name:  # local sweeps and agents always name the run
        atomic_write_json(
            RunLayout(Path(settings.output_dir) / settings.run_name).root / RESULT_FILE, summary
        )
    return summary


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        run_point(list(sys.argv[1:] if argv is None else argv))
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
