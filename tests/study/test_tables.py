"""Per-α tables and the steerability summary from typed grid results (no model needed)."""

import math

import pytest

from steerlit.engines.grid import GridRow, SteerTerm
from steerlit.study.records import GridResult
from steerlit.study.tables import format_summary, per_alpha_table, summarize


def result(prompt, seed, alpha=None, bpm=120.0, centroid=800.0, concept="tempo"):
    terms = () if alpha is None else (SteerTerm(concept, "diffmean", 1, alpha),)
    rec = GridRow(prompt, seed, terms).flat()
    rec.update(codes_sha1="x", frames=10, bpm=bpm, centroid_hz=centroid)
    return GridResult.from_record(rec)


def grid():
    out = []
    for p in ("a", "b"):
        out.append(result(p, 0))
        for alpha in (-1.0, 1.0):
            out.append(result(p, 0, alpha, bpm=120 * (1 + 0.1 * alpha), centroid=800 + alpha))
            out.append(result(p, 0, alpha, bpm=120, centroid=800 * (1 + 0.2 * alpha), concept="timbre"))
    return out


def test_per_alpha_table_has_references_at_zero_and_quality():
    attributes = {"tempo": "bpm", "timbre": "centroid_hz"}
    seen = []

    def quality(rows, refs):
        seen.append((len(rows), len(refs)))
        return {"dsp_frechet": float(len(rows))}

    table = per_alpha_table(grid(), attributes, quality)
    tempo = [r for r in table if r.concept == "tempo"]
    assert [r.alpha for r in tempo] == [-1.0, 0.0, 1.0] and all(r.n == 2 for r in tempo)
    assert tempo[1].quality == {"dsp_frechet": 0.0} and tempo[2].quality == {"dsp_frechet": 2.0}
    assert tempo[2].median("bpm") == pytest.approx(132.0) and tempo[2].attribute == "bpm"
    assert seen == [(2, 2)] * 4  # two steered alphas per group, never α = 0
    summary = {s.concept: s for s in summarize(table, attributes)}
    assert summary["tempo"].rel_change_max == pytest.approx(0.1)
    assert summary["tempo"].slope_per_alpha == pytest.approx(12.0)
    assert summary["tempo"].quality_cost == 2.0
    assert summary["timbre"].cross == {"bpm": 0.0} and summary["tempo"].cross["centroid_hz"] == pytest.approx(
        1 / 800
    )
    assert math.isnan(summary["tempo"].spearman) is False
    text = format_summary(list(summary.values()))
    assert "cross_bpm" in text and "slope_per_alpha" in text


def test_without_quality_there_is_no_frechet_column():
    table = per_alpha_table(grid(), {"tempo": "bpm", "timbre": "centroid_hz"})
    assert "dsp_frechet" not in table[0].to_row()
    assert math.isnan(summarize(table, {"tempo": "bpm", "timbre": "centroid_hz"})[0].quality_cost)
