"""report.html of a run folder: the grids, their audio, attributes and thumbnails, the sample index, bad input,
and the page in a real headless Chromium.

The run folder is written here (tiny WAVs with soundfile, CSVs with the study's column names), so these tests
do not depend on the rest of the study.
"""

from __future__ import annotations

import csv
import os
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import matplotlib.image
import numpy as np
import pytest
import soundfile as sf
from support.browser import APT_INSTALL, check_report, chromium_binaries, file_url_path

from steerlit.cli import main as cli_main
from steerlit.files import atomic_write_csv, atomic_write_text
from steerlit.study.report import ReportError, clip_name, concept_attribute, write_report

# the columns of a real run folder's CSVs (metrics.csv, summary.csv, <concept>/plots/direction_comparison.csv)
METRICS_COLUMNS = [
    "key",
    "prompt",
    "prompt_index",
    "seed",
    "n_terms",
    "concept",
    "method",
    "layer",
    "alpha",
    "strategy",
    "operator",
    "schedule",
    "half",
    "site_kind",
    "codes_sha1",
    "frames",
    "bpm",
    "onset_rate",
    "centroid_hz",
    "rolloff_hz",
    "rms_dbfs",
    "peak_dbfs",
    "clipping_ratio",
    "silence_ratio",
    "wav",
]
SUMMARY_COLUMNS = [
    "concept",
    "method",
    "layer",
    "strategy",
    "attribute",
    "base",
    "slope_per_alpha",
    "spearman",
    "alpha_max",
    "rel_change_max",
    "alpha_min",
    "rel_change_min",
    "quality_cost",
    "cross_centroid_hz",
    "cross_bpm",
]
COMPARISON_COLUMNS = [
    "method",
    "site",
    "layer",
    "acc",
    "auroc",
    "cos_diffmean",
    "cohens_d",
    "norm",
    "threshold",
]
PROMPTS = ["house with organ", "rock with synth", "blues with piano"]
SEEDS = ["0", "1"]
# (concept, method, layer, strategy, alphas); demo_timbre is measured by rolloff_hz through config.yaml
GROUPS = [
    ("demo_tempo", "diffmean", "2", "one_to_all", [-2.0, -1.0, 1.0, 2.0]),
    ("demo_tempo", "diffmean", "10", "one_to_one", [1.0]),
    ("demo_timbre", "regression", "2", "one_to_all", [-1.0, 0.5]),
]
CONFIG = "run_name: demo\nmetrics:\n  attributes:\n    demo_timbre: rolloff_hz\nsteer:\n  seconds: 0.25\n"


def write_wav(path: Path, freq: float, seconds: float = 0.25, sample_rate: int = 16000) -> None:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, 0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32), sample_rate)


def clip_row(index: int, prompt_index: int, seed: str, group=None, alpha: float = 0.0) -> dict:
    concept, method, layer, strategy = group[:4] if group else ("", "", "", "")
    key = f"{index:016x}"
    return {
        **dict.fromkeys(METRICS_COLUMNS, ""),
        **{"key": key, "prompt": PROMPTS[prompt_index], "prompt_index": str(prompt_index), "seed": seed},
        **{"concept": concept, "method": method, "layer": layer, "strategy": strategy, "alpha": str(alpha)},
        **{"n_terms": "1" if group else "0", "frames": "12", "codes_sha1": f"{index:016x}"[::-1]},
        **{"bpm": str(100.0 + index * 1.25), "centroid_hz": str(500.0 + index * 3.5)},
        **{"rolloff_hz": str(900.0 + index * 7.125), "onset_rate": "2.5", "wav": f"samples/{key}.wav"},
    }


