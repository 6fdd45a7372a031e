"""A self-contained listening report of a run folder: ``report.html``, made from the folder's files alone.

The page (``templates/report.html.j2``, Jinja2 with autoescape) holds the steerability summary (``summary.csv``),
the plots (``plots/*.png`` and each concept's ``plots/direction_comparison.png``), the per-layer comparisons (the
joined ``layer_comparison.csv``, then ``<concept>/plots/direction_comparison.csv``) and, for each (concept, method,
layer, strategy) group, a prompt × α grid of ``<audio>`` players. The α = 0 column holds the unsteered reference
clip of the same prompt and seed (metrics.csv rows with an empty concept). Each clip shows the measured attribute
of its group's concept and a spectrogram thumbnail. Every path in the page is relative to the run folder, so it
works from disk (``file://``): no server, no network, no script. Also written: ``samples/index.csv`` (readable clip
name → key → wav) and ``report_assets/<key>_<stamp>.png`` (thumbnails; ``stamp`` hashes the wav's size and mtime,
so a rerun draws only the clips that changed).
"""

from __future__ import annotations

import csv
import functools
import os
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

import jinja2
import yaml

from steerlit.files import atomic_write_csv, atomic_write_text
from steerlit.study.layout import RunLayout
from steerlit.study.records import GROUP_COLUMNS
from steerlit.study.tables import DEFAULT_ATTRIBUTES
from steerlit.study.thumbnails import THUMBNAIL_SIZE, ThumbnailError, write_thumbnails

REQUIRED_FILES = ("summary.csv", "metrics.csv")
METRICS_COLUMNS = ("key", "prompt", "prompt_index", "seed", *GROUP_COLUMNS, "alpha", "wav")
# The tables' attribute of a concept by name, and also ``*bright*`` (a report only reads a column, never fails).
ATTRIBUTES_BY_NAME = (*DEFAULT_ATTRIBUTES.items(), ("bright", "centroid_hz"))
REPORT_NAME = "report.html"
SAMPLE_INDEX = "samples/index.csv"
LINKED_FILES = ("config.yaml", "summary.csv", "per_alpha.csv", "metrics.csv", "results.jsonl", SAMPLE_INDEX)
JOINED_TITLE = "all concepts: held-out agreement beside steering slope and quality (layer_comparison.csv)"


class ReportError(ValueError):
    """A folder the report cannot be made from; the message names the folder and the fix."""


@dataclass(frozen=True)
class Table:
    columns: list[str]
    rows: list[list[str]]  # CSV text (the page shows numbers with format_number)


@dataclass(frozen=True)
class Link:
    label: str  # the file's path in the run folder
    href: str  # its relative URL


@dataclass(frozen=True)
class Comparison:
    concept: str
    table: Table


@dataclass(frozen=True)
class ClipCell:
    key: str
    name: str  # readable name (clip_name), also the row's name in samples/index.csv
    alpha: str
    reference: bool
    src: str | None  # relative URL of the wav; None when the file is missing
    thumbnail: str | None  # relative URL of the spectrogram PNG
    attribute: str | None  # the metrics.csv column that measures the group's concept
    value: str  # that column's CSV text ("" when absent)


class AlphaColumn(NamedTuple):
    """A column header of a group's prompt x alpha grid: the alpha's label, and whether it is the alpha = 0 twin."""

    label: str
    reference: bool


@dataclass(frozen=True)
class GridRow:
    prompt_index: str
    seed: str
    prompt: str
    cells: list[ClipCell | None]  # one per AlphaColumn; None where the grid has no clip


@dataclass(frozen=True)
class Group:
    title: str
    anchor: str
    attribute: str | None
    alphas: list[AlphaColumn]
    rows: list[GridRow]


@dataclass(frozen=True)
class ClipContext:
    run_dir: Path
    names: Mapping[str, str]  # key -> readable name
    wavs: Mapping[str, Path]  # key -> wav, for the clips whose file exists
    thumbnails: Mapping[str, Path]  # key -> PNG


