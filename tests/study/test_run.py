"""run_study on the tiny model: extract -> fit -> steer -> measure -> report into one run folder."""

import csv

import pytest

from steerlit.config import ConfigError, compose
from steerlit.study.layout import RunLayout
from steerlit.study.run import run_study

QUICK = [
    "logger=none",
    "probe=tempo_timbre",
    "probe.max_per_pole=4",
    "fit.methods=[diffmean,regression]",
    "fit.probe.max_epochs=1",
    "steer.methods=[diffmean]",
    "steer.strategies=[one_to_all]",
    "steer.alphas=[0,0.5]",
    "steer.operator=norm_add",
    "steer.n_prompts=1",
    "steer.seconds=0.3",
    "trainer.enable_progress_bar=false",
]


def test_run_study_writes_every_stage(tmp_path, tiny_model_dir, capsys):
    settings = compose([*QUICK, f"model={tiny_model_dir}", f"output_dir={tmp_path}", "run_name=quick"])
    summary = run_study(settings)
    layout = RunLayout(tmp_path / "quick")
    assert sorted(s.concept for s in summary) == ["tempo", "timbre"]
    assert "slope_per_alpha" in capsys.readouterr().out
    assert layout.config.read_text().count("run_name: quick") == 1
    for concept in ("tempo", "timbre"):
        assert (layout.activations(concept) / "index.json").exists()
        assert layout.directions(concept).exists() and list(layout.probes(concept).glob("*.safetensors"))
    with open(layout.metrics_csv) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 + 2  # the reference + one alpha per concept
    with open(layout.summary_csv) as f:
        assert [r["concept"] for r in csv.DictReader(f)] == [s.concept for s in summary]
    assert not layout.wandb.exists()


def test_steering_during_probe_training_needs_the_callback_factory(tmp_path):
    settings = compose(["logger=none", "steer.every_n_epochs=1", f"output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="probe_callbacks=SteeredGenerationCallback.for_probes"):
        run_study(settings)
    assert not any(tmp_path.iterdir())