def make_run_folder(run_dir: Path) -> list[dict]:
    """A finished run folder as `steerlit run` leaves it; returns the metrics.csv rows."""
    rows = [clip_row(i, p, s) for i, (p, s) in enumerate((p, s) for p in range(len(PROMPTS)) for s in SEEDS)]
    for group in GROUPS:
        for alpha in group[4]:
            for p in range(len(PROMPTS)):
                for seed in SEEDS:
                    rows.append(clip_row(len(rows), p, seed, group, alpha))
    for i, row in enumerate(rows):
        write_wav(run_dir / row["wav"], 220.0 + 40 * i)
    atomic_write_csv(run_dir / "metrics.csv", rows, METRICS_COLUMNS)
    summary = [
        {"concept": g[0], "method": g[1], "layer": g[2], "strategy": g[3], "attribute": "bpm", "base": 101.5}
        | {"slope_per_alpha": 0.123456789, "spearman": 1.0, "alpha_max": max(g[4]), "quality_cost": 12.5}
        for g in GROUPS
    ]
    atomic_write_csv(run_dir / "summary.csv", summary, SUMMARY_COLUMNS)
    atomic_write_csv(run_dir / "per_alpha.csv", [{"concept": "demo_tempo", "alpha": 1.0}])
    atomic_write_text(run_dir / "config.yaml", CONFIG)
    (run_dir / "plots").mkdir()
    matplotlib.image.imsave(run_dir / "plots" / "attribute_vs_alpha.png", np.eye(8))
    comparison = run_dir / "demo_tempo" / "plots"
    comparison.mkdir(parents=True)
    atomic_write_csv(comparison / "direction_comparison.csv", [dict.fromkeys(COMPARISON_COLUMNS, "0.5")])
    matplotlib.image.imsave(comparison / "direction_comparison.png", np.eye(8))
    return rows


class Node:
    def __init__(self, tag: str, attrs: dict):
        self.tag, self.attrs, self.children, self.text = tag, attrs, [], ""

    def classes(self) -> list[str]:
        return (self.attrs.get("class") or "").split()

    def find_all(self, tag: str, cls: str | None = None) -> list[Node]:
        found = []
        for child in self.children:
            if child.tag == tag and (cls is None or cls in child.classes()):
                found.append(child)
            found += child.find_all(tag, cls)
        return found


class PageParser(HTMLParser):
    """report.html as a small tree of Nodes."""

    VOID = {"img", "meta", "br", "link", "input", "source", "hr"}

    def __init__(self):
        super().__init__()
        self.root = Node("root", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs))
        self.stack[-1].children.append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_endtag(self, tag):
        while len(self.stack) > 1 and self.stack.pop().tag != tag:
            pass

    def handle_data(self, data):
        self.stack[-1].text += data


def parse(report: Path) -> Node:
    parser = PageParser()
    parser.feed(report.read_text(encoding="utf-8"))
    return parser.root


@pytest.fixture
def run_folder(tmp_path) -> tuple[Path, list[dict]]:
    run_dir = tmp_path / "runs" / "demo"
    return run_dir, make_run_folder(run_dir)


def test_report_is_written_with_relative_links_to_existing_files(run_folder):
    run_dir, rows = run_folder
    report = write_report(run_dir)
    assert report == run_dir / "report.html"
    page = parse(report)
    audio = page.find_all("audio")
    assert audio and all(a.attrs["preload"] == "none" and "controls" in a.attrs for a in audio)
    media = [a.attrs["src"] for a in audio] + [i.attrs["src"] for i in page.find_all("img")]
    media += [a.attrs["href"] for a in page.find_all("a") if not a.attrs["href"].startswith("#")]
    for src in media:
        assert not src.startswith(("/", "http:", "https:", "file:")), src
        assert (run_dir / unquote(src)).is_file(), src
    hrefs = {a.attrs["href"] for a in page.find_all("a")}
    assert {"config.yaml", "summary.csv", "per_alpha.csv", "metrics.csv", "samples/index.csv"} <= hrefs
    assert "demo_tempo/plots/direction_comparison.csv" in hrefs
    images = {i.attrs["src"] for i in page.find_all("img")}
    assert {"plots/attribute_vs_alpha.png", "demo_tempo/plots/direction_comparison.png"} <= images
    assert not page.find_all("script") and "http" not in report.read_text()  # no network, no CDN


def test_summary_and_comparison_tables_hold_the_csv_rows(run_folder):
    run_dir, _ = run_folder
    page = parse(write_report(run_dir))
    tables = [t for t in page.find_all("table") if "grid" not in t.classes()]
    summary, comparison = tables
    assert [th.text for th in summary.find_all("th")] == SUMMARY_COLUMNS
    assert len(summary.find_all("tbody")[0].find_all("tr")) == len(GROUPS)
    slope = summary.find_all("td")[SUMMARY_COLUMNS.index("slope_per_alpha")]
    assert (slope.text, slope.attrs["title"]) == ("0.1235", "0.123456789")
    assert [th.text for th in comparison.find_all("th")] == COMPARISON_COLUMNS


