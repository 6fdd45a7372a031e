"""The callback inside real Lightning fit loops, logging to a real offline W&B run.

Clips are measured in the test's own process (``workers=0``): the measuring pool has its own tests
(tests/metrics/test_pool.py, tests/engines/test_runner.py), and its spawned worker costs 10-20 s per test."""

import csv

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import WandbLogger
from support.tiny_clap import build_tiny_clap
from torch.utils.data import DataLoader, TensorDataset

from steerlit.callbacks.steered_generation import SteeredGenerationCallback
from steerlit.config import compose
from steerlit.directions.io import DirectionSet
from steerlit.metrics.settings import MetricsSettings
from steerlit.runtime import TrainerSettings
from steerlit.study.evaluation import Evaluation, GridPlan
from steerlit.study.layout import RunLayout
from steerlit.study.run import run_study
from steerlit.study.settings import SteerSettings
from steerlit.study.tracking import wandb_dirs


class TinyRegression(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)

    def training_step(self, batch, _):
        x, y = batch
        return torch.nn.functional.mse_loss(self.lin(x), y)

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val/loss", torch.nn.functional.mse_loss(self.lin(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.fixture()
def loaders():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=g)
    data = TensorDataset(x, x.sum(1, keepdim=True))
    return DataLoader(data, batch_size=8), DataLoader(data, batch_size=8)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def big_directions(hidden: int, layers: int) -> DirectionSet:
    g = torch.Generator().manual_seed(1)
    vectors = {("diffmean", f"resid_post.{i}"): 3 * torch.randn(hidden, generator=g) for i in range(layers)}
    return DirectionSet(vectors)


