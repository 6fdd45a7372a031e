"""fit_directions end to end on the tiny model's cache, and the comparison table."""

from __future__ import annotations

import math
import shutil
import sys
import types
from typing import get_args

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from steerlit.data.probe_set import ProbeSet
from steerlit.data.settings import ProbeSettings
from steerlit.directions import cache as C
from steerlit.directions.baselines import pca_diff
from steerlit.directions.compare import (
    COLUMNS,
    cohens_d,
    compare_directions,
    evaluate_direction,
    fit_threshold,
    log_comparison,
    read_csv,
    write_csv,
)
from steerlit.directions.diffmean import diff_mean
from steerlit.directions.extraction import extract_activations
from steerlit.directions.fit import METHOD_FITTERS, METHODS, Method, fit_directions
from steerlit.directions.io import load_directions
from steerlit.directions.settings import ExtractSettings, FitSettings, ProbeTrainSettings
from steerlit.models.fingerprint import weights_fingerprint
from steerlit.runtime import TrainerSettings

CPU = TrainerSettings(enable_progress_bar=False)
UNIT = ProbeTrainSettings(scale="unit")


class EpochCounter(Callback):
    def __init__(self):
        self.epochs = 0

    def on_train_epoch_end(self, trainer, pl_module):
        self.epochs += 1


def test_fit_directions_writes_every_method_and_the_comparison(cache_run, tiny_adapter):
    counter = EpochCounter()
    settings = FitSettings(probe=ProbeTrainSettings(max_epochs=5, val_every_n_epochs=5))
    path = fit_directions(cache_run, settings, CPU, callbacks=[counter])
    assert path == cache_run / "directions.safetensors"
    assert counter.epochs == 10  # the caller's callback ran in both probe Trainers
    ds = load_directions(path, adapter=tiny_adapter)
    sites = tiny_adapter.sites(("resid_post",))
    assert ds.methods == sorted(METHODS)
    assert {(m, s) for m in METHODS for s in sites} == set(ds.vectors)
    assert ds.metadata["concept"] == "tempo" and ds.metadata["position"] == "first"
    assert ds.metadata["weights_fingerprint"] == weights_fingerprint(tiny_adapter)  # the fitted-on model
    # diff-mean equals the plain computation on the train split; other methods share its norm
    acts, meta = C.load_activation_cache(cache_run, split="train")
    y = C.labels_of(meta)
    for s in sites:
        ref = diff_mean(acts[s][y == 1], acts[s][y == 0])
        torch.testing.assert_close(ds.get("diffmean", s), ref, atol=1e-6, rtol=1e-5)
        for m in METHODS:
            assert abs(float(ds.get(m, s).norm() - ref.norm())) < 1e-5 * max(1.0, float(ref.norm()))
    assert (cache_run / "probes" / "logistic.safetensors").exists()
    assert (cache_run / "probes" / "regression.safetensors").exists()
    rows = read_csv(cache_run / "plots" / "direction_comparison.csv")
    assert list(rows[0]) == list(COLUMNS) and len(rows) == len(METHODS) * len(sites)
    assert all(abs(r["cos_diffmean"] - 1) < 1e-6 for r in rows if r["method"] == "diffmean")
    png = cache_run / "plots" / "direction_comparison.png"
    assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"


