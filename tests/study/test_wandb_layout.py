"""A small `steerlit run` on the shipped testbed, logged offline and read back with wandb's own tooling
(`wandb leet inspect --json`): audio and a pivot table for every group of the grid, per-concept comparison keys,
namespaced probe settings, artifacts, group / job type / tags / notes from config and WANDB_* variables, the
report; and a quiet console."""

import json
import os
import subprocess
import sys

import pytest
from support.offline_runs import read_offline_run, read_records

from steerlit.study.settings import LoggerSettings
from steerlit.study.tracking import run_options

SMALL_RUN = [
    "logger.mode=offline",
    "probe.max_per_pole=6",
    "fit.methods=[diffmean,regression]",
    "fit.probe.max_epochs=2",
    "steer.methods=[diffmean,regression]",
    "steer.strategies=[one_to_all]",
    "steer.n_prompts=2",
    "steer.seconds=0.5",
    "steer.alphas=[-1,0,1]",
    "logger.tags=[smoke]",
    "logger.notes=layout test",
]
NOISE = (
    "GPU available",
    "TPU available",
    "litlogger",
    "litmodels",
    "must be `None` or an integer within the vocabulary",
    "Loading weights",
    "Writing model shards",
)


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
    """(run folder, console, read_offline_run(...), the W&B records) of a small offline run."""
    out = tmp_path_factory.mktemp("runs")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") or k == "WANDB_SILENT"}
    env.update(
        WANDB_RUN_GROUP="from-env", WANDB_JOB_TYPE="from-env", WANDB_PROJECT="steerlit-test", WANDB_TAGS="env"
    )
    command = [sys.executable, "-m", "steerlit.cli", "run", *SMALL_RUN, f"output_dir={out}", "run_name=wb"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    console = done.stdout + done.stderr
    assert done.returncode == 0, console[-3000:]
    run_dir = next((out / "wb" / "wandb").rglob("offline-run-*"))
    return out / "wb", console, read_offline_run(run_dir), read_records(run_dir)


def logged_keys(records) -> set[str]:
    keys = set()
    for r in records:
        if r["type"] == "history":
            keys.update(r["history"]["item"])
    return keys


def test_every_group_has_a_pivot_table_and_audio(offline_run):
    _, _, _, records = offline_run
    keys = logged_keys(records)
    for concept in ("testbed_tempo", "testbed_timbre"):
        for method in ("diffmean", "regression"):
            group = f"steer/final/{concept}/{method}/L2/one_to_all"
            assert f"{group}/pivot._type" in keys, sorted(keys)
            assert f"{group}/audio.count" in keys
    history = {k: v for r in records if r["type"] == "history" for k, v in r["history"]["item"].items()}
    audio = history["steer/final/testbed_tempo/diffmean/L2/one_to_all/audio.audio"]
    assert len(audio) == 2 * 3  # 2 prompts x alphas -1, 0 (the reference), 1
    captions = history["steer/final/testbed_timbre/diffmean/L2/one_to_all/audio.captions"]
    assert captions[0].startswith("testbed_timbre_diffmean_L2_one_to_all_a-1_p0_s0 · centroid_hz=")
    assert "reference_p0_s0" in captions[1]  # the alpha = 0 cell: the prompt's unsteered reference


def test_pivot_table_has_one_audio_column_per_alpha(offline_run):
    run_dir, _, _, records = offline_run
    files = [f["path"] for r in records if r["type"] == "files" for f in r["files"]["files"]]
    pivot = next(p for p in files if "testbed_timbre/regression/L2/one_to_all/pivot" in p)
    table = json.loads((next(run_dir.glob("wandb/**/offline-run-*")) / "files" / pivot).read_text())
    assert table["columns"][:3] == ["prompt", "prompt_index", "seed"]
    assert [c for c in table["columns"] if c.startswith("α=")] == ["α=-1", "α=0", "α=1"]
    assert "centroid_hz α=1" in table["columns"]
    assert len(table["data"]) == 2  # one row per prompt (one seed)


def test_comparisons_per_concept_probes_namespaced_and_run_options(offline_run):
    _, _, summary, records = offline_run
    keys = logged_keys(records)
    assert {
        "directions/testbed_tempo/comparison/table._type",
        "directions/testbed_timbre/comparison/plot._type",
    } <= keys
    config = summary["config"]
    assert "kind" not in config and "lr" not in config
    assert config["probe/testbed_tempo/regression"]["kind"] == "regression"
    assert summary["group"] == "from-env" and summary["job_type"] == "from-env"  # env wins over the defaults
    assert summary["project"] == "steerlit-test" and summary["tags"] == ["smoke"]  # config wins over env
    assert summary["notes"] == "layout test"


def test_the_joined_layer_comparison_is_logged_under_each_concept(offline_run):
    run_dir, _, _, records = offline_run
    keys = logged_keys(records)
    for concept in ("testbed_tempo", "testbed_timbre"):
        assert f"steer/final/{concept}/layer_comparison/table._type" in keys
        assert f"steer/final/{concept}/layer_comparison/plot._type" in keys
    files = [f["path"] for r in records if r["type"] == "files" for f in r["files"]["files"]]
    table_file = next(p for p in files if "testbed_timbre/layer_comparison/table" in p)
    table = json.loads((next(run_dir.glob("wandb/**/offline-run-*")) / "files" / table_file).read_text())
    assert {"auroc", "auroc_low", "slope", "slope_high", "quality_cost"} <= set(table["columns"])
    assert {row[table["columns"].index("method")] for row in table["data"]} == {"diffmean", "regression"}


def test_artifacts_and_report(offline_run):
    run_dir, _, _, records = offline_run
    artifacts = {r["artifact"]["name"]: r["artifact"] for r in records if r["type"] == "artifact"}
    for concept in ("testbed_tempo", "testbed_timbre"):
        for kind in ("activations", "directions", "probes"):
            assert artifacts[f"{concept}-{kind}"]["type"] == kind
        meta = json.loads(artifacts[f"{concept}-directions"]["metadata"])
        assert meta["inputs"] == [f"{concept}-activations"]
    assert artifacts["wb-report"]["type"] == "report"
    assert "report._type" in logged_keys(records)
    assert (run_dir / "report.html").is_file()


def test_console_has_no_tips_banners_or_token_id_warnings(offline_run):
    _, console, _, _ = offline_run
    assert [line for line in console.splitlines() if any(n in line for n in NOISE)] == []
    assert "[steerlit" in console


def test_config_wins_over_env_which_wins_over_defaults(monkeypatch):
    monkeypatch.setenv("WANDB_TAGS", "a, b")
    monkeypatch.setenv("WANDB_RUN_GROUP", "env-group")
    monkeypatch.delenv("WANDB_JOB_TYPE", raising=False)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    options = run_options(LoggerSettings(group="cfg-group"), job_type="steer", group="experiment")
    assert options["group"] == "cfg-group" and options["tags"] == ["a", "b"]
    assert options["job_type"] == "steer" and options["project"] == "steerlit"
