"""End to end: `steerlit run` on the tiny model with W&B offline, and the CLI's error paths."""

import csv
import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from steerlit.cli import main
from steerlit.directions.io import save_directions
from steerlit.intervene.injection import STRATEGIES
from steerlit.study.layout import RunLayout


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
    # 2 prompts x 1 seed: 2 references + 2 concepts x (2 methods + the random control) x 2 non-zero alphas x 2 prompts
    assert len(wavs) == 2 + 24
    audio, sr = sf.read(wavs[0])
    assert sr == 32000 and np.isfinite(audio).all() and audio.shape[0] >= sr
    metrics = (run / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 1 + 26 and "centroid_hz" in metrics[0] and "bpm" in metrics[0]
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
    assert "audio" in table["columns"] and len(table["data"]) == 26
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
            + ["logger=none"]
        )
        == 0
    )
    audio, sr = sf.read(wav)
    assert sr == 32000 and len(audio) >= 0.5 * sr


def test_generate_with_directions_steers_the_clip(wandb_env, tiny_model_dir, tmp_path):
    g = torch.Generator().manual_seed(0)
    vectors = {("diffmean", f"resid_post.{i}"): 4 * torch.randn(32, generator=g) for i in range(4)}
    directions = save_directions(tmp_path / "d.safetensors", vectors, model_id=str(tiny_model_dir))
    clips = {}
    for alpha in ("0", "3"):
        wav = tmp_path / f"clip{alpha}.wav"
        args = [
            "generate",
            "a calm folk song",
            "--out",
            str(wav),
            "--seconds",
            "0.3",
            f"model={tiny_model_dir}",
            "logger=none",
        ]
        args += [
            "--directions",
            str(directions),
            "--layer",
            "1",
            "--alpha",
            alpha,
            "--strategy",
            "one_to_one",
        ]
        assert main(args) == 0
        clips[alpha] = sf.read(wav)[0]
    assert not np.array_equal(clips["0"], clips["3"]), "steering changed the clip"
    assert not list(tmp_path.glob(".*.tmp*")), "the wav was written through a temp file"


def test_extract_fit_steer_on_a_run_folder(wandb_env, tiny_model_dir, capsys):
    out = wandb_env / "runs"
    quick = [
        f"model={tiny_model_dir}",
        "logger=none",
        "probe=tempo",
        "probe.max_per_pole=4",
        "fit.methods=[diffmean]",
        "steer.methods=[diffmean]",
        "steer.alphas=[0,0.5]",
        "steer.n_prompts=1",
        "steer.seconds=0.3",
        "steer.strategies=[one_to_all]",
        "trainer.enable_progress_bar=false",
    ]
    assert main(["extract", *quick, f"output_dir={out}", "run_name=cli"]) == 0
    layout = RunLayout(out / "cli")
    assert (
        str(layout.root) in capsys.readouterr().out and (layout.activations("tempo") / "index.json").exists()
    )
    assert main(["fit", "--run", str(layout.root)]) == 0
    assert str(layout.directions("tempo")) in capsys.readouterr().out
    assert main(["steer", "--run", str(layout.root), "steer.alphas=[0,-0.5]"]) == 0
    assert "slope_per_alpha" in capsys.readouterr().out
    with open(layout.metrics_csv) as f:
        assert sorted(r["alpha"] for r in csv.DictReader(f)) == ["-0.5", "0.0"]
    with pytest.raises(SystemExit, match="has no config.yaml"):
        main(["steer", "--run", str(out / "nothing")])


def test_config_prints_the_resolved_settings(capsys):
    assert main(["config", "steer.alphas=[-1,1]", "logger=none"]) == 0
    text = capsys.readouterr().out
    assert "alphas:\n  - -1.0\n  - 1.0" in text and "kind: none" in text


def test_help_is_useful(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for command in ("run", "extract", "fit", "steer", "generate", "sweep", "sites"):
        assert command in text
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = capsys.readouterr().out
    assert all(s in text for s in STRATEGIES) and "diffmean" in text


def test_unknown_strategy_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "x", "--out", "x.wav", "--strategy", "sideways"])
    assert "invalid choice: 'sideways'" in capsys.readouterr().err


