"""The steering acceptance report on per_alpha.csv files with known trends."""

from __future__ import annotations

import csv

import pytest

from steerlit.testbed.steering_report import format_report, steering_report

COLUMNS = [
    "concept",
    "method",
    "layer",
    "strategy",
    "alpha",
    "n",
    "attribute",
    "median_bpm",
    "median_centroid_hz",
    "dsp_frechet",
]


def _write(path, rows):
    with (path / "per_alpha.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)


def _row(concept, strategy, alpha, bpm, centroid, attribute):
    return dict(
        concept=concept,
        method="diffmean",
        layer=1,
        strategy=strategy,
        alpha=alpha,
        n=8,
        attribute=attribute,
        median_bpm=bpm,
        median_centroid_hz=centroid,
        dsp_frechet=abs(alpha) * 10,
    )


def test_monotone_strong_group_passes_and_weak_one_fails(tmp_path):
    alphas = [-3, -2, -1, 0, 1, 2, 3]
    rows = [
        _row("tempo", "one_to_all", a, 120 * (1 + (0.12 if a > 0 else 0.06) * a), 800 + 5 * a, "bpm")
        for a in alphas
    ]
    # Monotone but small (max +6%) and a non-monotone timbre group.
    rows += [_row("tempo", "one_to_one", a, 120 * (1 + 0.02 * a), 800, "bpm") for a in alphas]
    rows += [_row("timbre", "one_to_all", a, 120, 800 * (1 + 0.2 * (-1) ** a), "centroid_hz") for a in alphas]
    _write(tmp_path, rows)
    report = {(r["concept"], r["strategy"]): r for r in steering_report(tmp_path)}

    strong = report[("tempo", "one_to_all")]
    assert strong["spearman"] == pytest.approx(1.0)
    assert strong["best_alpha"] == 3
    assert strong["best_rel_change"] == pytest.approx(0.36)
    assert strong["quality_cost"] == pytest.approx(30.0)
    assert strong["cross_rel_change_centroid_hz"] == pytest.approx(15 / 800)
    assert strong["passes"]

    weak = report[("tempo", "one_to_one")]
    assert weak["spearman"] == pytest.approx(1.0) and not weak["passes"]
    assert report[("timbre", "one_to_all")]["passes"] is False
    text = format_report(list(report.values()))
    assert "one_to_one" in text and "yes" in text and "no" in text


def test_too_few_alphas_never_pass(tmp_path):
    rows = [_row("tempo", "one_to_all", a, 120 * (1 + 0.3 * a), 800, "bpm") for a in (-2, 0, 2)]
    _write(tmp_path, rows)
    (only,) = steering_report(tmp_path)
    assert only["spearman"] == pytest.approx(1.0) and only["best_rel_change"] == pytest.approx(0.6)
    assert not only["passes"]


def test_missing_run_folder_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="steerlit run experiment=testbed_study"):
        steering_report(tmp_path)


def test_monotone_run_stops_where_generation_breaks():
    from steerlit.testbed.steering_report import monotone_run

    alphas = [-4.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 4.0]
    broken_left = [734, 406, 486, 593, 597, 905, 1275, 1376, 1567]  # alpha -4 brightens again
    assert monotone_run(alphas, broken_left) == (-2.0, 4.0, 8)
    plateau = [106, 115, 125.1, 125.0, 127, 129, 134, 134, 134.1]  # a tie stops the run
    assert monotone_run(alphas, plateau) == (-0.5, 1.0, 4)
    assert monotone_run([-1.0, 1.0], [1, 2])[2] == 0  # no alpha = 0
