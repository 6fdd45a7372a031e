"""The command lines ``wandb agent`` builds for sweep points, rendered and run by W&B's own agent code, offline."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import wandb.wandb_agent
import yaml

from steerlit.config import compose
from steerlit.study.settings import as_dict
from steerlit.sweeps.agent import COMMAND
from steerlit.sweeps.commands import agent_command, run_sweep_cli
from steerlit.sweeps.definition import sweep_points

REPO = Path(__file__).resolve().parents[2]
SWEEP = REPO / "configs" / "sweep" / "alpha_layer_grid.yaml"
SMALL = {  # measured in each run's own process: the measuring pool is not what these tests are about
    "logger.mode": "offline",
    "steer.n_prompts": 2,
    "steer.seconds": 1,
    "steer.strategies": ["one_to_all"],
    "metrics.workers": 0,
}


@pytest.fixture
def offline_env(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SWEEP_ID", "swp0test")
    monkeypatch.setenv("NUMBA_CACHE_DIR", os.environ.get("NUMBA_CACHE_DIR", str(tmp_path / "numba")))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    for var in ("WANDB_API_KEY", "WANDB_RUN_GROUP", "WANDB_JOB_TYPE", "WANDB_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def inspect_run(run_dir: Path) -> tuple[dict, dict]:
    """W&B's own reader: ``wandb leet inspect`` (summary + config, and the run record with the group)."""
    wandb_cli = [sys.executable, "-m", "wandb", "leet", "inspect"]
    summary = json.loads(subprocess.run([*wandb_cli, "--summary", "--json", str(run_dir)], **TEXT).stdout)
    records = subprocess.run([*wandb_cli, "--json", str(run_dir)], **TEXT).stdout.splitlines()
    run_record = next(r["run"] for r in map(json.loads, records) if r.get("type") == "run")
    return summary, run_record


TEXT = {"capture_output": True, "text": True, "check": True, "timeout": 120}


def without_empty_mappings(config: dict) -> dict:
    """A config as W&B stores it: empty mappings (``metrics.attributes: {}``) are not kept."""
    return {k: without_empty_mappings(v) if isinstance(v, dict) else v for k, v in config.items() if v != {}}


def test_sweep_yaml_is_a_runnable_wandb_sweep():
    definition = yaml.safe_load(SWEEP.read_text())
    assert definition["command"] == COMMAND and definition["metric"] == {
        "name": "best/abs_spearman",
        "goal": "maximize",
    }
    point = sweep_points(definition)[1]
    assert agent_command(definition, point) == [
        "/usr/bin/env",
        sys.executable,
        "-m",
        "steerlit.sweeps.agent",
        "experiment=smoke",
        "steer.layers=[1]",
        "steer.methods=['regression']",
    ]
    # what the agent passes composes into the settings the sweep asked for
    settings = compose(agent_command(definition, point)[4:])
    assert settings.steer.layers == (1,) and settings.steer.methods == ("regression",)


@pytest.mark.slow
def test_wandb_agent_runs_two_points_offline(offline_env):
    definition = yaml.safe_load(SWEEP.read_text())
    out = offline_env / "runs"
    fixed = {**SMALL, "output_dir": str(out)}
    definition["parameters"].update({k: {"value": v} for k, v in fixed.items()})
    agent = wandb.wandb_agent.Agent(api=None, queue=None, sweep_id="swp0test")
    agent._sweep_command = definition["command"]  # what Agent.run reads from the sweep on the server
    points = sweep_points(definition)[:2]
    for i, point in enumerate(points):
        agent._command_run(
            {"run_id": f"run{i}", "program": None, "args": {k: {"value": v} for k, v in point.items()}}
        )
        process = agent._run_processes[f"run{i}"]
        command = process._popen.args
        assert command == ["/usr/bin/env", "python", *agent_command(definition, point)[2:]]
        print("rendered:", " ".join(command))
        assert process._popen.wait(timeout=600) == 0
    for i, point in enumerate(points):
        run_dirs = list((out / f"swp0test-run{i}").glob("wandb/wandb/offline-run-*"))
        assert len(run_dirs) == 1, run_dirs
        summary, run_record = inspect_run(run_dirs[0])
        assert run_record["run_group"] == "swp0test" and run_record["job_type"] == "sweep"
        assert 0 <= summary["summary"]["best/abs_spearman"] <= 1
        assert summary["summary"]["best/layer"] == point["steer.layers"][0]
        assert summary["summary"]["best/method"] == point["steer.methods"][0]
        expected = as_dict(compose([f"{k}={v}" for k, v in point.items()] + [f"run_name=swp0test-run{i}"]))
        config = {k: v for k, v in summary["config"].items() if k in expected}
        assert config == without_empty_mappings(json.loads(json.dumps(expected)))  # the full resolved config


@pytest.mark.slow
def test_local_sweep_runs_the_agent_command_and_logs_the_same_way(offline_env, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_SWEEP_ID")
    definition = yaml.safe_load(SWEEP.read_text())
    definition["parameters"] = {"steer.layers": {"values": [[2]]}, "steer.methods": {"value": ["diffmean"]}}
    path = offline_env / "one_point.yaml"
    path.write_text(yaml.safe_dump(definition))
    base = ["experiment=smoke", *(f"{k}={v}" for k, v in SMALL.items())]
    out = offline_env / "local"
    assert run_sweep_cli(path, base, out_dir=out) == 0
    assert "best/abs_spearman=" in capsys.readouterr().out
    (run_dir,) = out.glob("alpha-layer-*/wandb/wandb/offline-run-*")
    summary, run_record = inspect_run(run_dir)
    assert run_record["run_group"] == "alpha-layer" and run_record["job_type"] == "sweep"
    assert summary["summary"]["best/layer"] == 2 and "best/abs_spearman" in summary["summary"]
    assert summary["config"]["steer"]["layers"] == [2] and summary["config"]["model"]["name"] == "tiny"
