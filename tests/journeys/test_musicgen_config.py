"""Journey: `model=musicgen_small` brings a MusicGen study (probe sets, paper grid, metrics, GPU trainer) and runs
on a MusicGen-shaped model found by hub id in an HF cache."""

import pytest
import yaml
from support.journeys import cli_env, steerlit

from steerlit.config import ConfigError, compose
from steerlit.models.tiny import build_tiny_musicgen, install_in_hub_cache


def test_musicgen_small_config_is_a_musicgen_study(tmp_path):
    env = cli_env(tmp_path)
    config = yaml.safe_load(steerlit(["config", "model=musicgen_small"], env, tmp_path).stdout)
    assert config["model"]["name"] == "facebook/musicgen-small"
    assert (config["model"]["device"], config["model"]["dtype"]) == ("cuda", "float16")
    assert config["trainer"]["accelerator"] == "gpu"
    assert config["probe"]["concepts"] == ["tempo", "timbre"] and config["probe"]["eval_set"] == "neutral"
    steer = config["steer"]
    assert min(steer["alphas"]) == -2 and max(steer["alphas"]) == 2 and 1 in steer["alphas"]
    assert steer["seconds"] == 10 and steer["top_k"] == 250 and len(steer["seeds"]) >= 3
    assert len(steer["layers"]) == 6 and max(steer["layers"]) >= 20 and min(steer["layers"]) <= 4
    assert steer["methods"] == ["diffmean", "regression"]
    assert config["metrics"]["tempo"]["std_bpm"] == 1.5 and config["metrics"]["tempo"]["estimator"] == "auto"


def test_every_musicgen_model_brings_the_study_and_follows_the_trainer():
    on_cpu = compose(["model=musicgen_small", "trainer=cpu"])
    assert (on_cpu.model.device, on_cpu.model.dtype) == ("cpu", None)
    assert on_cpu.probe.concepts == ("tempo", "timbre")
    by_id = compose(["model=facebook/musicgen-medium"])
    assert (by_id.model.name, by_id.steer.top_k, by_id.model.device) == (
        "facebook/musicgen-medium",
        250,
        "cuda",
    )
    large = compose(["model=musicgen_large", "trainer=ddp_gpus"])
    assert large.steer.layers[-1] >= 40 and large.model.dtype == "float16"
    testbed = compose(["trainer=gpu"])
    assert (testbed.model.device, testbed.probe.concepts) == ("cuda", ("testbed_tempo", "testbed_timbre"))
    assert compose([]).model.device == "cpu"
    with pytest.raises(ConfigError, match="contradicts"):
        compose(["trainer=cpu", "model.device=cuda"])


def test_a_device_that_contradicts_the_trainer_fails_before_loading(tmp_path):
    env = cli_env(tmp_path)
    done = steerlit(["config", "model=musicgen_small", "model.device=cpu"], env, tmp_path, check=False)
    assert done.returncode == 2 and "contradicts trainer.accelerator=gpu" in done.stderr


@pytest.mark.slow
def test_musicgen_study_on_a_tiny_model_found_by_hub_id(tmp_path):
    cache = tmp_path / "hub"
    install_in_hub_cache(build_tiny_musicgen(tmp_path / "tiny", seed=0), cache, "facebook/musicgen-small")
    args = [
        "run", "model=musicgen_small", f"model.hf_cache_dir={cache}", "model.device=cpu", "trainer=cpu",
        "logger=none", "trainer.enable_progress_bar=false", "probe.max_per_pole=4", "fit.probe.max_epochs=1",
        "steer.layers=[1]", "steer.alphas=[0,1]", "steer.seeds=[0]", "steer.n_prompts=1", "steer.seconds=0.5",
        "steer.methods=[diffmean]", "metrics.quality=none", "metrics.workers=0",
        f"output_dir={tmp_path / 'runs'}", "run_name=mg",
    ]  # fmt: skip
    steerlit(args, cli_env(tmp_path), tmp_path)
    run = tmp_path / "runs" / "mg"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["name"] == "facebook/musicgen-small" and config["probe"]["concepts"] == [
        "tempo",
        "timbre",
    ]
    assert (run / "summary.csv").exists()
    assert {"tempo", "timbre"} <= {p.name for p in run.iterdir() if (p / "directions.safetensors").exists()}
