"""Typed records of a study's results: one generated clip, one (group, α) point, one group's steerability.

Each record knows its CSV row (:meth:`to_row`): the columns, their order and their values are those of
``metrics.csv``, ``per_alpha.csv`` and ``summary.csv`` (see :mod:`steerlit.study.layout`). A *group* is one
(concept, method, layer, strategy) sweep over α.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerlit.engines.grid import STEER_COLUMNS

GroupKey = tuple[str, str, int, str]  # (concept, method, layer, strategy)
GROUP_COLUMNS = ("concept", "method", "layer", "strategy")
ROW_COLUMNS = (  # GridRow.flat() + what the runner adds before the measurements
    "key",
    "prompt",
    "prompt_index",
    "seed",
    "n_terms",
    *STEER_COLUMNS,
    "codes_sha1",
    "frames",
)
LATE_COLUMNS = ("wav", "clap_score")  # after the measurements, in this order
QUALITY_COLUMNS = ("dsp_frechet", "clap_fad", "kad", "kad_noise_floor", "kad_n")  # per-α quality columns


@dataclass
class GridResult:
    """One generated clip: its grid row's columns, the codes hash and every measurement.

    ``measures``: attribute name -> value, in the order the clip was measured (``bpm``, ``centroid_hz``, ...).
    The reference row (no steering) has ``alpha`` 0 and ``None`` steering columns; a multi-term row joins each
    steering column's values with ``+`` (strings)."""

    key: str
    prompt: str
    prompt_index: int
    seed: int
    n_terms: int
    concept: str | None
    method: str | None
    layer: int | str | None
    alpha: float | str
    strategy: str | None
    operator: str | None
    schedule: str | None
    half: str | None
    site_kind: str | None
    codes_sha1: str
    frames: int
    measures: dict[str, Any] = field(default_factory=dict)
    wav: str | None = None
    clap_score: float | None = None

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> GridResult:
        """From a runner / ResultStore record (``row.flat()`` + codes_sha1, frames, measurements, wav)."""
        known = set(ROW_COLUMNS) | set(LATE_COLUMNS) | {"codes"}
        measures = {k: v for k, v in record.items() if k not in known}
        return cls(
            **{c: record.get(c) for c in ROW_COLUMNS},
            measures=measures,
            wav=record.get("wav"),
            clap_score=record.get("clap_score"),
        )

    @property
    def is_single_term(self) -> bool:
        return self.n_terms == 1

    @property
    def is_reference(self) -> bool:
        return not self.n_terms

    @property
    def group(self) -> GroupKey:
        return (self.concept, self.method, self.layer, self.strategy)

    def value(self, name: str) -> float | None:
        """A measurement (``clap_score`` included); None when the clip lacks it."""
        return self.clap_score if name == "clap_score" else self.measures.get(name)

    def to_row(self) -> dict[str, Any]:
        """The ``metrics.csv`` row: the row columns, the measurements, then ``wav`` and ``clap_score``."""
        row = {c: getattr(self, c) for c in ROW_COLUMNS}
        row.update(self.measures)
        for c in LATE_COLUMNS:
            if getattr(self, c) is not None:
                row[c] = getattr(self, c)
        return row


