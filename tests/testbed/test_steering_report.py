"""The steering acceptance report on per_alpha.csv files with known trends."""

from __future__ import annotations

import csv
import json

import pytest

from steerlit.files import atomic_write_csv
from steerlit.study.layout import RunLayout
from steerlit.study.records import AlphaRow
from steerlit.testbed.evaluate import main as evaluate_main
from steerlit.testbed.model_card import limitations
from steerlit.testbed.steering_report import format_report, steering_report, studies_report

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


def test_studies_report_adds_other_attribute_groups_once(tmp_path):
    """The study plus the same grid re-summarised on onset rate: tempo is reported on both attributes,
    timbre (the same in both runs) once, and every group names its run."""
    alphas = [-3, -2, -1, 0, 1, 2, 3]
    bpm_run, onset_run = tmp_path / "bpm", tmp_path / "onset"
    bpm_run.mkdir(), onset_run.mkdir()
    timbre = [_row("timbre", "one_to_one", a, 120, 800 * (1 + 0.2 * a), "centroid_hz") for a in alphas]
    _write(
        bpm_run, [_row("tempo", "one_to_all", a, 120 * (1 + 0.01 * a), 800, "bpm") for a in alphas] + timbre
    )
    with (onset_run / "per_alpha.csv").open("w", newline="") as f:
        cols = [c for c in COLUMNS if c != "median_bpm"] + ["median_onset_rate"]
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for a in alphas:
            row = _row("tempo", "one_to_all", a, 0, 800, "onset_rate")
            row.pop("median_bpm")
            w.writerow(dict(row, median_onset_rate=3.0 * (1 + 0.15 * a)))
        for r in timbre:
            w.writerow({k: v for k, v in dict(r, median_onset_rate=3.0).items() if k != "median_bpm"})
    report = studies_report([bpm_run, onset_run])
    assert report["runs"] == [str(bpm_run), str(onset_run)]
    got = {(g["concept"], g["attribute"]): g for g in report["groups"]}
    assert sorted(got) == [("tempo", "bpm"), ("tempo", "onset_rate"), ("timbre", "centroid_hz")]
    assert got[("tempo", "onset_rate")]["run"] == str(onset_run) and got[("tempo", "onset_rate")]["passes"]
    assert not got[("tempo", "bpm")]["passes"] and got[("timbre", "centroid_hz")]["run"] == str(bpm_run)

    # The evaluation command writes the same report; the model card names the best group per attribute.
    out = tmp_path / "eval.json"
    evaluate_main(["--study", str(bpm_run), str(onset_run), "--only-study", "--out", str(out)])
    steering = json.loads(out.read_text())["steering"]
    assert steering["runs"] == report["runs"] and len(steering["groups"]) == 3
    lines = "\n".join(limitations({"steering": steering}))
    assert "Best tempo group on onset_rate" in lines and "Best tempo group on bpm" in lines


def test_model_card_names_a_passing_group_before_a_more_monotone_failing_one():
    def group(layer, spearman, change, passes):
        return dict(
            concept="tempo",
            method="diffmean",
            layer=layer,
            strategy="one_to_all",
            attribute="bpm",
            n_alphas=9,
            spearman=spearman,
            best_alpha=-2.0,
            best_rel_change=change,
            quality_cost=10.0,
            cross_rel_change_centroid_hz=0.0,
            passes=passes,
        )

    steering = {"groups": [group(3, 0.98, -0.28, False), group(1, 0.95, -0.34, True)]}
    (line,) = [x for x in limitations({"steering": steering}) if x.startswith("- Best tempo")]
    assert "layer 1 one_to_all, Spearman 0.95" in line and "-34%" in line


def test_reads_the_per_alpha_table_the_study_writes(tmp_path):
    """The report reads the study's typed per-α rows back from the run folder's per_alpha.csv."""
    rows = []
    for a in (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0):
        row = AlphaRow("tempo", "diffmean", 2, "one_to_all", a, 8, "bpm", quality={"dsp_frechet": abs(a)})
        row.medians = {"bpm": 120 * (1 + 0.15 * a), "centroid_hz": 800.0}
        row.median_clap_score = 0.5 + 0.01 * a
        rows.append(row)
    layout = RunLayout(tmp_path)
    atomic_write_csv(layout.per_alpha_csv, [r.to_row() for r in rows])
    (group,) = steering_report(tmp_path)
    assert group["passes"] and group["best_alpha"] == 3.0 and group["quality_cost"] == 3.0
    assert group["best_rel_change"] == pytest.approx(0.45) and group["cross_rel_change_centroid_hz"] == 0.0
    assert group["cross_rel_change_clap_score"] == pytest.approx(0.03 / 0.5)


def test_the_report_carries_the_interval_the_random_control_and_the_kad_noise_floor(tmp_path):
    """A per_alpha.csv as the study writes it with metrics.quality=kad and the random control."""
    rows = []
    for method, gain in (("diffmean", 0.15), ("random", 0.0)):
        for a in (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0):
            quality = {"kad": 0.02 * abs(a), "kad_noise_floor": 0.01, "kad_n": 8}
            row = AlphaRow("tempo", method, 2, "one_to_all", a, 8, "bpm", quality=quality)
            row.medians = {"bpm": 120 * (1 + gain * a), "centroid_hz": 800.0}
            row.stats = {"median_low": 110 * (1 + gain * a), "median_high": 130 * (1 + gain * a)}
            if method == "diffmean":
                row.stats.update(
                    effect_vs_random=18 * a, effect_vs_random_low=12 * a, effect_vs_random_high=24 * a
                )
            rows.append(row)
    layout = RunLayout(tmp_path)
    atomic_write_csv(layout.per_alpha_csv, [r.to_row() for r in rows])
    steered, control = steering_report(tmp_path)
    assert steered["method"] == "diffmean" and control["method"] == "random"
    assert steered["best_alpha"] == 3.0 and steered["n_clips"] == 8
    assert steered["change_low"] == pytest.approx(110 * 1.45 / 120 - 1) and steered[
        "change_high"
    ] == pytest.approx(130 * 1.45 / 120 - 1)
    assert steered["vs_random"] == pytest.approx(54 / 120) and steered["vs_random_low"] == pytest.approx(
        36 / 120
    )
    assert steered["quality_kind"] == "kad" and steered["quality_cost"] == pytest.approx(0.06)
    assert steered["quality_noise_floor"] == 0.01
    text = format_report([steered, control])
    assert "vs random [95% CI]" in text and "+45%    [+33%, +57%]" in text and "+45% [+30%, +60%]" in text
    assert "n/a [n/a, n/a]" in text and "no (control)" in text  # the control has no control
    lines = "\n".join(limitations({"steering": {"groups": [steered, control]}}))
    assert (
        "KAD 0.06, noise floor 0.01" in lines and "random" not in lines
    )  # the best group is never the control