def test_each_group_is_a_prompt_by_alpha_grid_with_the_references_at_alpha_zero(run_folder):
    run_dir, rows = run_folder
    page = parse(write_report(run_dir))
    grids = page.find_all("table", "grid")
    assert len(grids) == len(GROUPS)
    references = {(r["prompt_index"], r["seed"]): r["key"] for r in rows if not r["concept"]}
    for grid, group in zip(grids, sorted(GROUPS, key=lambda g: (g[0], g[1], int(g[2]), g[3]))):
        alphas = sorted({*group[4], 0.0})
        assert [float(th.attrs["data-alpha"]) for th in grid.find_all("th", "alpha")] == alphas
        prompt_rows = grid.find_all("tr", "prompt-row")
        assert len(prompt_rows) == len(PROMPTS) * len(SEEDS)
        for tr in prompt_rows:
            cells = tr.find_all("td", "clip")
            assert [float(td.attrs["data-alpha"]) for td in cells] == alphas
            zero = cells[alphas.index(0.0)]
            assert (
                zero.attrs["data-key"] == references[(tr.attrs["data-prompt-index"], tr.attrs["data-seed"])]
            )
            assert "ref" in zero.classes()


def test_attribute_values_shown_equal_the_csv(run_folder):
    run_dir, rows = run_folder
    page = parse(write_report(run_dir))
    by_key = {r["key"]: r for r in rows}
    seen = {}
    for grid in page.find_all("table", "grid"):
        concept = grid.attrs["data-group"].split(" · ")[0]
        for td in grid.find_all("td", "clip"):
            (value,) = td.find_all("div", "value")
            attribute = value.attrs["data-attribute"]
            seen[concept] = attribute
            assert value.attrs["data-value"] == by_key[td.attrs["data-key"]][attribute]
            assert float(value.text.split()[-1]) == pytest.approx(float(value.attrs["data-value"]), rel=1e-3)
    assert seen == {"demo_tempo": "bpm", "demo_timbre": "rolloff_hz"}  # by name; by config.yaml


def test_sample_index_maps_readable_names_to_keys_and_wavs(run_folder):
    run_dir, rows = run_folder
    page = parse(write_report(run_dir))
    with open(run_dir / "samples" / "index.csv", newline="") as f:
        index = list(csv.DictReader(f))
    assert len(index) == len(rows) and len({r["name"] for r in index}) == len(rows)
    by_name = {r["name"]: r for r in index}
    steered = next(r for r in rows if r["concept"] == "demo_timbre" and r["alpha"] == "0.5")
    name = f"demo_timbre_regression_L2_one_to_all_a0.5_p{steered['prompt_index']}_s{steered['seed']}"
    assert clip_name(steered) == name
    assert by_name[name]["key"] == steered["key"] and by_name[name]["wav"] == steered["wav"]
    assert by_name["reference_p2_s1"]["key"] == next(
        r["key"] for r in rows if not r["concept"] and r["prompt_index"] == "2" and r["seed"] == "1"
    )
    shown = {div.text for div in page.find_all("div", "name")}
    assert name in shown and "reference_p0_s0" in shown


def test_rerun_reuses_thumbnails_and_redraws_a_changed_clip(run_folder):
    run_dir, rows = run_folder
    write_report(run_dir)
    assets = run_dir / "report_assets"
    first = {p.name: p.stat().st_mtime_ns for p in assets.glob("*.png")}
    assert len(first) == len(rows)
    time.sleep(0.01)
    write_report(run_dir)
    assert {p.name: p.stat().st_mtime_ns for p in assets.glob("*.png")} == first
    changed = run_dir / rows[3]["wav"]
    write_wav(changed, 3000.0)
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
    page = parse(write_report(run_dir))
    now = {p.name: p.stat().st_mtime_ns for p in assets.glob("*.png")}
    assert len(now) == len(rows)
    assert set(now) - set(first) == {n for n in now if n.startswith(rows[3]["key"])}
    assert {n: t for n, t in now.items() if not n.startswith(rows[3]["key"])} == {
        n: t for n, t in first.items() if not n.startswith(rows[3]["key"])
    }
    shown = {unquote(i.attrs["src"]).split("/")[-1] for i in page.find_all("img")}
    assert set(now) <= shown