def generate_args(wav, seconds: str, model) -> list[str]:
    """``generate "a calm folk song" --out WAV --seconds SECONDS model=MODEL``."""
    return ["generate", "a calm folk song", "--out", str(wav), "--seconds", seconds, f"model={model}"]


def test_directions_of_another_model_need_steer_allow_other_model(
    wandb_env, tiny_model_dir, tmp_path, capsys
):
    """Low 7: a direction file whose metadata names another model (same hidden size) is refused, with the fix;
    ``steer.allow_other_model=true`` lets it through."""
    vectors = {("diffmean", f"resid_post.{i}"): torch.ones(32) for i in range(4)}
    other = save_directions(tmp_path / "other.safetensors", vectors, model_id="facebook/musicgen-small")
    wav = tmp_path / "clip.wav"
    args = [
        *generate_args(wav, "0.3", tiny_model_dir),
        "--directions",
        str(other),
        "--layer",
        "1",
        "--alpha",
        "2",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "'facebook/musicgen-small'" in err and "steer.allow_other_model=true" in err
    assert not wav.exists()
    assert main([*args, "steer.allow_other_model=true"]) == 0 and wav.exists()


@pytest.mark.parametrize("seconds", ["0", "-1", "0.001"])
def test_generate_refuses_a_clip_without_audio(wandb_env, tiny_model_dir, tmp_path, capsys, seconds):
    """Low 2: ``generate --seconds 0`` wrote 4 s and ``--seconds -1`` failed inside transformers."""
    wav = tmp_path / "clip.wav"
    assert main(generate_args(wav, seconds, tiny_model_dir)) == 2
    err = capsys.readouterr().err
    assert f"--seconds={float(seconds)} is shorter than one frame" in err and not wav.exists()


def test_generate_checks_its_arguments_before_generating(wandb_env, tiny_model_dir, tmp_path, capsys):
    """Low 3 and 13: an empty prompt, ``--out`` with a text suffix, a folder or an existing file are refused
    before any model loads (model=/nonexistent would fail otherwise), and nothing is written."""
    existing = tmp_path / "taken.wav"
    existing.write_bytes(b"keep me")
    cases = [
        ("", tmp_path / "a.wav", "generate needs a prompt"),
        ("a song", tmp_path / "x.txt", "is not an audio format"),
        ("a song", tmp_path, "is a folder"),
        ("a song", existing, "exists; remove it"),
    ]
    for prompt, out, message in cases:
        assert main(["generate", prompt, "--out", str(out), "model=/nonexistent"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert existing.read_bytes() == b"keep me" and not (tmp_path / "a.wav").exists()


def test_damaged_or_pickled_weights_get_one_message(wandb_env, tiny_model_dir, tmp_path, capsys):
    """Low 3: truncated safetensors weights (SafetensorError) and a folder with only a pickled
    pytorch_model.bin gave tracebacks (or silently random weights)."""
    truncated = tmp_path / "truncated"
    shutil.copytree(tiny_model_dir, truncated)
    weights = next(truncated.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, pickled)
    for path in pickled.glob("*.safetensors"):
        path.unlink()
    torch.save({"decoder.weight": torch.zeros(2)}, pickled / "pytorch_model.bin")
    for folder, message in ((truncated, "is truncated or damaged"), (pickled, "holds only pickled weights")):
        wav = tmp_path / f"{folder.name}.wav"
        assert main(["generate", "a song", "--out", str(wav), "--seconds", "0.3", f"model={folder}"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and not wav.exists(), err


def test_fit_on_a_run_without_a_cache_gets_one_message(wandb_env, tmp_path, capsys):
    """Low 3: ``fit --run R`` on a run folder without an activation cache raised a CacheError traceback."""
    run = tmp_path / "runs" / "R"
    run.mkdir(parents=True)
    assert main(["config", "logger=none", f"output_dir={run.parent}", "run_name=R"]) == 0
    (run / "config.yaml").write_text(capsys.readouterr().out)
    assert main(["fit", "--run", str(run)]) == 2
    err = capsys.readouterr().err
    assert "No activation cache in" in err and "steerlit extract" in err and "Traceback" not in err
