"""Behaviour unchanged: the default ``steerlit run logger=none`` against the reference from before the redesign.

    python benchmarks/behaviour_check.py                 # runs the CLI in a subprocess (output in a temp folder)
    python benchmarks/behaviour_check.py --out DIR       # output_dir DIR: an interrupted check resumes there
    python benchmarks/behaviour_check.py --run runs/X    # compares a finished run folder instead

``metrics.csv`` rows are matched with ``benchmarks/reference/default_metrics.csv`` by their settings columns
(prompt, seed, concept, method, layer, alpha, strategy, operator, schedule, half, site_kind), not by ``key`` or
wav name (which later work may change), and must have equal ``codes_sha1`` and measurements (floats to 1e-9
relative). ``per_alpha.csv`` and ``summary.csv`` are compared row by row the same way. The script prints one
line per table (rows compared, rows equal, max abs diff) and exits 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from steerlit.engines.grid import STEER_COLUMNS

REFERENCE = Path(__file__).resolve().parent / "reference"
SETTINGS = ("prompt", "seed", *STEER_COLUMNS)  # what identifies a grid row
IGNORED = ("key", "wav")  # names, not results
TABLES = {  # table -> (reference file, columns that identify a row)
    "metrics.csv": ("default_metrics.csv", SETTINGS),
    "per_alpha.csv": ("default_per_alpha.csv", ("concept", "method", "layer", "strategy", "alpha")),
    "summary.csv": ("default_summary.csv", ("concept", "method", "layer", "strategy")),
}
REL_TOL = 1e-9


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def cell_diff(a: str, b: str) -> float | None:
    """0 for equal cells, the absolute difference of two close numbers, None when they differ."""
    if a == b:
        return 0.0
    try:
        x, y = float(a), float(b)
    except ValueError:
        return None
    if math.isnan(x) and math.isnan(y):
        return 0.0
    return abs(x - y) if math.isclose(x, y, rel_tol=REL_TOL, abs_tol=0.0) else None


def compare(rows: list[dict], reference: list[dict], identity: tuple[str, ...]) -> dict:
    """Match rows by ``identity`` and compare every other column (but key and wav)."""
    columns = [c for c in reference[0] if c not in IGNORED and c not in identity] if reference else []
    ours = {tuple(r.get(c) for c in identity): r for r in rows}
    problems, equal, max_diff = [], 0, 0.0
    missing_columns = sorted(set(reference[0] if reference else ()) - set(rows[0] if rows else ()))
    if missing_columns or list(rows[0] if rows else ()) != list(reference[0] if reference else ()):
        problems.append(f"columns differ: ours {list(rows[0]) if rows else []}")
    if len(ours) != len(rows) or len(rows) != len(reference):
        problems.append(
            f"{len(rows)} rows ({len(ours)} distinct settings) vs {len(reference)} in the reference"
        )
    for ref in reference:
        key = tuple(ref.get(c) for c in identity)
        row = ours.get(key)
        if row is None:
            problems.append(f"no row for {dict(zip(identity, key))}")
            continue
        diffs = {c: cell_diff(row.get(c, ""), ref[c]) for c in columns}
        bad = [c for c, d in diffs.items() if d is None]
        max_diff = max([max_diff, *(d for d in diffs.values() if d is not None)])
        if bad:
            problems.append(f"{dict(zip(identity, key))}: {[(c, row.get(c), ref[c]) for c in bad]}")
        else:
            equal += 1
    return {"compared": len(reference), "equal": equal, "max_abs_diff": max_diff, "problems": problems}


def run_default(out_dir: Path) -> Path:
    """``steerlit run logger=none`` in a subprocess; returns its run folder."""
    command = [
        sys.executable,
        "-m",
        "steerlit.cli",
        "run",
        "logger=none",
        f"output_dir={out_dir}",
        "run_name=behaviour",
        "trainer.enable_progress_bar=false",
    ]
    print("$", " ".join(command), flush=True)
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    subprocess.run(command, check=True, env=env)
    return out_dir / "behaviour"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, help="a finished run folder (default: run the default study now)")
    parser.add_argument(
        "--out", type=Path, help="output_dir of the run (default: a temp folder, removed after)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="steerlit-behaviour-") as tmp:
        run = args.run or run_default(args.out or Path(tmp))
        results = {
            name: compare(read_rows(run / name), read_rows(REFERENCE / ref), identity)
            for name, (ref, identity) in TABLES.items()
        }
    print(f"\n{'table':<15}{'rows compared':>15}{'rows equal':>12}{'max abs diff':>15}")
    for name, r in results.items():
        print(f"{name:<15}{r['compared']:>15}{r['equal']:>12}{r['max_abs_diff']:>15.3g}")
    problems = [f"{name}: {p}" for name, r in results.items() for p in r["problems"]]
    for p in problems[:20]:
        print("MISMATCH", p)
    print("behaviour unchanged" if not problems else f"{len(problems)} mismatches")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