def test_fit_directions_subset_and_errors(cache_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(C.activations_dir(cache_run), C.activations_dir(run))
    path = fit_directions(run, FitSettings(methods=("diffmean", "pca"), probe=UNIT), CPU)
    ds = load_directions(path)
    assert ds.methods == ["diffmean", "pca"] and ds.metadata["scale"] == "unit"
    assert abs(float(ds.get("pca", "resid_post.0").norm()) - 1) < 1e-5
    assert not (run / "probes").exists()  # no probe method asked for, none trained
    with pytest.raises(ValueError, match="method"):
        fit_directions(run, FitSettings(methods=("svm",)), CPU)
    with pytest.raises(ValueError, match="scale"):
        fit_directions(run, FitSettings(probe=ProbeTrainSettings(scale="huge")), CPU)
    with pytest.raises(C.CacheError):
        fit_directions(tmp_path / "empty", FitSettings(), CPU)


def test_the_method_registry_covers_the_declared_methods():
    assert tuple(METHOD_FITTERS) == get_args(Method) == METHODS
    assert all(callable(fit) for fit in METHOD_FITTERS.values())


def test_comparison_csv_writes_nan_as_an_empty_cell(tmp_path):
    row = dict(zip(COLUMNS, ["pca", "resid_post.2", 2, 0.75, float("nan"), 0.5, float("nan"), 1.0, 0.1]))
    path = write_csv([row], tmp_path / "c.csv")
    assert path.read_text().splitlines()[1] == "pca,resid_post.2,2,0.75,,0.5,,1.0,0.1"
    (back,) = read_csv(path)
    assert math.isnan(back["auroc"]) and math.isnan(back["cohens_d"]) and back["acc"] == 0.75
    assert not list(tmp_path.glob(".*tmp*"))


def test_one_dimensional_classifier_metrics():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 2
    x = torch.randn(200, 4, generator=g)
    x[:, 0] += 3 * y  # separable along e0
    e0 = torch.tensor([1.0, 0, 0, 0])
    m = evaluate_direction(e0, (x[:100], y[:100]), (x[100:], y[100:]))
    assert m["acc"] > 0.9 and m["auroc"] > 0.95 and m["cohens_d"] > 2
    flipped = evaluate_direction(-e0, (x[:100], y[:100]), (x[100:], y[100:]))
    assert flipped["acc"] == m["acc"] and flipped["auroc"] == pytest.approx(
        m["auroc"]
    )  # polarity fit on train
    assert flipped["cohens_d"] == pytest.approx(-m["cohens_d"])
    t, pol = fit_threshold(torch.tensor([0.0, 1.0, 2.0, 3.0]), torch.tensor([0, 0, 1, 1]))
    assert pol == 1.0 and 1.0 < t < 2.0
    assert cohens_d(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([0, 0, 1, 1])) > 0
    rows = compare_directions(
        {("a", "resid_post.1"): e0, ("diffmean", "resid_post.1"): e0 + 0.1},
        ({"resid_post.1": x[:100]}, y[:100]),
        ({"resid_post.1": x[100:]}, y[100:]),
    )
    assert [r["method"] for r in rows] == ["a", "diffmean"] and rows[0]["layer"] == 1


def test_log_comparison_to_a_wandb_run(monkeypatch, tmp_path):
    logged = []
    fake = types.SimpleNamespace(
        Table=lambda columns, data: ("table", columns, data), Image=lambda path: ("image", path)
    )
    monkeypatch.setitem(sys.modules, "wandb", fake)
    run = types.SimpleNamespace(log=logged.append)
    png = tmp_path / "p.png"
    png.write_bytes(b"\x89PNG")
    rows = [dict(zip(COLUMNS, ["diffmean", "resid_post.0", 0, 1.0, 1.0, 1.0, 2.0, 1.0, 0.0]))]
    log_comparison(rows, png, run)
    (payload,) = logged
    assert payload["directions/comparison/table"][1] == list(COLUMNS)
    assert payload["directions/comparison/plot"] == ("image", str(png))
    log_comparison(rows, png, None)  # no run: nothing happens


def test_pca_uses_twins_of_a_pairs_cache(tmp_path, tiny_adapter):
    pos = [f"fast {w} track" for w in ("piano", "drum", "synth", "guitar", "organ", "bass", "choir", "flute")]
    neg = [t.replace("fast", "slow") for t in pos]
    ps = ProbeSet("tempo", "", "fast", "slow", pos, neg, pairs=list(zip(pos, neg)))
    probe = ProbeSettings(form="pairs", split=(0.75, 0.0, 0.25))
    extract_activations(tmp_path, ps, tiny_adapter, ExtractSettings(batch_size=6), probe, CPU)
    fit_directions(tmp_path, FitSettings(methods=("diffmean", "pca"), probe=UNIT), CPU)
    ds = load_directions(tmp_path / "directions.safetensors")
    acts, meta = C.load_activation_cache(tmp_path, split="train")
    pos_rows = [i for i, m in enumerate(meta) if m["label"] == 1]
    neg_rows = [i for i, m in enumerate(meta) if m["label"] == 0]
    pairs = [
        (pos_rows.index(i), neg_rows.index(j))
        for i in pos_rows
        for j in neg_rows
        if meta[i]["pair_index"] == meta[j]["pair_index"]
    ]
    assert len(pairs) == 6
    for site, a in acts.items():
        expected = pca_diff(a[pos_rows], a[neg_rows], pairs)
        torch.testing.assert_close(ds.get("pca", site), expected, atol=1e-5, rtol=1e-4)
    rows = read_csv(tmp_path / "plots" / "direction_comparison.csv")
    assert {r["method"] for r in rows} == {"diffmean", "pca"}