def fit_trainer(callback, logger=None, epochs=2):
    return L.Trainer(
        max_epochs=epochs,
        logger=logger if logger is not None else False,
        callbacks=[callback],
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


@pytest.mark.slow
def test_callback_logs_each_epoch_and_at_fit_end(tiny_adapter, tmp_path, loaders, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    layout = RunLayout(tmp_path / "run")
    save_dir = wandb_dirs(layout.root)
    logger = WandbLogger(project="steerlit-test", save_dir=str(save_dir), offline=True)
    clap_dir = build_tiny_clap(tmp_path / "clap")
    steer = SteerSettings(
        layers=(1,), alphas=(-3.0, 0.0, 3.0), methods=("diffmean",), seeds=(0, 1), seconds=1.04, batch_size=4
    )
    evaluation = Evaluation(
        tiny_adapter,
        MetricsSettings(clap_path=str(clap_dir), workers=0),
        trainer=TrainerSettings(enable_progress_bar=False),
    )
    plan = GridPlan(steer, ("a calm folk song",), ("tempo",), (1,))
    callback = SteeredGenerationCallback(
        evaluation, plan, {"tempo": big_directions(32, 4)}, layout, every_n_epochs=1
    )
    fit_trainer(callback, logger).fit(TinyRegression(), *loaders)
    logger.experiment.finish()

    root = layout.root
    for stage_dir in (root / "epochs" / "epoch000", root / "epochs" / "epoch001", root):
        assert len(list((stage_dir / "samples").glob("*.wav"))) == 6, stage_dir
        rows = read_csv(stage_dir / "metrics.csv")
        assert {r["alpha"] for r in rows} == {"-3.0", "0.0", "3.0"}
        assert all(-1.0 <= float(r["clap_score"]) <= 1.0 for r in rows)
        per_alpha = read_csv(stage_dir / "per_alpha.csv")
        assert {"kad", "kad_noise_floor", "clap_fad", "median_bpm", "median_clap_score"} <= set(per_alpha[0])
    codes = {r["codes_sha1"] for r in read_csv(root / "metrics.csv")}
    assert len(codes) == 6, "each alpha and seed produced different codes"
    assert (root / "plots" / "attribute_vs_alpha_epoch000.png").exists()
    assert (root / "plots" / "attribute_vs_alpha.png").exists()
    summary = callback.last_summary[0]
    assert summary.concept == "tempo" and summary.alpha_max == 3.0
    run_dir = next(save_dir.rglob("offline-run-*"))
    media = run_dir / "files" / "media"
    assert len(list((media / "audio").rglob("*.wav"))) >= 3
    tables = [p.name for p in (media / "table").rglob("*.table.json")]
    for stage in ("epoch000", "epoch001", "final"):
        assert any(name.startswith("samples") for name in tables), tables
        assert (media / "table" / "steer" / stage).exists(), stage
    assert list(run_dir.glob("*.wandb"))


def test_every_n_epochs_and_fit_end_switches(tiny_adapter, tmp_path, loaders):
    """Every second validation epoch of three, not at fit end, into the concept's epochs folder."""
    layout = RunLayout(tmp_path / "run")
    steer = SteerSettings(layers=(1,), alphas=(0.0, 3.0), methods=("diffmean",), seconds=0.3, batch_size=4)
    evaluation = Evaluation(
        tiny_adapter,
        MetricsSettings(quality="none", workers=0),
        trainer=TrainerSettings(enable_progress_bar=False),
    )
    seen = []

    def directions(module):
        seen.append(type(module).__name__)
        return {"tempo": big_directions(32, 4)}

    plan = GridPlan(steer, ("x",), ("tempo",), (1,))
    callback = SteeredGenerationCallback(
        evaluation, plan, directions, layout, concept="tempo", every_n_epochs=2, at_fit_end=False
    )
    fit_trainer(callback, epochs=3).fit(TinyRegression(), *loaders)
    assert seen == ["TinyRegression"]  # epoch 1 only
    stages = sorted(p.name for p in (layout.concept("tempo") / "epochs").iterdir())
    assert stages == ["epoch001"]
    assert len(read_csv(layout.epochs("epoch001", "tempo") / "metrics.csv")) == 2
    assert (layout.concept_plots("tempo") / "attribute_vs_alpha_epoch001.png").exists()
    assert not layout.metrics_csv.exists() and callback.last_summary[0].concept == "tempo"


def test_unknown_methods_are_an_error(tiny_adapter, tmp_path):
    steer = SteerSettings(layers=(1,), alphas=(1.0,), methods=("logistic",))
    plan = GridPlan(steer, ("x",), ("tempo",), (1,))
    callback = SteeredGenerationCallback(
        Evaluation(tiny_adapter, MetricsSettings()),
        plan,
        {"tempo": big_directions(32, 4)},
        RunLayout(tmp_path),
    )
    with pytest.raises(ValueError, match="None of the steering methods"):
        callback.evaluate(None, None)


def test_run_study_steers_while_probes_train(tmp_path, tiny_model_dir):
    settings = compose(
        [
            f"model={tiny_model_dir}",
            "logger=none",
            "probe=tempo",
            "probe.max_per_pole=4",
            "fit.methods=[diffmean,logistic]",
            "fit.probe.max_epochs=2",
            "steer.methods=[diffmean]",
            "steer.alphas=[0,0.5]",
            "steer.operator=norm_add",
            "steer.n_prompts=1",
            "steer.seconds=0.3",
            "steer.strategies=[one_to_all]",
            "steer.every_n_epochs=2",
            "trainer.enable_progress_bar=false",
            "metrics.workers=0",
            f"output_dir={tmp_path}",
            "run_name=probes",
        ]
    )
    run_study(settings, probe_callbacks=SteeredGenerationCallback.for_probes)
    layout = RunLayout(tmp_path / "probes")
    stage = layout.evaluation("epoch001", concept="tempo")
    rows = read_csv(stage.metrics_csv)
    assert {r["method"] for r in rows} == {"", "logistic"}, "steered with the training probe"
    assert stage.plot.exists() and not layout.epochs("epoch000", "tempo").exists()
    assert {r["method"] for r in read_csv(layout.metrics_csv)} == {"", "diffmean"}