def write_report(run_dir: str | os.PathLike, *, thumbnails: bool = True) -> Path:
    """Write ``run_dir/report.html`` atomically from the run folder's files and return its path.

    Also writes ``samples/index.csv`` and, with ``thumbnails``, the spectrogram PNGs under ``report_assets/``.
    Raises ReportError for a folder without summary.csv / metrics.csv or a metrics.csv without the grid's columns.
    """
    run_dir = Path(run_dir)
    check_run_folder(run_dir)
    metrics = read_metrics(run_dir)
    names = clip_names(metrics)
    write_sample_index(run_dir, metrics, names)
    wavs = existing_wavs(run_dir, metrics)
    try:
        drawn = write_thumbnails(run_dir, wavs) if thumbnails else {}
    except ThumbnailError as err:
        raise ReportError(str(err)) from err
    groups = build_groups(metrics, ClipContext(run_dir, names, wavs, drawn), config_attributes(run_dir))
    summary_columns, summary_rows = read_table(run_dir / "summary.csv")
    comparisons = find_comparisons(run_dir)
    html = report_template().render(
        title=run_dir.resolve().name,
        links=find_links(run_dir),
        summary=csv_table(summary_columns, summary_rows),
        plots=find_plots(run_dir),
        comparisons=comparisons,
        groups=groups,
        n_clips=len(names),
        thumb_size=THUMBNAIL_SIZE,
    )
    return atomic_write_text(run_dir / REPORT_NAME, html)


def check_run_folder(run_dir: Path) -> None:
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir} is not a folder. Pass a run folder made by `steerlit run`.")
    missing = [name for name in REQUIRED_FILES if not (run_dir / name).is_file()]
    if missing:
        raise ReportError(
            f"{run_dir} has no {' and no '.join(missing)}, so it is not a finished run folder. "
            "Run `steerlit run` (or `steerlit steer`) to make one, then `steerlit report RUN`."
        )


def read_table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    """metrics.csv rows, one per clip key (the last row wins)."""
    columns, rows = read_table(run_dir / "metrics.csv")
    missing = [c for c in METRICS_COLUMNS if c not in columns]
    if missing:
        raise ReportError(
            f"{run_dir / 'metrics.csv'} lacks the columns {', '.join(missing)}; it was not written by "
            "`steerlit run` / `steerlit steer`. Rerun the study to rewrite it."
        )
    return list({row["key"]: row for row in rows}.values())


