"""Bootstrap intervals, paired deltas and trends: coverage on simulated data, determinism, pairing, grouping."""

from __future__ import annotations

import numpy as np
import pytest

from steerlit.study.statistics import (
    Interval,
    Trend,
    bootstrap_ci,
    pair_with_twins,
    paired_delta_ci,
    trend,
)


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_mean_interval_covers_the_true_mean_about_95_percent(method):
    rng = np.random.default_rng(1)
    covered = []
    for i in range(200):
        x = rng.normal(1.0, 2.0, size=40)
        ci = bootstrap_ci(x, "mean", n_boot=1000, method=method, seed=i)
        covered.append(ci.low <= 1.0 <= ci.high)
    assert 0.90 <= np.mean(covered) <= 0.99, np.mean(covered)


def test_median_interval_on_skewed_data_covers_the_true_median():
    rng = np.random.default_rng(2)
    true_median = np.log(2.0)  # of an exponential with rate 1
    covered = [
        (ci := bootstrap_ci(rng.exponential(1.0, 60), "median", n_boot=1000, method="bca", seed=i)).low
        <= true_median
        <= ci.high
        for i in range(200)
    ]
    assert 0.88 <= np.mean(covered) <= 0.99, np.mean(covered)


def test_deterministic_given_a_seed_and_counts_missing_values():
    x = np.array([1.0, 2.0, np.nan, 4.0, 8.0, np.inf, 3.0])
    a, b = bootstrap_ci(x, seed=5), bootstrap_ci(x, seed=5)
    assert a == b and isinstance(a, Interval)
    assert a.n == 5 and a.n_missing == 2 and a.estimate == 3.0
    assert a.low <= a.estimate <= a.high and a.level == 0.95
    z = np.random.default_rng(0).normal(size=20)
    assert bootstrap_ci(z, "mean", seed=6) != bootstrap_ci(z, "mean", seed=5)
    assert np.isnan(bootstrap_ci([2.0]).low) and bootstrap_ci([2.0]).estimate == 2.0
    assert np.isnan(bootstrap_ci([np.nan]).estimate)
    assert set(a.as_dict("bpm")) == {"bpm", "bpm_low", "bpm_high", "bpm_n"}


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci([1.0, 2.0], level=95)
    with pytest.raises(ValueError, match="statistic"):
        bootstrap_ci([1.0, 2.0], "mode")
    with pytest.raises(ValueError, match="pair up"):
        paired_delta_ci([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="slope method"):
        trend([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], slope="lasso")


def test_paired_delta_against_twins():
    rng = np.random.default_rng(3)
    twins = rng.normal(120.0, 20.0, size=24)  # prompt-to-prompt spread much larger than the effect
    steered = twins + 5.0 + rng.normal(0.0, 1.0, size=24)
    paired = paired_delta_ci(steered, twins, seed=0)
    assert paired.low <= 5.0 <= paired.high and paired.high - paired.low < 2.0 and paired.n == 24
    unpaired = bootstrap_ci(steered, "mean", seed=0)
    assert unpaired.high - unpaired.low > 5 * (paired.high - paired.low)
    steered[0] = np.nan
    assert paired_delta_ci(steered, twins).n_missing == 1


def test_pair_with_twins_aligns_by_key():
    keys = [("a", 0), ("b", 0), ("c", 1), ("z", 9)]
    values, twins = pair_with_twins(
        keys, [1.0, 2.0, 3.0, 4.0], [("c", 1), ("a", 0), ("b", 0)], [30.0, 10.0, 20.0]
    )
    np.testing.assert_array_equal(values, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(twins, [10.0, 20.0, 30.0])
    with pytest.raises(ValueError, match="appears twice"):
        pair_with_twins(keys, [1.0] * 4, [("a", 0), ("a", 0)], [1.0, 2.0])


def grid(rng, slope: float, n_groups: int = 12, alphas=(0.0, 0.5, 1.0, 1.5, 2.0)):
    """Clips of a steering grid: every group (prompt, seed) at every α, with a per-group offset."""
    x = np.tile(alphas, n_groups)
    groups = np.repeat(np.arange(n_groups), len(alphas))
    y = 100.0 + rng.normal(0, 15.0, n_groups)[groups] + slope * x + rng.normal(0, 2.0, x.size)
    return x, y, groups


@pytest.mark.parametrize("slope_method", ["theil_sen", "ols"])
def test_trend_recovers_a_slope(slope_method):
    x, y, groups = grid(np.random.default_rng(4), slope=6.0)
    t = trend(x, y, groups=groups, slope=slope_method, n_boot=500, n_permutations=500, seed=0)
    assert isinstance(t, Trend) and t.n == 60 and t.n_groups == 12 and t.slope_method == slope_method
    assert t.slope.low <= 6.0 <= t.slope.high
    assert t.spearman.estimate > 0.2 and t.spearman.low > 0
    assert t.p_value == pytest.approx(1 / 501)
    assert t == trend(x, y, groups=groups, slope=slope_method, n_boot=500, n_permutations=500, seed=0)


def test_trend_under_the_null_within_groups():
    rng = np.random.default_rng(5)
    p_values, covered = [], []
    for i in range(60):
        x, y, groups = grid(rng, slope=0.0)
        t = trend(x, y, groups=groups, n_boot=200, n_permutations=200, seed=i)
        p_values.append(t.p_value)
        covered.append(t.slope.low <= 0.0 <= t.slope.high)
    assert np.mean(np.array(p_values) < 0.05) <= 0.15
    assert np.mean(covered) >= 0.85
    assert 0.3 <= np.median(p_values) <= 0.7


def test_trend_drops_missing_and_handles_tiny_inputs():
    x, y, groups = grid(np.random.default_rng(6), slope=3.0)
    y[[0, 7]] = np.nan
    t = trend(x, y, groups=groups, n_boot=200, n_permutations=200)
    assert t.n == 58 and t.spearman.n_missing == 2
    tiny = trend([0.0, 1.0], [1.0, 2.0])
    assert tiny.n == 2 and np.isnan(tiny.p_value) and tiny.slope.estimate == pytest.approx(1.0)
    assert {"bpm_spearman", "bpm_slope_low", "bpm_p"} <= set(t.as_dict("bpm"))
