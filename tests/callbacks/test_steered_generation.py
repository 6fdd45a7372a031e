"""The callback inside a real Lightning fit loop, logging to a real offline W&B run."""

import csv

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import WandbLogger
from support.tiny_clap import build_tiny_clap
from torch.utils.data import DataLoader, TensorDataset

from steerlit.callbacks.steered_generation import GridSpec, MetricSpec, SteeredGenerationCallback
from steerlit.directions.io import DirectionSet
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


@pytest.mark.slow
def test_callback_logs_each_epoch_and_at_fit_end(tiny_adapter, tmp_path, loaders, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    root = tmp_path / "run"
    save_dir = wandb_dirs(root)
    logger = WandbLogger(project="steerlit-test", save_dir=str(save_dir), offline=True)
    clap_dir = build_tiny_clap(tmp_path / "clap")
    grid = GridSpec(
        prompts=["a calm folk song"],
        concepts=["tempo"],
        methods=["diffmean"],
        layers=[1],
        alphas=[-3.0, 0.0, 3.0],
        seeds=[0, 1],
        max_new_tokens=55,
        batch_size=4,
    )
    callback = SteeredGenerationCallback(
        tiny_adapter,
        {"tempo": big_directions(32, 4)},
        grid,
        root,
        metrics=MetricSpec(clap_path=str(clap_dir)),
        every_n_epochs=1,
        progress=False,
    )
    trainer = L.Trainer(
        max_epochs=2,
        logger=logger,
        callbacks=[callback],
        enable_progress_bar=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(TinyRegression(), *loaders)
    logger.experiment.finish()

    for stage_dir in (root / "epochs" / "epoch000", root / "epochs" / "epoch001", root):
        assert len(list((stage_dir / "samples").glob("*.wav"))) == 6, stage_dir
        rows = read_csv(stage_dir / "metrics.csv")
        assert {r["alpha"] for r in rows} == {"-3.0", "0.0", "3.0"}
        assert all(-1.0 <= float(r["clap_score"]) <= 1.0 for r in rows)
        per_alpha = read_csv(stage_dir / "per_alpha.csv")
        assert {"dsp_frechet", "clap_fad", "median_bpm"} <= set(per_alpha[0])
    codes = {r["codes_sha1"] for r in read_csv(root / "metrics.csv")}
    assert len(codes) == 6, "each alpha and seed produced different codes"
    assert (root / "plots" / "attribute_vs_alpha_epoch000.png").exists()
    assert (root / "plots" / "attribute_vs_alpha.png").exists()
    summary = callback.last_summary[0]
    assert summary["concept"] == "tempo" and summary["alpha_max"] == 3.0
    run_dir = next(save_dir.rglob("offline-run-*"))
    media = run_dir / "files" / "media"
    assert len(list((media / "audio").rglob("*.wav"))) >= 3
    tables = [p.name for p in (media / "table").rglob("*.table.json")]
    for stage in ("epoch000", "epoch001", "final"):
        assert any(name.startswith("samples") for name in tables), tables
        assert (media / "table" / "steer" / stage).exists(), stage
    assert list(run_dir.glob("*.wandb"))


def test_unknown_methods_are_an_error(tiny_adapter, tmp_path):
    grid = GridSpec(prompts=["x"], concepts=["tempo"], methods=["logistic"], layers=[1], alphas=[1.0])
    callback = SteeredGenerationCallback(tiny_adapter, {"tempo": big_directions(32, 4)}, grid, tmp_path)
    with pytest.raises(ValueError, match="None of the steering methods"):
        callback.evaluate()
