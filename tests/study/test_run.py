"""run_study on the tiny model: extract -> fit -> steer -> measure -> report into one run folder."""

import csv
import math
import subprocess
import sys

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


UNGUARDED_STUDY = """
import sys
from steerlit.config import compose
from steerlit.study.run import run_study

run_study(compose(sys.argv[1:]))  # no `if __name__ == "__main__":` guard
"""


@pytest.mark.slow
def test_an_unguarded_script_running_a_study_measures_in_its_process(tmp_path, tiny_model_dir):
    """Issue 23: a script calling run_study at its top level: the spawned metric workers re-run it and end at
    once (no second study, no lock conflict); the run completes with real values and one warning."""
    script = tmp_path / "study.py"
    script.write_text(UNGUARDED_STUDY)
    args = [
        *QUICK,
        f"model={tiny_model_dir}",
        f"output_dir={tmp_path / 'runs'}",
        "run_name=s",
        "metrics.workers=1",
    ]
    done = subprocess.run(
        [sys.executable, str(script), *args], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("metric workers could not start") == 1, done.stderr[-3000:]
    assert 'if __name__ == "__main__":' in done.stderr and "metrics.workers=0" in done.stderr
    with open(RunLayout(tmp_path / "runs" / "s").metrics_csv) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(math.isfinite(float(r["centroid_hz"])) for r in rows)
    assert not any(r.get("metric_error") for r in rows)
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["s"]  # the workers started no run of their own
