"""Per-α tables and the steerability summary from typed grid results (no model needed)."""

import math

import pytest

from steerlit.engines.grid import GridRow, SteerTerm
from steerlit.study.records import GridResult
from steerlit.study.tables import format_summary, per_alpha_table, summarize


def result(prompt, seed, alpha=None, bpm=120.0, centroid=800.0, concept="tempo", method="diffmean"):
    terms = () if alpha is None else (SteerTerm(concept, method, 1, alpha),)
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


def test_in_kad_mode_the_reference_row_has_no_distance_but_its_noise_floor():
    attributes = {"tempo": "bpm", "timbre": "centroid_hz"}

    def kad(rows, refs):
        return {"kad": 0.1 * len(rows), "kad_noise_floor": 0.05, "kad_n": len(rows)}

    table = per_alpha_table(grid(), attributes, kad)
    (reference,) = [r for r in table if r.concept == "tempo" and r.alpha == 0.0]
    assert "dsp_frechet" not in reference.quality and "dsp_frechet" not in reference.to_row()
    assert math.isnan(reference.quality["kad"]) and reference.quality["kad_noise_floor"] == 0.05
    assert reference.quality["kad_n"] == reference.n == 2
    tempo = next(s for s in summarize(table, attributes) if s.concept == "tempo")
    assert tempo.quality_cost == pytest.approx(0.2) and tempo.stats["quality_at_alpha"] in (-1.0, 1.0)
    assert tempo.stats["kad_noise_floor"] == 0.05


def test_without_quality_there_is_no_frechet_column():
    table = per_alpha_table(grid(), {"tempo": "bpm", "timbre": "centroid_hz"})
    assert "dsp_frechet" not in table[0].to_row()
    assert math.isnan(summarize(table, {"tempo": "bpm", "timbre": "centroid_hz"})[0].quality_cost)


def controlled_grid(n_prompts=12):
    """A tempo concept whose diffmean direction speeds up by 10 % per α, a random control that does nothing
    (prompt-dependent base tempo, small noise)."""
    out = []
    for i in range(n_prompts):
        base = 90.0 + 5 * i
        out.append(result(f"p{i}", 0, bpm=base))
        for alpha in (-1.0, 1.0):
            wiggle = 0.5 * ((i * 7) % 3 - 1)
            out.append(result(f"p{i}", 0, alpha, bpm=base * (1 + 0.1 * alpha) + wiggle))
            out.append(result(f"p{i}", 0, alpha, bpm=base + wiggle, method="random"))
    return out


def test_per_alpha_rows_carry_n_ci_paired_delta_octave_ratio_and_the_random_control():
    table = per_alpha_table(controlled_grid(), {"tempo": "bpm"})
    old = ["concept", "method", "layer", "strategy", "alpha", "n", "attribute", "median_bpm"]
    row = next(r for r in table if r.method == "diffmean" and r.alpha == 1.0)
    assert list(row.to_row())[: len(old)] == old  # older columns first, in their order
    assert row.n == 12 and row.stats["delta_n"] == 12
    assert row.stats["median_low"] <= row.median("bpm") <= row.stats["median_high"]
    assert (
        row.stats["delta_low"] < row.stats["delta"] < row.stats["delta_high"] and row.stats["delta_low"] > 0
    )
    assert row.stats["octave_ratio"] == pytest.approx(1.1, rel=0.02)
    assert row.stats["effect_vs_random_low"] > 0 and row.stats["effect_vs_random_n"] == 12
    control = next(r for r in table if r.method == "random" and r.alpha == 1.0)
    assert math.isnan(control.stats["effect_vs_random"])
    assert (
        abs(control.stats["delta"]) < 0.5 and control.stats["delta_low"] <= 0 <= control.stats["delta_high"]
    )


def test_summary_has_clip_level_trend_effect_vs_random_and_the_alpha_of_each_reading():
    table = per_alpha_table(controlled_grid(), {"tempo": "bpm"})
    summary = {s.method: s for s in summarize(table, {"tempo": "bpm"})}
    steer, control = summary["diffmean"].to_row(), summary["random"].to_row()
    assert steer["n_clips"] == 36 and steer["n_alpha0"] == 12
    assert steer["spearman_p"] < 0.01 and steer["slope_clips_low"] > 0
    assert control["slope_clips_low"] <= 0 <= control["slope_clips_high"] or abs(control["slope_clips"]) < 1
    assert steer["effect_vs_random_at_max_low"] > 0 and steer["effect_vs_random_at_min_high"] < 0
    assert steer["octave_ratio_at_max"] == pytest.approx(1.1, rel=0.02)
    assert steer["quality_at_alpha"] in (-1.0, 1.0) and steer["cross_at_alpha"] == 1.0
    assert str(summarize(table, {"tempo": "bpm"})[0].to_row()) == str(steer)  # seeded: deterministic
    assert "effect_vs_random_at_max" in format_summary(list(summary.values()))
