"""The joined per-layer table: held-out agreement (signed, with intervals) beside the steering slope and quality."""

import csv
import math

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import binary_auroc

from steerlit.directions.cache import labels_of, load_activation_cache
from steerlit.directions.io import load_directions
from steerlit.study.layer_comparison import COLUMNS, separation


def test_separation_is_signed_and_does_not_saturate():
    labels = np.array([1] * 20 + [0] * 20)
    rng = np.random.default_rng(0)
    noise = rng.normal(size=40)
    apart = separation(noise + 4.0 * labels, labels)
    further = separation(noise + 8.0 * labels, labels)
    assert apart["auroc"] == further["auroc"] == 1.0  # the AUROC is at its ceiling ...
    assert further["separation_d"] > 1.5 * apart["separation_d"] > 0  # ... Cohen's d still tells them apart
    backwards = separation(noise - 4.0 * labels, labels)
    assert (
        backwards["auroc"] == 0.0 and backwards["separation_d"] < 0
    )  # no fitted polarity folds it to >= 0.5
    chance = separation(rng.normal(size=40), labels)
    assert (
        chance["auroc_low"] < 0.5 < chance["auroc_high"]
        and chance["separation_d_low"] < 0 < chance["separation_d_high"]
    )


def read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_the_run_writes_the_joined_table_plots_and_report(add_run):
    layout, _ = add_run
    rows = read(layout.layer_comparison_csv)
    assert list(rows[0]) == list(COLUMNS)
    assert {(r["concept"], r["method"], r["layer"]) for r in rows} == {
        (c, m, layer) for c in ("tempo", "timbre") for m in ("diffmean", "random") for layer in "12"
    }
    summary = {(r["concept"], r["method"], r["layer"], r["strategy"]): r for r in read(layout.summary_csv)}
    for row in rows:
        steered = summary[(row["concept"], row["method"], row["layer"], row["strategy"])]
        for ours, theirs in (
            ("slope", "slope_clips"),
            ("slope_low", "slope_clips_low"),
            ("quality_cost", "quality_cost"),
        ):
            assert row[ours] == steered[theirs]
        assert (
            row["quality_at_alpha"] == steered["quality_at_alpha"]
            and row["kad_noise_floor"] == steered["kad_noise_floor"]
        )
        if row["method"] == "diffmean":
            assert float(row["cos_diffmean"]) == pytest.approx(1.0)
        acts, meta = load_activation_cache(layout.concept(row["concept"]), split=row["split"])
        v = load_directions(layout.directions(row["concept"])).get(row["method"], row["site"])
        scores, labels = (acts[row["site"]].double() @ v.double()).float(), labels_of(meta)
        assert float(row["auroc"]) == pytest.approx(float(binary_auroc(scores, labels)), abs=1e-6)
        assert int(row["n_pos"]) == int(labels.sum()) > 0 and int(row["n_neg"]) > 0
        low, high = float(row["auroc_low"]), float(row["auroc_high"])
        assert low <= float(row["auroc"]) <= high or math.isnan(low)
    for concept in ("tempo", "timbre"):
        assert layout.layer_comparison_plot(concept).stat().st_size > 5000
    html = (layout.root / "report.html").read_text()
    assert "held-out agreement beside steering slope and quality" in html
    assert 'href="layer_comparison.csv"' in html and "plots/layer_comparison_tempo.png" in html
    timbre = [
        float(r["slope"]) for r in rows if r["concept"] == "timbre"
    ]  # the tiny model has no beat: bpm nan
    assert len(timbre) == 4 and torch.isfinite(torch.tensor(timbre)).all()
