"""The effective perturbation size ‖α·v‖ / ‖h‖, checked against the run's own cache and directions."""

import csv
import math

import pytest
import torch

from steerlit.directions.cache import load_activation_cache
from steerlit.directions.io import DirectionSet, load_directions
from steerlit.study.perturbation import ratio_per_alpha


def test_the_ratio_is_alpha_times_the_direction_norm_over_the_mean_activation_norm(add_run):
    layout, summary = add_run
    with open(layout.summary_csv) as f:
        rows = list(csv.DictReader(f))
    assert {(r["method"], r["layer"]) for r in rows} == {
        (m, layer) for m in ("diffmean", "random") for layer in "12"
    }
    ratios = {}
    for row in rows:
        concept, site = row["concept"], f"resid_post.{row['layer']}"
        acts, _ = load_activation_cache(layout.concept(concept), split="train")  # the fitting split
        mean_norm = float(torch.linalg.vector_norm(acts[site].double(), dim=1).mean())
        v = load_directions(layout.directions(concept)).get(row["method"], site)
        expected = 0.5 * float(torch.linalg.vector_norm(v.double())) / mean_norm
        assert float(row["perturbation_at_max"]) == pytest.approx(expected, rel=1e-5)
        assert float(row["perturbation_at_min"]) == pytest.approx(expected, rel=1e-5)
        assert float(row["perturbation_per_alpha"]) == pytest.approx(2 * expected, rel=1e-5)
        ratios[(concept, row["method"], row["layer"])] = expected
    for concept, _, layer in ratios:  # the random control has the diff-mean norm of its site
        assert ratios[(concept, "random", layer)] == pytest.approx(
            ratios[(concept, "diffmean", layer)], rel=1e-5
        )
    assert ratios[("tempo", "diffmean", "1")] != pytest.approx(ratios[("tempo", "diffmean", "2")], rel=1e-3)


def test_the_ratio_by_operator_and_without_recorded_norms():
    v = torch.tensor([3.0, 4.0])
    with_norms = DirectionSet(
        {("diffmean", "resid_post.1"): v}, {"activation_norms": '{"resid_post.1": 10.0}'}
    )
    assert ratio_per_alpha(with_norms, "diffmean", "resid_post.1", "add") == pytest.approx(0.5)
    assert ratio_per_alpha(with_norms, "diffmean", "resid_post.1", "norm_add") == 1.0  # α is relative to ‖h‖
    assert math.isnan(ratio_per_alpha(with_norms, "diffmean", "resid_post.1", "ablate"))
    assert math.isnan(
        ratio_per_alpha(DirectionSet({("diffmean", "resid_post.1"): v}), "diffmean", "resid_post.1", "add")
    )
