"""`steerlit patch`: the typed ``patch.*`` settings, their checks before any work, and the command end to end."""

import csv
import json

import pytest
from support.journeys import cli_env, steerlit
from support.offline_runs import read_offline_run

from steerlit.cli import main
from steerlit.config import compose
from steerlit.directions.io import load_directions
from steerlit.models.tiny import build_tiny_musicgen, install_in_hub_cache
from steerlit.study.patch_run import (
    run_patch_study,
    validate_gate,
    validate_patch,
    validate_patch_axes,
    validate_patch_files,
)
from steerlit.study.settings import ConfigError


@pytest.mark.parametrize("experiment", ["patching_testbed", "patching_tempo", "patching_timbre"])
def test_testbed_patching_experiments_compose_and_validate(experiment):
    settings = compose([f"experiment={experiment}"])
    assert settings.patch.concepts[0].startswith("testbed_") and settings.patch.n_pairs == 8
    validate_patch(settings)  # the testbed's config.json and probe files


def test_musicgen_patching_experiment_composes(capsys):
    settings = compose(["experiment=patching_musicgen"])
    assert settings.model.name == "facebook/musicgen-small" and settings.patch.concepts == ("tempo", "timbre")
    assert settings.patch.layers == (0, 4, 8, 12, 16, 20, 23) and settings.patch.gate.layers == (8, 5)
    assert settings.patch.windows[-1] == "0-end" and settings.patch.gate.eval_set == "neutral"
    validate_gate(settings.patch)  # what validate_patch checks, without the hub config for the depth
    validate_patch_axes(settings.patch, 24)  # musicgen-small's 24 layers
    validate_patch_files(
        settings.patch
    )  # probes/tempo.yaml and timbre.yaml have 16 pairs each, neutral loads
    assert main(["config", "experiment=patching_musicgen"]) == 0
    printed = capsys.readouterr().out
    assert "patch:" in printed and "n_pairs: 16" in printed


def test_patch_keys_are_typed():
    with pytest.raises(
        ConfigError, match=r"Unknown config key 'patch.window'; valid keys under patch: \[.*'windows'"
    ):
        compose(["patch.window=[0-10]"])
    with pytest.raises(ConfigError, match="patch.gate.poles"):
        compose(["patch.gate.poles=[up,down]"])
    with pytest.raises(ConfigError, match="patch.statistic"):
        compose(["patch.statistic=mode"])
    with pytest.raises(ConfigError, match=r"patch.half.*expected one of \['both', 'cond'\]"):
        compose(["patch.half=uncond"])  # a steering half that patching refuses


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["patch.windows=[late]"], "patch.windows: Step window 'late'"),
        (["patch.windows=[10-5]"], "empty or negative"),
        (["patch.gate.layers=[1]"], "one entry per concept"),
        (["patch.layers=[0,9]"], r"patch.layers has layers \[9\] out of range"),
        (["patch.site_kinds=[attn_head]"], "choose per-layer kinds"),
        (["patch.n_pairs=500"], "fewer than patch.n_pairs=500"),
        (["patch.concepts=[nope,testbed_timbre]"], "patch.concepts 'nope'"),
        (["patch.gate.eval_set=nope"], "patch.gate.eval_set 'nope'"),
        (["patch.gate.split=[0.5,0.5,0.5]"], "summing to 1"),
        (["patch.threads=0"], "patch.threads must be >= 1"),
        (["patch.gate.threshold=1"], r"patch.gate.threshold.*threshold 1.0 is not a probability in \(0, 1\)"),
        (["patch.gate.smoothing=1"], r"patch.gate.smoothing.*smoothing 1.0 is not in \[0, 1\)"),
    ],
)
def test_bad_patch_settings_fail_with_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate_patch(compose(["experiment=patching_testbed", *overrides]))


def test_the_testbed_experiments_run_on_one_thread():
    assert compose(["experiment=patching_testbed"]).patch.threads == 1 and compose([]).patch.threads is None


def test_patch_help_lists_the_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "patch" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["patch", "--help"])
    printed = capsys.readouterr().out
    assert "experiment=patching_testbed" in printed and "overrides" in printed


def test_bad_patch_settings_stop_the_cli_before_any_folder(tmp_path):
    done = steerlit(
        [
            "patch",
            "experiment=patching_testbed",
            "patch.windows=[0-10,late]",
            f"output_dir={tmp_path / 'runs'}",
        ],
        cli_env(tmp_path),
        tmp_path,
        check=False,
    )
    assert done.returncode == 2 and "patch.windows" in done.stderr, done.stderr
    assert not (tmp_path / "runs").exists()


def test_a_gate_threshold_the_gate_refuses_stops_the_cli_before_any_folder(tmp_path):
    done = steerlit(
        ["patch", "experiment=patching_testbed", "patch.gate.threshold=1", f"output_dir={tmp_path / 'runs'}"],
        cli_env(tmp_path),
        tmp_path,
        check=False,
    )
    assert done.returncode == 2 and "patch.gate.threshold" in done.stderr, done.stderr
    assert "not a probability in (0, 1)" in done.stderr and not (tmp_path / "runs").exists()


