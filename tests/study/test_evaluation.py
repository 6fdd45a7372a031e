"""The evaluation as plain code: grid -> generations -> measurements -> tables -> run folder, no Lightning."""

import csv
import json

import pytest
import torch

from steerlit.directions.io import DirectionSet
from steerlit.metrics.settings import MetricsSettings
from steerlit.models.loading import load_adapter
from steerlit.models.settings import ModelSettings
from steerlit.runtime import TrainerSettings
from steerlit.study.evaluation import Evaluation, GridPlan, grid_devices, steer
from steerlit.study.layout import RunLayout
from steerlit.study.records import SummaryRow
from steerlit.study.settings import SteerSettings

STEER = SteerSettings(
    layers=(1,), alphas=(-3.0, 0.0, 3.0), methods=("diffmean",), seeds=(0, 1), seconds=0.3, batch_size=4
)


def big_directions(hidden: int = 32, layers: int = 4) -> DirectionSet:
    g = torch.Generator().manual_seed(1)
    return DirectionSet(
        {("diffmean", f"resid_post.{i}"): 3 * torch.randn(hidden, generator=g) for i in range(layers)}
    )


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_evaluation_writes_the_run_folder_and_resumes(tiny_adapter, tmp_path):
    layout = RunLayout(tmp_path / "run")
    plan = GridPlan(STEER, ("a calm folk song",), ("tempo",), (1,))
    evaluation = Evaluation(
        tiny_adapter, MetricsSettings(), trainer=TrainerSettings(enable_progress_bar=False)
    )
    directions = {"tempo": big_directions()}
    summary = evaluation.run(plan, directions, layout.evaluation())
    (row,) = summary
    assert isinstance(row, SummaryRow) and row.group == ("tempo", "diffmean", 1, "one_to_all")
    assert row.attribute == "bpm" and row.alpha_max == 3.0 and row.alpha_min == -3.0
    metrics = read_csv(layout.metrics_csv)
    assert len(metrics) == 6 and [r["key"] for r in metrics] == sorted(r["key"] for r in metrics)
    assert len({r["codes_sha1"] for r in metrics}) == 6, "each alpha and seed gives other codes"
    assert len(list(layout.samples.glob("*.wav"))) == 6
    per_alpha = read_csv(layout.per_alpha_csv)
    assert [float(r["alpha"]) for r in per_alpha] == [-3.0, 0.0, 3.0] and "dsp_frechet" not in per_alpha[0]
    assert per_alpha[1]["kad"] == "" and per_alpha[0]["kad"] != ""  # α = 0 is not compared with itself
    assert per_alpha[1]["kad_noise_floor"] == per_alpha[0]["kad_noise_floor"] and per_alpha[1]["kad_n"] == "2"
    assert read_csv(layout.summary_csv)[0]["concept"] == "tempo"
    assert (layout.plots / "attribute_vs_alpha.png").stat().st_size > 1000

    before = [p.read_text() for p in (layout.metrics_csv, layout.per_alpha_csv, layout.summary_csv)]
    again = evaluation.run(plan, directions, layout.evaluation())  # every row is already in the store
    assert [p.read_text() for p in (layout.metrics_csv, layout.per_alpha_csv, layout.summary_csv)] == before
    assert again[0].group == row.group


def test_plan_rows_need_directions_of_a_wanted_method():
    plan = GridPlan(STEER, ("x",), ("tempo",), (1,), methods=("logistic",))
    with pytest.raises(ValueError, match="None of the steering methods"):
        plan.rows({"tempo": big_directions()})
    rows = GridPlan(STEER, ("x", "y"), ("tempo",), (1,)).rows({"tempo": big_directions()})
    assert len(rows) == 2 * 2 * 3  # prompts x seeds x (reference + two alphas)


def test_grid_devices_follow_a_ddp_trainer():
    assert grid_devices(TrainerSettings()) == 1
    assert grid_devices(TrainerSettings(devices=2)) == 1  # no DDP strategy: one process
    assert grid_devices(TrainerSettings(devices=2, strategy="ddp")) == 2


@pytest.mark.slow
def test_a_ddp_grid_loads_the_full_model_settings_on_each_rank(tiny_model_dir, tmp_path):
    """Two spawned CPU processes (gloo; not forked from a threaded test worker) with a non-default dtype give the
    codes of one process with that dtype, and each rank measures its clips in a metric worker of its own, with
    the values of one process measuring in itself."""
    model = ModelSettings(name=str(tiny_model_dir), dtype="bfloat16")
    adapter = load_adapter(model)
    rows = GridPlan(STEER, ("a calm folk song",), ("tempo",), (1,)).rows({"tempo": big_directions()})
    directions = {"tempo": big_directions()}
    generation, metrics = STEER.generation(), MetricsSettings(workers=1)
    layout = RunLayout(tmp_path)
    one = steer(adapter, rows, directions, generation, layout.evaluation("one"), metrics=metrics)
    ddp = TrainerSettings(devices=2, strategy="ddp_spawn", enable_progress_bar=False)
    with pytest.raises(ValueError, match="needs the model settings"):
        steer(adapter, rows, directions, generation, layout.evaluation("two"), metrics=metrics, trainer=ddp)
    two = steer(
        adapter,
        rows,
        directions,
        generation,
        layout.evaluation("two"),
        metrics=metrics,
        model=model,
        trainer=ddp,
    )
    assert [r.codes_sha1 for r in two] == [r.codes_sha1 for r in one]
    assert [r.key for r in two] == [r.key for r in one]
    assert json.dumps([r.measures for r in two]) == json.dumps([r.measures for r in one])  # NaN too


def test_degenerate_rows_are_left_out_of_the_tables_and_counted(tiny_adapter, tmp_path, capsys):
    """Low 6: α = 1e38 makes the hidden states non-finite and every code 0; those rows are flagged in
    metrics.csv, left out of per_alpha.csv and summary.csv, and counted on the console."""
    layout = RunLayout(tmp_path / "run")
    steer_settings = SteerSettings(
        layers=(1,), alphas=(0.0, 2.0, 1e38), methods=("diffmean",), seeds=(0, 1), seconds=0.3, batch_size=8
    )
    plan = GridPlan(steer_settings, ("a calm folk song",), ("tempo",), (1,))
    metrics = MetricsSettings(quality="none", workers=0)
    evaluation = Evaluation(tiny_adapter, metrics, trainer=TrainerSettings(enable_progress_bar=False))
    (row,) = evaluation.run(plan, {"tempo": big_directions()}, layout.evaluation())
    flagged = [r for r in read_csv(layout.metrics_csv) if r["degenerate"]]
    assert len(flagged) == 2 and {float(r["alpha"]) for r in flagged} == {1e38}
    assert [float(r["alpha"]) for r in read_csv(layout.per_alpha_csv)] == [0.0, 2.0]
    assert row.alpha_max == 2.0 and float(read_csv(layout.summary_csv)[0]["alpha_max"]) == 2.0
    assert "degenerate rows: 2 of 6" in capsys.readouterr().out
