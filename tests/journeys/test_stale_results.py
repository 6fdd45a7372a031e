"""Journeys (issue 23, High 1 and 2): a rerun under the same run name after a change upstream of the grid
recomputes what changed. Refitted directions regenerate the grid rows steered with them (whose keys carry the
new vectors' hash) and no row of the old vectors is served; an edited probe text recomputes its activations,
so the rerun equals a fresh run on the edited file."""

import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from support.journeys import TINY_TESTBED, cli_env, steerlit

from steerlit.config import compose
from steerlit.directions.io import load_directions
from steerlit.engines.grid import GridRow, SteerTerm
from steerlit.engines.keys import content_keys
from steerlit.models.loading import load_adapter

PROBES = Path(__file__).parents[2] / "probes"
CONCEPT = "testbed_tempo"
PROBE_FILE = f"probes/{CONCEPT}.yaml"  # relative to the working folder, so a copied folder reruns as it is
SMALL = [*TINY_TESTBED, "metrics.workers=0", f"probe.concepts=[{PROBE_FILE}]", "output_dir=runs"]
EDITED = ("electric organ with a swing groove, driving", "electric organ with a swing groove, racing")
TERM_FIELDS = ("concept", "method", "layer", "alpha", "strategy", "operator", "schedule", "half", "site_kind")


def metric_rows(run: Path) -> list[dict]:
    with (run / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def result_lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines() if line.strip()]


def grid_row(record: dict) -> GridRow:
    """The grid row of a metrics.csv record (a reference, or one steering term)."""
    terms = ()
    if int(record["n_terms"]):
        values = {name: record[name] for name in TERM_FIELDS}
        terms = (SteerTerm(**{**values, "layer": int(values["layer"]), "alpha": float(values["alpha"])}),)
    return GridRow(record["prompt"], int(record["seed"]), terms, int(record["prompt_index"]))


def expected_keys(run: Path, rows: list[GridRow]) -> dict[str, str]:
    """``{row key: content key}`` of ``rows`` steered with the directions now in ``run`` (public API)."""
    settings = compose(config_path=run / "config.yaml")
    adapter = load_adapter(settings.model)
    directions = {CONCEPT: load_directions(run / CONCEPT / "directions.safetensors", adapter)}
    return content_keys(adapter, rows, directions, settings.steer)


def check_served_rows(run: Path, old: list[dict]) -> None:
    """Every row of ``run``'s tables has the content key of the run's current vectors; a steered row of ``old``
    (earlier vectors) is not among them, and the reference row was not generated again."""
    records = metric_rows(run)
    rows = [grid_row(r) for r in records]
    assert [row.key for row in rows] == [r["row_key"] for r in records]
    keys = expected_keys(run, rows)
    assert [r["key"] for r in records] == [keys[row.key] for row in rows]
    old_steered = {r["key"] for r in old if int(r["n_terms"])}
    assert old_steered and not old_steered & {r["key"] for r in records}
    reference = [r["key"] for r in records if not int(r["n_terms"])]
    lines = [line["key"] for line in result_lines(run)]
    assert reference and all(lines.count(key) == 1 for key in reference)  # unchanged: not regenerated


def vectors(run: Path) -> dict:
    return load_directions(run / CONCEPT / "directions.safetensors").vectors


def assert_vectors_differ(before: dict, after: dict) -> None:
    assert before.keys() == after.keys()
    assert all(not torch.equal(before[k], after[k]) for k in before)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """A working folder with a copy of the tempo probe file and a finished run ``runs/r`` on it."""
    work = tmp_path_factory.mktemp("stale")
    (work / "probes").mkdir()
    shutil.copy(PROBES / f"{CONCEPT}.yaml", work / PROBE_FILE)
    steerlit(["run", *SMALL, "run_name=r"], cli_env(work), work)
    return work


def copy_work(work: Path, tmp_path: Path) -> Path:
    target = tmp_path / "work"
    shutil.copytree(work, target)
    return target