def config_attributes(run_dir: Path) -> dict[str, str]:
    """``metrics.attributes`` of the run's config.yaml (concept -> metrics.csv column); {} without one."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return {}
    config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    attributes = (config.get("metrics") or {}).get("attributes") or {}
    return {str(concept): str(column) for concept, column in attributes.items()}


def concept_attribute(concept: str, overrides: Mapping[str, str]) -> str | None:
    """The metrics.csv column that measures ``concept``: ``overrides`` (config ``metrics.attributes``), else
    by name (``*tempo*`` → bpm, ``*timbre*`` / ``*bright*`` → centroid_hz); None when neither applies."""
    if concept in overrides:
        return overrides[concept]
    for word, attribute in ATTRIBUTES_BY_NAME:
        if word in concept:
            return attribute
    return None


def is_reference(row: Mapping[str, str]) -> bool:
    return not row["concept"]


def existing_wavs(run_dir: Path, rows: Sequence[Mapping[str, str]]) -> dict[str, Path]:
    """key -> wav file, for the rows whose wav exists."""
    wavs = {row["key"]: run_dir / row["wav"] for row in rows if row["wav"]}
    return {key: path for key, path in wavs.items() if path.is_file()}


def clip_name(row: Mapping[str, str]) -> str:
    """Readable name of a metrics.csv row: ``<concept>_<method>_L<layer>_<strategy>_a<alpha>_p<prompt>_s<seed>``,
    or ``reference_p<prompt>_s<seed>`` for an unsteered reference (``prompt`` is the prompt index)."""
    tail = f"p{row['prompt_index']}_s{row['seed']}"
    if is_reference(row):
        return f"reference_{tail}"
    alpha = alpha_label(float(row["alpha"]))
    return f"{row['concept']}_{row['method']}_L{row['layer']}_{row['strategy']}_a{alpha}_{tail}"


def clip_names(rows: Sequence[Mapping[str, str]]) -> dict[str, str]:
    """key -> readable name; a name shared by several clips (a grid that also sweeps e.g. the operator) gets
    ``_<key>`` appended, so that every name is unique."""
    names = {row["key"]: clip_name(row) for row in rows}
    counts = Counter(names.values())
    return {key: f"{name}_{key}" if counts[name] > 1 else name for key, name in names.items()}


def write_sample_index(run_dir: Path, rows: Sequence[Mapping[str, str]], names: Mapping[str, str]) -> Path:
    """``samples/index.csv``: readable name -> key -> wav path, sorted by name."""
    table = [{"name": names[row["key"]], "key": row["key"], "wav": row["wav"]} for row in rows]
    table.sort(key=lambda r: r["name"])
    return atomic_write_csv(run_dir / SAMPLE_INDEX, table, ["name", "key", "wav"])


def alpha_label(alpha: float) -> str:
    return f"{alpha:g}"


def build_groups(
    rows: Sequence[Mapping[str, str]], context: ClipContext, overrides: Mapping[str, str]
) -> list[Group]:
    """One prompt × α grid per (concept, method, layer, strategy), ordered by those columns."""
    steered: dict[tuple[str, ...], list[Mapping[str, str]]] = defaultdict(list)
    references: dict[tuple[str, str], Mapping[str, str]] = {}
    for row in rows:
        if is_reference(row):
            references[(row["prompt_index"], row["seed"])] = row
        else:
            steered[tuple(row[c] for c in GROUP_COLUMNS)].append(row)
    order = sorted(steered, key=lambda key: tuple(sort_key(part) for part in key))
    return [build_group(key, steered[key], references, context, overrides) for key in order]


def build_group(
    key: tuple[str, ...],
    members: Sequence[Mapping[str, str]],
    references: Mapping[tuple[str, str], Mapping[str, str]],
    context: ClipContext,
    overrides: Mapping[str, str],
) -> Group:
    concept, method, layer, strategy = key
    attribute = concept_attribute(concept, overrides)
    cells = {(row["prompt_index"], row["seed"], float(row["alpha"])): row for row in members}
    prompts = {(row["prompt_index"], row["seed"]): row["prompt"] for row in members}
    for prompt_index, seed in prompts:
        if (prompt_index, seed) in references:
            cells[(prompt_index, seed, 0.0)] = references[(prompt_index, seed)]
    alphas = sorted({alpha for *_, alpha in cells} | {0.0})
    grid = []
    for prompt_index, seed in sorted(prompts, key=lambda pair: tuple(map(sort_key, pair))):
        row = [clip_cell(cells.get((prompt_index, seed, a)), attribute, context) for a in alphas]
        grid.append(GridRow(prompt_index, seed, prompts[(prompt_index, seed)], row))
    columns = [AlphaColumn(alpha_label(a), a == 0.0) for a in alphas]
    title = f"{concept} · {method} · L{layer} · {strategy}"
    anchor = "group-" + "-".join(quote(part, safe="") for part in key)
    return Group(title, anchor, attribute, columns, grid)


def clip_cell(row: Mapping[str, str] | None, attribute: str | None, context: ClipContext) -> ClipCell | None:
    if row is None:
        return None
    run_dir, key = context.run_dir, row["key"]
    wav, thumbnail = context.wavs.get(key), context.thumbnails.get(key)
    value = (row.get(attribute) or "") if attribute else ""
    return ClipCell(
        key=key,
        name=context.names[key],
        alpha=alpha_label(float(row["alpha"])),
        reference=is_reference(row),
        src=relative_url(run_dir, wav) if wav is not None else None,
        thumbnail=relative_url(run_dir, thumbnail) if thumbnail is not None else None,
        attribute=attribute,
        value=value,
    )


def csv_table(columns: Sequence[str], rows: Sequence[Mapping[str, str]]) -> Table:
    return Table(list(columns), [[row.get(c) or "" for c in columns] for row in rows])


def format_number(text: str) -> str:
    """A CSV number to 4 significant digits (integers and non-numbers unchanged)."""
    try:
        return text if text.lstrip("-").isdigit() else f"{float(text):.4g}"
    except ValueError:
        return text


def sort_key(text: str) -> tuple:
    """Numbers before text, numbers by value (so layer 10 follows layer 2)."""
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def relative_url(run_dir: Path, path: Path) -> str:
    return quote(relative_name(run_dir, path))


def relative_name(run_dir: Path, path: Path) -> str:
    return Path(os.path.relpath(path, run_dir)).as_posix()


def find_plots(run_dir: Path) -> list[Link]:
    paths = sorted((run_dir / "plots").glob("*.png"))
    paths += sorted(run_dir.glob("*/plots/direction_comparison.png"))
    return [Link(relative_name(run_dir, p), relative_url(run_dir, p)) for p in paths]


def find_comparisons(run_dir: Path) -> list[Comparison]:
    paths = [(JOINED_TITLE, j)] if (j := RunLayout(run_dir).layer_comparison_csv).is_file() else []
    paths += [(p.parent.parent.name, p) for p in sorted(run_dir.glob("*/plots/direction_comparison.csv"))]
    return [Comparison(name, csv_table(*read_table(path))) for name, path in paths]


def find_links(run_dir: Path) -> list[Link]:
    paths = [run_dir / name for name in (*LINKED_FILES, RunLayout(run_dir).layer_comparison_csv.name)]
    paths += sorted(run_dir.glob("*/plots/direction_comparison.csv"))
    return [Link(relative_name(run_dir, p), relative_url(run_dir, p)) for p in paths if p.is_file()]


@functools.lru_cache(maxsize=1)
def report_template() -> jinja2.Template:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("steerlit.study", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    environment.filters["number"] = format_number
    return environment.get_template("report.html.j2")
