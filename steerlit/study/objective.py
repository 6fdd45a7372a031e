"""The study's objective: the summary row (one concept/method/layer/strategy group) that steers best.

A group steers best when its attribute follows α most monotonically: the largest ``|spearman|`` (ties go to the
larger ``|slope_per_alpha|``). :func:`best_summary` reports that one row's settings and values under ``best/``,
which is what W&B sweeps optimise (``metric: {name: best/abs_spearman, goal: maximize}``); it is not a maximum
taken column by column. Per concept, ``best/<concept>/abs_spearman`` is the best group of that concept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from steerlit.study.records import SummaryRow

OBJECTIVE = "best/abs_spearman"
ROW_SETTINGS = ("concept", "method", "layer", "strategy", "attribute")
ROW_VALUES = ("spearman", "slope_per_alpha", "rel_change_max", "rel_change_min", "quality_cost")


def objective_key(row: SummaryRow) -> tuple[float, float]:
    """Sort key of a row by the objective (larger is better; NaN ranks last)."""
    spearman, slope = abs(row.spearman), abs(row.slope_per_alpha)
    return (spearman if math.isfinite(spearman) else -1.0, slope if math.isfinite(slope) else -1.0)


def best_row(rows: Sequence[SummaryRow]) -> SummaryRow | None:
    """The row with the best objective, or None when no row has a finite Spearman correlation."""
    scored = [r for r in rows if math.isfinite(r.spearman)]
    return max(scored, key=objective_key) if scored else None


def best_summary(rows: Sequence[SummaryRow]) -> dict[str, Any]:
    """``best/abs_spearman`` and the best row's settings and values (``best/layer``, ``best/spearman``, ...);
    ``best/<concept>/abs_spearman`` per concept. Empty when no row has a finite Spearman correlation."""
    best = best_row(rows)
    if best is None:
        return {}
    out: dict[str, Any] = {OBJECTIVE: abs(best.spearman)}
    out.update({f"best/{k}": getattr(best, k) for k in (*ROW_SETTINGS, *ROW_VALUES)})
    for concept in dict.fromkeys(r.concept for r in rows):
        row = best_row([r for r in rows if r.concept == concept])
        if row is not None:
            out[f"best/{concept}/abs_spearman"] = abs(row.spearman)
    return out