def test_a_finished_patching_folder_is_never_overwritten(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "summary.json").write_text("{}")
    settings = compose(["experiment=patching_tempo", f"output_dir={tmp_path}", "run_name=p", "logger=none"])
    with pytest.raises(ConfigError, match="already holds a patching study"):
        run_patch_study(settings)
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["summary.json"]


TINY_PATCH = [  # 2 pairs x 2 layers x 2 windows patched rows, 2 + 6 trade-off rows, 5 probe epochs
    "patch.concepts=[testbed_tempo]",
    "patch.n_pairs=2",
    "patch.layers=[0,3]",
    "patch.windows=[0-10,0-end]",
    "patch.n_boot=50",
    "patch.min_gap=0",
    "patch.gate.layers=[1]",
    "patch.gate.strategies=[one_to_all]",
    "patch.gate.poles=[negative]",
    "patch.gate.alphas=[2.0]",
    "patch.gate.n_prompts=2",
    "patch.gate.head_steps=6",
    "patch.gate.probe.max_epochs=5",
    "steer.seconds=0.5",
    "steer.batch_size=16",
]


@pytest.mark.slow  # the whole patching study on the tiny model in a subprocess, W&B offline: ~50 s idle
def test_patch_command_writes_a_run_folder_and_logs_to_wandb(tmp_path, tiny_model_dir):
    env = {**cli_env(tmp_path), "WANDB_MODE": "offline"}
    runs = tmp_path / "runs"
    args = ["patch", f"model={tiny_model_dir}", *TINY_PATCH, "logger.mode=offline", f"output_dir={runs}"]
    done = steerlit([*args, "run_name=p"], env, tmp_path)
    run = runs / "p"
    assert done.stdout.strip().splitlines()[-1] == str(run)
    assert "strongest patching cells" in done.stdout and "patching_map.csv" in done.stdout
    assert "patch:" in (run / "config.yaml").read_text()
    with open(run / "patching_map.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["measure"], r["layer"], r["window"]) for r in rows} == {
        (m, L, w) for m in ("attribute", "readout") for L in ("0", "3") for w in ("0-10", "0-end")
    }
    for stem in ("patching_testbed_tempo_xattn_out_attribute", "head_probes_testbed_tempo", "gate_tradeoff"):
        assert (run / f"{stem}.png").read_bytes()[:4] == b"\x89PNG", stem
        assert (run / f"{stem}.csv").exists() or stem == "gate_tradeoff"
    heads = load_directions(run / "testbed_tempo" / "directions.safetensors")  # what top_heads steers from
    assert heads.methods == ["logistic"] and "head_accuracy" in heads.metadata
    assert "testbed_tempo/directions.safetensors" in done.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert {r["mode"] for r in summary["tradeoff"]} == {"constant", "stop", "proportional"}
    offline = list((run / "wandb").rglob("offline-run-*"))
    assert len(offline) == 1
    logged = read_offline_run(offline[0])
    assert logged["job_type"] == "patch" and logged["config"]["patch"]["n_pairs"] == 2
    assert "patching/map_table" in logged["summary"]


@pytest.mark.slow  # the MusicGen experiment on a tiny MusicGen found by hub id, in a subprocess
def test_musicgen_patching_experiment_runs_on_a_model_found_by_hub_id(tmp_path):
    """`steerlit patch experiment=patching_musicgen` as a user with musicgen-small's weights runs it: the model is
    looked up by hub id in an HF cache (here a tiny random MusicGen installed as facebook/musicgen-small), the real
    tempo and timbre probe files give the twins, the default metrics measure; only the sizes are overridden."""
    cache = tmp_path / "hub"
    install_in_hub_cache(build_tiny_musicgen(tmp_path / "tiny", seed=0), cache, "facebook/musicgen-small")
    runs = tmp_path / "runs"
    per_concept = ("patch.concepts=", "patch.gate.layers=", "patch.gate.strategies=", "patch.gate.poles=")
    sizes = [a for a in TINY_PATCH if not a.startswith(per_concept)]
    args = [
        "patch", "experiment=patching_musicgen", f"model.hf_cache_dir={cache}", "trainer=cpu",
        "logger=none", *sizes, "patch.gate.layers=[1,2]", f"output_dir={runs}", "run_name=mg",
    ]  # fmt: skip
    done = steerlit(args, cli_env(tmp_path), tmp_path)
    run = runs / "mg"
    assert done.stdout.strip().splitlines()[-1] == str(run)
    with open(run / "patching_map.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["concept"] for r in rows} == {"tempo", "timbre"}
    assert {(r["layer"], r["window"]) for r in rows} == {
        (L, w) for L in ("0", "3") for w in ("0-10", "0-end")
    }
    for concept in ("tempo", "timbre"):
        assert (run / f"patching_{concept}_xattn_out_attribute.png").read_bytes()[:4] == b"\x89PNG"
        heads = load_directions(run / concept / "directions.safetensors")
        assert heads.metadata["model_id"] == "facebook/musicgen-small"
    summary = json.loads((run / "summary.json").read_text())
    assert {r["mode"] for r in summary["tradeoff"]} == {"constant", "stop", "proportional"}
