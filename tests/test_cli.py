"""End to end: `steerlit run` on the tiny model with W&B offline, and the CLI's error paths."""

import csv
import json

import numpy as np
import pytest
import soundfile as sf

from steerlit.cli import main


@pytest.fixture()
def wandb_env(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("STEERLIT_CACHE", str(tmp_path / "cache"))
    return tmp_path


@pytest.mark.slow
def test_run_end_to_end_on_tiny_model(wandb_env, capsys, tiny_model_dir):
    out = wandb_env / "runs"
    code = main(
        [
            "run",
            "experiment=smoke",
            f"model={tiny_model_dir}",
            f"output_dir={out}",
            "run_name=e2e",
            "trainer.enable_progress_bar=false",
        ]
    )
    assert code == 0
    run = out / "e2e"
    printed = capsys.readouterr().out
    assert "slope_per_alpha" in printed and "spearman" in printed  # the summary table
    assert (run / "config.yaml").read_text().count("experiment: smoke") == 1
    for concept in ("tempo", "timbre"):
        assert (run / concept / "directions.safetensors").exists()
        assert (run / concept / "activations" / "index.json").exists()
        assert list((run / concept / "probes").glob("*.safetensors"))
    wavs = sorted((run / "samples").glob("*.wav"))
    # 2 prompts x 1 seed: 2 references + 2 concepts x 2 methods x 2 non-zero alphas x 2 prompts
    assert len(wavs) == 2 + 16
    audio, sr = sf.read(wavs[0])
    assert sr == 32000 and np.isfinite(audio).all() and audio.shape[0] >= sr
    metrics = (run / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 1 + 18 and "centroid_hz" in metrics[0] and "bpm" in metrics[0]
    with open(run / "metrics.csv") as f:
        codes = {row["codes_sha1"] for row in csv.DictReader(f)}
    assert len(codes) > 2, "steering changed the generated codes"
    assert (run / "summary.csv").exists() and (run / "plots" / "attribute_vs_alpha.png").stat().st_size > 1000
    runs = list((run / "wandb").rglob("offline-run-*"))
    assert len(runs) == 1
    media = runs[0] / "files" / "media"
    assert list((media / "audio").rglob("*.wav")), "audio clips are in the offline W&B run"
    tables = list((media / "table").rglob("*.table.json"))
    samples = [t for t in tables if "samples" in t.name]
    assert samples, [t.name for t in tables]
    table = json.loads(samples[0].read_text())
    assert "audio" in table["columns"] and len(table["data"]) == 18
    assert list(runs[0].glob("*.wandb"))


def test_bad_config_fails_before_loading_a_model(wandb_env, capsys):
    out = wandb_env / "runs"
    assert main(["run", "steer.alphaz=[1]", f"output_dir={out}"]) == 2
    err = capsys.readouterr().err
    assert "Unknown config key 'steer.alphaz'" in err and err.count("error:") == 1
    assert not out.exists()
    assert main(["run", "probe.concepts=[missing_set]", f"output_dir={out}"]) == 2
    assert "missing_set" in capsys.readouterr().err


def test_layer_out_of_range_fails_before_loading_weights(wandb_env, capsys, tiny_model_dir):
    out = wandb_env / "runs"
    assert main(["run", f"model={tiny_model_dir}", "layers=[9]", f"output_dir={out}"]) == 2
    assert "out of range: the model has 4 layers" in capsys.readouterr().err
    assert not out.exists()


def test_generate_subcommand_writes_a_wav(wandb_env, tiny_model_dir, tmp_path):
    wav = tmp_path / "clip.wav"
    assert (
        main(
            ["generate", "a calm folk song", "--out", str(wav), "--seconds", "0.5", f"model={tiny_model_dir}"]
        )
        == 0
    )
    audio, sr = sf.read(wav)
    assert sr == 32000 and len(audio) >= 0.5 * sr


def test_help_is_useful(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for command in ("run", "extract", "fit", "steer", "generate", "sweep", "sites"):
        assert command in text
