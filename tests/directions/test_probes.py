"""Linear probes: synthetic separable data and agreement with an independent logistic regression."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors import safe_open

from steerlit.data.settings import ProbeSettings
from steerlit.directions import cache as C
from steerlit.directions.extraction import extract_activations
from steerlit.directions.probes import LinearProbeModule, ProbeDataModule, train_probe
from steerlit.directions.settings import ExtractSettings, ProbeTrainSettings
from steerlit.runtime import TrainerSettings

CPU = TrainerSettings(enable_progress_bar=False)


def _synthetic(n=300, h=24, layers=3, seed=0):
    """Positives and negatives separated by ~7 sigma along ``d``; unit noise elsewhere, offset 3."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(h, generator=g)
    d /= d.norm()
    y = torch.arange(n) % 2
    acts = {}
    for layer in range(layers):
        x = torch.randn(n, h, generator=g)
        x = x - (x @ d)[:, None] * d
        along = (2 * y - 1).float() * 2.0 + 0.3 * torch.randn(n, generator=g)
        acts[f"resid_post.{layer}"] = x + along[:, None] * d + 3.0
    splits = ["train"] * (n * 6 // 10) + ["val"] * (n // 10) + ["test"] * (n - n * 7 // 10)
    return acts, y, splits, d


@pytest.mark.parametrize(
    ("kind", "standardize"), [("logistic", True), ("logistic", False), ("regression", True)]
)
def test_probe_recovers_a_separating_direction(kind, standardize, tmp_path):
    acts, y, splits, d = _synthetic()
    dm = ProbeDataModule.from_tensors(acts, y, splits)
    path = tmp_path / f"{kind}.safetensors"
    settings = ProbeTrainSettings(
        lr=0.05, weight_decay=1e-3, max_epochs=60, standardize=standardize, val_every_n_epochs=10
    )
    probe = train_probe(dm, settings, CPU, kind=kind, save_to=path)
    assert set(probe.last_val) >= {f"val/acc/{s}" for s in acts} | {f"val/auroc/{s}" for s in acts}
    for site in acts:
        assert probe.last_test[f"test/acc/{site}"] >= 0.99
    dirs = probe.directions("unit")
    for site, v in dirs.items():
        assert abs(float(v.norm()) - 1) < 1e-5
        assert float(v @ d) >= 0.9, (site, float(v @ d))
    scaled = probe.directions("diffmean")
    x, yy = dm.split("_train")
    for i, site in enumerate(dm.sites):
        gap = x[yy == 1, i].mean(0) - x[yy == 0, i].mean(0)
        assert abs(float(scaled[site].norm() - gap.norm())) < 1e-4
    with safe_open(str(tmp_path / f"{kind}.safetensors"), framework="pt") as f:
        assert f.get_tensor("weight").shape == (3, 24) and f.metadata()["kind"] == kind


def test_direction_sign_points_to_positive_pole():
    acts, y, splits, d = _synthetic(layers=1)
    dm = ProbeDataModule.from_tensors(acts, y, splits)
    probe = LinearProbeModule.for_data(dm)
    with torch.no_grad():
        probe.weight.copy_(-d * probe.std[0])  # a probe that points to the negative pole
    v = probe.directions()["resid_post.0"]
    assert float(v @ d) > 0.99


def newton_logistic(x: np.ndarray, y: np.ndarray, lam: float, iters: int = 50) -> tuple[np.ndarray, float]:
    """Independent reference: minimise mean BCE + lam/2 |w|^2 (bias unpenalised) by Newton's method."""
    n, h = x.shape
    xb = np.hstack([x, np.ones((n, 1))])
    w = np.zeros(h + 1)
    reg = np.diag(np.r_[np.full(h, lam), 0.0])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-xb @ w))
        grad = xb.T @ (p - y) / n + reg @ w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb / n + reg
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return w[:h], float(w[h])


@pytest.fixture(scope="module")
def tempo_cache(tmp_path_factory, tiny_adapter):
    run, threads = tmp_path_factory.mktemp("tempo-cache"), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        probe = ProbeSettings(split=(0.6, 0.1, 0.3))
        extract_activations(run, "tempo", tiny_adapter, ExtractSettings(batch_size=64), probe, CPU)
    finally:
        torch.set_num_threads(threads)
    return run


def test_probe_matches_independent_logistic_regression_on_real_cache(tempo_cache):
    wd = 1e-2
    dm = ProbeDataModule(tempo_cache)
    settings = ProbeTrainSettings(lr=0.05, weight_decay=wd, max_epochs=150, val_every_n_epochs=10)
    probe = train_probe(dm, settings, CPU, kind="logistic")
    x_tr, y_tr = dm.split("_train")
    x_te, y_te = dm.split("test")
    assert len(y_te) >= 60
    mean, std = x_tr.mean(0), x_tr.std(0, unbiased=False).clamp_min(1e-6)
    for i, site in enumerate(dm.sites):
        z_tr = ((x_tr[:, i] - mean[i]) / std[i]).double().numpy()
        z_te = ((x_te[:, i] - mean[i]) / std[i]).double().numpy()
        w, b = newton_logistic(z_tr, y_tr.numpy().astype(np.float64), wd)
        ref_acc = float((((z_te @ w + b) > 0).astype(int) == y_te.numpy()).mean())
        acc = probe.last_test[f"test/acc/{site}"]
        assert abs(acc - ref_acc) <= 0.02 + 1e-9, (site, acc, ref_acc)


def test_probe_data_module_reads_the_cache(cache_run):
    dm = ProbeDataModule(cache_run, batch_size=8)
    acts, meta = C.load_activation_cache(cache_run)
    x, y = dm.split("train")
    rows = [i for i, m in enumerate(meta) if m["split"] == "train"]
    assert x.shape == (len(rows), len(acts), next(iter(acts.values())).shape[1])
    assert torch.equal(x[:, 0], acts["resid_post.0"][rows])
    assert len(next(iter(dm.train_dataloader()))[1]) == 8