@dataclass
class AlphaRow:
    """One group at one α: clip count, the median of every measured attribute, the quality against α = 0.

    ``medians``: attribute -> median over the clips (the ``median_<attribute>`` columns, names sorted);
    ``quality``: ``dsp_frechet`` / ``kad`` (and ``clap_fad`` with a CLAP model) of these clips vs the references;
    ``stats``: the uncertainty columns of :mod:`steerlit.study.summary_stats` (after every older column);
    ``clips``: ``(alpha, (prompt, seed), value)`` of the target attribute per clip, for the summary's clip-level
    trend (not a CSV column; empty when read back from a CSV)."""

    concept: str
    method: str
    layer: int
    strategy: str
    alpha: float
    n: int
    attribute: str
    medians: dict[str, float] = field(default_factory=dict)
    median_clap_score: float | None = None
    quality: dict[str, float] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)
    clips: list[tuple[float, Any, float]] = field(default_factory=list, repr=False, compare=False)

    @property
    def group(self) -> GroupKey:
        return (self.concept, self.method, self.layer, self.strategy)

    def median(self, attribute: str) -> float:
        """The median of an attribute (``clap_score`` included); nan when not measured."""
        if attribute == "clap_score":
            return self.median_clap_score if self.median_clap_score is not None else math.nan
        return self.medians.get(attribute, math.nan)

    @property
    def measured(self) -> list[str]:
        """The attributes with a median column, in column order (``clap_score`` last)."""
        return [*self.medians, *(["clap_score"] if self.median_clap_score is not None else [])]

    def to_row(self) -> dict[str, Any]:
        """The ``per_alpha.csv`` row."""
        row: dict[str, Any] = {c: getattr(self, c) for c in (*GROUP_COLUMNS, "alpha", "n", "attribute")}
        row.update({f"median_{name}": value for name, value in self.medians.items()})
        if self.median_clap_score is not None:
            row["median_clap_score"] = self.median_clap_score
        row.update(self.quality)
        row.update(self.stats)
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, str]) -> AlphaRow:
        """From a ``per_alpha.csv`` row (strings; an empty cell is nan)."""

        def number(value: str | None) -> float:
            return float(value) if value not in ("", None) else math.nan

        medians = {
            k[len("median_") :]: number(v)
            for k, v in row.items()
            if k.startswith("median_") and k not in ("median_clap_score", "median_low", "median_high")
        }
        clap = row.get("median_clap_score")
        fixed = {*GROUP_COLUMNS, "alpha", "n", "attribute", *QUALITY_COLUMNS}
        stats = {k: number(v) for k, v in row.items() if k not in fixed and not k.startswith("median_")}
        stats.update({k: number(v) for k, v in row.items() if k in ("median_low", "median_high")})
        return cls(
            concept=row["concept"],
            method=row["method"],
            layer=int(float(row["layer"])),
            strategy=row["strategy"],
            alpha=number(row["alpha"]),
            n=int(number(row["n"])),
            attribute=row["attribute"],
            medians=medians,
            median_clap_score=number(clap) if clap is not None else None,
            quality={k: number(row[k]) for k in QUALITY_COLUMNS if k in row},
            stats=stats,
        )


def read_alpha_rows(path: str | Path) -> list[AlphaRow]:
    """The rows of a ``per_alpha.csv``."""
    with Path(path).open(newline="") as f:
        return [AlphaRow.from_row(row) for row in csv.DictReader(f)]


@dataclass
class SummaryRow:
    """One group's steerability (see :mod:`steerlit.study.tables`): the ``summary.csv`` row.

    ``cross``: other attribute -> relative change of its median at the largest α (the ``cross_<attribute>``
    columns); ``stats``: the newer columns (uncertainty, random control, perturbation size, the α each is read
    at; see :mod:`steerlit.study.tables`), after every older column."""

    concept: str
    method: str
    layer: int
    strategy: str
    attribute: str
    base: float
    slope_per_alpha: float
    spearman: float
    alpha_max: float
    rel_change_max: float
    alpha_min: float
    rel_change_min: float
    quality_cost: float
    cross: dict[str, float] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)

    SCALARS = ("slope_per_alpha", "spearman", "rel_change_max", "rel_change_min", "quality_cost")

    @property
    def group(self) -> GroupKey:
        return (self.concept, self.method, self.layer, self.strategy)

    def to_row(self) -> dict[str, Any]:
        """The ``summary.csv`` row."""
        row = {
            c: getattr(self, c)
            for c in (
                *GROUP_COLUMNS,
                "attribute",
                "base",
                "slope_per_alpha",
                "spearman",
                "alpha_max",
                "rel_change_max",
                "alpha_min",
                "rel_change_min",
                "quality_cost",
            )
        }
        row.update({f"cross_{name}": value for name, value in self.cross.items()})
        row.update(self.stats)
        return row
