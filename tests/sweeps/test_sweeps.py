import logging

import pytest
import yaml
from support.offline_runs import read_offline_run

from steerlit.sweeps import local as sweeps
from steerlit.sweeps.definition import DEFAULT_RUN_CAP, SweepDefinitionError, load_sweep, sweep_points
from steerlit.sweeps.local import run_local_sweep

GRID_YAML = """
name: alpha-layer
method: grid
metric: {name: score, goal: maximize}
parameters:
  steer.alpha: {values: [0.5, 2.0]}
  steer.layer: {values: [1, 3]}
  steer.method: {value: diffmean}
"""


def score_fn(overrides: dict) -> dict:
    return {"score": overrides["steer.alpha"] * overrides["steer.layer"], "note": "ok"}


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    for var, sub in (
        ("WANDB_DIR", "wb"),
        ("WANDB_DATA_DIR", "wb-data"),
        ("WANDB_CACHE_DIR", "wb-cache"),
        ("WANDB_CONFIG_DIR", "wb-config"),
    ):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return tmp_path


def test_offline_grid_sweep_makes_one_offline_run_per_point(wandb_env):
    path = wandb_env / "sweep.yaml"
    path.write_text(GRID_YAML)
    assert not sweeps.wandb_online()
    out = wandb_env / "sweep"
    summaries = sweeps.run_sweep(path, score_fn, out_dir=out)
    assert [s["status"] for s in summaries] == ["finished"] * 4
    points = [s["overrides"] for s in summaries]
    assert points == [
        {"steer.alpha": a, "steer.layer": layer, "steer.method": "diffmean"}
        for a in (0.5, 2.0)
        for layer in (1, 3)
    ]
    assert [s["best"] for s in summaries] == [False, False, False, True]
    for s in summaries:
        runs = sorted((out).glob(f"{s['index']:03d}-*/wandb/offline-run-*"))
        assert len(runs) == 1, runs
        run = read_offline_run(runs[0])  # config.yaml is only written by `wandb sync`
        assert run["config"] == s["overrides"] and run["group"] == "alpha-layer"
        assert run["summary"]["score"] == pytest.approx(s["result"]["score"])
        config_yaml = runs[0] / "files" / "config.yaml"
        if config_yaml.exists():  # older wandb versions write it offline too
            config = yaml.safe_load(config_yaml.read_text())
            assert all(config[k]["value"] == v for k, v in s["overrides"].items())
        assert s["result"]["score"] == pytest.approx(
            s["overrides"]["steer.alpha"] * s["overrides"]["steer.layer"]
        )
    assert (out / "sweep_summary.json").exists()


def test_random_points_are_seeded_and_capped():
    d = load_sweep(
        {
            "method": "random",
            "run_cap": 5,
            "parameters": {
                "a": {"values": [1, 2, 3]},
                "b": {"min": 0.1, "max": 1.0},
                "c": {"min": 2, "max": 4},
                "d": {"min": 1e-3, "max": 1e-1, "distribution": "log_uniform_values"},
                "e": {"value": "x"},
            },
        }
    )
    p1, p2 = sweep_points(d, seed=1), sweep_points(d, seed=1)
    assert p1 == p2 and len(p1) == 5 and p1 != sweep_points(d, seed=2)
    for p in p1:
        assert p["a"] in (1, 2, 3) and 0.1 <= p["b"] <= 1.0 and p["c"] in (2, 3, 4) and p["e"] == "x"
        assert 1e-3 <= p["d"] <= 1e-1 and isinstance(p["c"], int)
    assert len(sweep_points({"method": "random", "parameters": {"a": {"values": [1]}}})) == DEFAULT_RUN_CAP


def test_grid_validation_and_nested_parameters():
    nested = {
        "method": "grid",
        "parameters": {"steer": {"parameters": {"alpha": {"values": [1, 2]}}}, "n": {"min": 1, "max": 3}},
    }
    assert sweep_points(nested) == [{"steer.alpha": a, "n": n} for a in (1, 2) for n in (1, 2, 3)]
    with pytest.raises(SweepDefinitionError, match="discrete"):
        sweep_points({"method": "grid", "parameters": {"x": {"min": 0.0, "max": 1.0}}})
    with pytest.raises(SweepDefinitionError):
        load_sweep({"method": "hyperband", "parameters": {"x": {"value": 1}}})
    with pytest.raises(SweepDefinitionError, match="metric"):
        load_sweep({"method": "bayes", "parameters": {"x": {"value": 1}}})


def test_bayes_falls_back_to_random_with_a_warning(wandb_env, monkeypatch, caplog):
    monkeypatch.setattr(
        sweeps, "bayes_available", lambda: (False, "the 'sweeps' package is not importable (test)")
    )
    d = {
        "method": "bayes",
        "run_cap": 2,
        "metric": {"name": "score", "goal": "minimize"},
        "parameters": {"steer.alpha": {"min": 0.0, "max": 1.0}, "steer.layer": {"values": [1, 2]}},
    }
    with caplog.at_level(logging.WARNING, logger="steerlit.sweeps.local"):
        summaries = run_local_sweep(d, score_fn, out_dir=wandb_env / "bayes")
    assert "random search" in caplog.text and "sweeps" in caplog.text
    assert [s["overrides"] for s in summaries] == sweep_points(d, seed=0)
    assert sum(s["best"] for s in summaries) == 1
