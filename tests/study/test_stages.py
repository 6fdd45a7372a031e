"""The grid plan steers the chosen methods and, beside them, the random-direction control."""

import csv

from steerlit.config import compose
from steerlit.study.layout import RunLayout
from steerlit.study.run import run_study
from steerlit.study.settings import SteerSettings, steered_methods


def test_controls_follow_the_chosen_methods_once():
    steer = SteerSettings(methods=("diffmean", "regression"))
    assert steer.controls == ("random",)
    assert steered_methods(steer) == ("diffmean", "regression", "random")
    assert steered_methods(steer, ("random", "diffmean")) == ("random", "diffmean")
    assert steered_methods(SteerSettings(controls=())) == ("diffmean", "regression")


def test_the_default_testbed_run_summarises_the_random_control(tmp_path):
    overrides = ["logger=none", "steer.n_prompts=2", "steer.seconds=1", "steer.alphas=[-1,0,1]"]
    overrides += ["trainer.enable_progress_bar=false", f"output_dir={tmp_path}", "run_name=controls"]
    summary = run_study(compose(overrides))
    assert "random" in {s.method for s in summary}
    with open(RunLayout(tmp_path / "controls").summary_csv) as f:
        rows = list(csv.DictReader(f))
    steered = [r for r in rows if r["method"] != "random"]
    assert steered and all(r["effect_vs_random_at_max_n"] not in ("", "0") for r in steered)
    assert {"n_clips", "quality_at_alpha", "spearman_p", "delta_at_max_low"} <= set(rows[0])
