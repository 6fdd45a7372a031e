"""Typed records keep the CSV columns, their order and their values."""

import math

from steerlit.engines.grid import GridRow, SteerTerm
from steerlit.files import csv_text
from steerlit.study.records import AlphaRow, GridResult, SummaryRow, read_alpha_rows


def record(row: GridRow, **measures) -> dict:
    rec = row.flat()
    rec.update(codes_sha1="0123456789abcdef", frames=50, **measures)
    rec["wav"] = f"samples/{rec['key']}.wav"
    return rec


def test_grid_result_round_trips_a_runner_record_in_column_order():
    steered = GridRow("a song", 1, (SteerTerm("tempo", "diffmean", 2, -1.0),), prompt_index=3)
    rec = record(steered, bpm=120.5, onset_rate=2.0, centroid_hz=float("nan"))
    result = GridResult.from_record(rec)
    assert result.group == ("tempo", "diffmean", 2, "one_to_all") and result.is_single_term
    assert result.measures == {"bpm": 120.5, "onset_rate": 2.0, "centroid_hz": rec["centroid_hz"]}
    assert list(result.to_row()) == list(rec) and result.to_row()["bpm"] == 120.5
    result.clap_score = 0.25
    assert list(result.to_row())[-2:] == ["wav", "clap_score"] and result.value("clap_score") == 0.25

    reference = GridResult.from_record(record(GridRow("a song", 1), bpm=100.0))
    assert reference.is_reference and reference.alpha == 0.0 and reference.concept is None
    assert csv_text([reference.to_row()]).splitlines()[1].count(",,") >= 1  # empty steering cells


def test_alpha_row_csv_round_trip(tmp_path):
    row = AlphaRow("tempo", "diffmean", 2, "one_to_one", -2.0, 8, "bpm")
    row.medians = {"bpm": 119.0, "centroid_hz": 574.2}
    row.quality = {"dsp_frechet": 71.1, "clap_fad": float("nan")}
    assert list(row.to_row()) == [
        *("concept", "method", "layer", "strategy", "alpha", "n", "attribute"),
        *("median_bpm", "median_centroid_hz", "dsp_frechet", "clap_fad"),
    ]
    path = tmp_path / "per_alpha.csv"
    path.write_text(csv_text([row.to_row()]))
    (back,) = read_alpha_rows(path)
    assert back.group == row.group and back.alpha == -2.0 and back.n == 8 and back.median("bpm") == 119.0
    assert back.quality["dsp_frechet"] == 71.1 and math.isnan(back.quality["clap_fad"])
    assert math.isnan(back.median("onset_rate"))


def test_alpha_row_uncertainty_columns_come_last_and_read_back(tmp_path):
    row = AlphaRow("tempo", "diffmean", 2, "one_to_one", 1.0, 8, "bpm", medians={"bpm": 130.0})
    row.quality = {"kad": 0.2, "kad_noise_floor": 0.05}
    row.stats = {
        "median_low": 125.0,
        "median_high": 133.0,
        "delta": 9.0,
        "delta_n": 8,
        "effect_vs_random": 7.5,
    }
    assert list(row.to_row())[-5:] == list(row.stats)
    path = tmp_path / "per_alpha.csv"
    path.write_text(csv_text([row.to_row()]))
    (back,) = read_alpha_rows(path)
    assert back.medians == {"bpm": 130.0} and back.quality == row.quality
    assert back.stats == {k: float(v) for k, v in row.stats.items()}


def test_summary_row_columns():
    row = SummaryRow(
        "timbre", "regression", 2, "one_to_all", "centroid_hz", 1.0, 2.0, 0.9, 2.0, 0.3, -2.0, -0.2, 5.0
    )
    row.cross = {"bpm": 0.01}
    assert list(row.to_row()) == [
        *("concept", "method", "layer", "strategy", "attribute", "base", "slope_per_alpha", "spearman"),
        *("alpha_max", "rel_change_max", "alpha_min", "rel_change_min", "quality_cost", "cross_bpm"),
    ]