def test_without_thumbnails_and_with_a_missing_wav(run_folder):
    run_dir, rows = run_folder
    (run_dir / rows[-1]["wav"]).unlink()
    page = parse(write_report(run_dir, thumbnails=False))
    assert not (run_dir / "report_assets").exists()
    assert not [i for i in page.find_all("img") if "spectrogram" in i.attrs.get("alt", "")]
    cell = next(td for td in page.find_all("td", "clip") if td.attrs.get("data-key") == rows[-1]["key"])
    assert not cell.find_all("audio") and cell.find_all("div", "missing")
    assert len(page.find_all("audio")) == sum(1 for td in page.find_all("td", "clip") if td.find_all("audio"))


def test_a_folder_that_is_not_a_finished_run_is_refused(tmp_path):
    with pytest.raises(ReportError, match="is not a folder"):
        write_report(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ReportError, match=r"empty has no summary\.csv and no metrics\.csv.*steerlit run"):
        write_report(empty)
    atomic_write_csv(empty / "summary.csv", [{"concept": "x"}])
    atomic_write_csv(empty / "metrics.csv", [{"key": "k", "prompt": "p"}])
    with pytest.raises(ReportError, match="lacks the columns prompt_index, seed, concept"):
        write_report(empty)
    assert not (empty / "report.html").exists()


def test_concept_attribute_by_config_then_by_name():
    assert concept_attribute("testbed_tempo", {}) == "bpm"
    assert concept_attribute("bright_guitar", {}) == "centroid_hz"
    assert concept_attribute("testbed_timbre", {"testbed_timbre": "rolloff_hz"}) == "rolloff_hz"
    assert concept_attribute("mood", {}) is None


@pytest.mark.skipif(chromium_binaries() is None, reason=f"needs Chromium and its driver: {APT_INSTALL}")
def test_report_in_headless_chromium(run_folder, tmp_path):
    run_dir, _ = run_folder
    report = write_report(run_dir)
    n_audio = len(parse(report).find_all("audio"))
    seen = check_report(report, tmp_path / "report.png")
    assert seen.severe_logs == []
    assert len(seen.audio) == n_audio > 0
    for clip in seen.audio:
        assert file_url_path(clip["src"]).is_file(), clip
        assert clip["error"] is None and clip["readyState"] >= 2 and clip["duration"] > 0, clip
        assert clip["duration"] == pytest.approx(0.25, abs=0.01)
    assert seen.images and all(image["ok"] for image in seen.images), seen.images
    assert seen.screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_unreadable_wav_is_refused_when_drawing_thumbnails(run_folder):
    run_dir, rows = run_folder
    (run_dir / rows[0]["wav"]).write_bytes(b"not a wav file")
    with pytest.raises(
        ReportError, match=rf"{rows[0]['key']}\.wav is not a readable audio file.*thumbnails=False"
    ):
        write_report(run_dir)
    assert write_report(run_dir, thumbnails=False).is_file()


@pytest.mark.skipif(chromium_binaries() is None, reason=f"needs Chromium and its driver: {APT_INSTALL}")
def test_the_browser_check_sees_errors_missing_media_and_undecodable_audio(tmp_path):
    (tmp_path / "noise.wav").write_bytes(b"RIFF but not audio")
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html><body><img src="missing.png"><audio controls preload="none" src="missing.wav">'
        '</audio><audio controls preload="none" src="noise.wav"></audio><script>console.error("boom")</script>'
        "</body></html>"
    )
    seen = check_report(page, tmp_path / "bad.png", timeout_ms=5000)
    assert [clip["error"] is not None for clip in seen.audio] == [True, True]
    assert [image["ok"] for image in seen.images] == [False]
    messages = " ".join(entry["message"] for entry in seen.severe_logs)
    assert "boom" in messages and "missing.png" in messages and "missing.wav" in messages


def test_steerlit_report_command_rewrites_the_report_and_refuses_a_bad_folder(run_folder, tmp_path, capsys):
    run_dir, _ = run_folder
    assert cli_main(["report", str(run_dir), "--no-thumbnails"]) == 0
    assert (run_dir / "report.html").is_file()
    assert "wrote" in capsys.readouterr().out
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    assert cli_main(["report", str(empty)]) == 2
    assert "steerlit run" in capsys.readouterr().err
