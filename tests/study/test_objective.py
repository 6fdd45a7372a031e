import math

from steerlit.study.objective import OBJECTIVE, best_summary
from steerlit.study.records import SummaryRow


def row(concept, layer, spearman, slope, quality_cost):
    return SummaryRow(
        concept,
        "diffmean",
        layer,
        "one_to_all",
        "bpm",
        100.0,
        slope,
        spearman,
        2.0,
        0.1,
        -2.0,
        -0.1,
        quality_cost,
    )


def test_best_is_one_row_by_abs_spearman_not_a_max_per_column():
    rows = [
        row("tempo", 3, 0.4, 5.0, 9.0),
        row("tempo", 1, -0.9, 1.0, 0.5),
        row("timbre", 2, math.nan, 7.0, 1.0),
    ]
    best = best_summary(rows)
    assert best[OBJECTIVE] == 0.9 and best["best/layer"] == 1 and best["best/spearman"] == -0.9
    assert best["best/slope_per_alpha"] == 1.0 and best["best/quality_cost"] == 0.5  # that row's, not the max
    assert best["best/tempo/abs_spearman"] == 0.9 and "best/timbre/abs_spearman" not in best
    assert best_summary([row("tempo", 1, math.nan, 1.0, 0.0)]) == {}