@pytest.mark.slow
def test_a_rerun_with_other_fit_inputs_regenerates_the_steered_rows(first_run, tmp_path):
    """High 1: ``run run_name=r`` then ``run run_name=r probe.max_per_pole=6`` refits the directions and
    regenerates the rows steered with them; summary.csv and metrics.csv change with them."""
    work = copy_work(first_run, tmp_path)
    run = work / "runs" / "r"
    old, old_summary, old_vectors = metric_rows(run), (run / "summary.csv").read_bytes(), vectors(run)
    steerlit(["run", *SMALL, "run_name=r", "probe.max_per_pole=6"], cli_env(work), work)
    assert_vectors_differ(old_vectors, vectors(run))
    assert (run / "summary.csv").read_bytes() != old_summary
    check_served_rows(run, old)


@pytest.mark.slow
def test_an_edited_probe_text_recomputes_its_activations(first_run, tmp_path):
    """High 2: a probe file's text edited (same count) and the run rerun under its name equals a fresh run on
    the edited file: its activations are recomputed, not served from the old shards."""
    work = copy_work(first_run, tmp_path)
    probe = work / PROBE_FILE
    text = probe.read_text()
    assert text.count(EDITED[0]) == 2  # in the pole's prompts and in its pair
    probe.write_text(text.replace(*EDITED))
    old = metric_rows(work / "runs" / "r")
    env = cli_env(work)
    steerlit(["run", *SMALL, "run_name=r"], env, work)
    steerlit(["run", *SMALL, "run_name=fresh"], env, work)
    rerun, fresh = work / "runs" / "r", work / "runs" / "fresh"
    index = json.loads((rerun / CONCEPT / "activations" / "index.json").read_text())
    assert EDITED[1] in [e["text"] for e in index["examples"]]
    rerun_vectors, fresh_vectors = vectors(rerun), vectors(fresh)
    assert rerun_vectors.keys() == fresh_vectors.keys()
    assert all(torch.equal(rerun_vectors[k], fresh_vectors[k]) for k in rerun_vectors)
    assert metric_rows(rerun) == metric_rows(fresh)
    check_served_rows(rerun, old)


def kill_after_a_steered_row(args: list[str], env: dict, cwd: Path, results: Path) -> None:
    """Run ``steerlit ARGS`` and kill it (-9) once a steered row is committed, before the grid ends."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "steerlit.cli", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        lines = results.read_text().splitlines(keepends=True) if results.exists() else []
        if any(line.endswith("\n") and json.loads(line)["n_terms"] for line in lines):  # complete lines
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (results.parent / "summary.csv").exists(), "the grid ended before it was killed"


@pytest.mark.slow
def test_fit_then_steer_on_a_run_with_new_fit_settings_regenerates_the_rows(tmp_path):
    """High 1: a run stopped in its grid, then ``fit --run R`` with new fit settings and ``steer --run R``: the
    resumed grid regenerates the rows steered with the old vectors."""
    (tmp_path / "probes").mkdir()
    shutil.copy(PROBES / f"{CONCEPT}.yaml", tmp_path / PROBE_FILE)
    env, run = cli_env(tmp_path), tmp_path / "runs" / "R"
    logistic = ["fit.methods=[logistic]", "steer.methods=[logistic]", "fit.probe.max_epochs=2"]
    grid = ["steer.alphas=[0,1,2,3,4,5,6,7]", "steer.batch_size=1"]
    kill_after_a_steered_row(
        ["run", *SMALL, *logistic, *grid, "run_name=R"], env, tmp_path, run / "results.jsonl"
    )
    old_vectors = vectors(run)
    old = [{**line, "n_terms": str(line["n_terms"])} for line in result_lines(run)]
    steerlit(["fit", "--run", str(run), "fit.probe.lr=0.1"], env, tmp_path)
    assert_vectors_differ(old_vectors, vectors(run))
    steerlit(["steer", "--run", str(run)], env, tmp_path)
    check_served_rows(run, old)
