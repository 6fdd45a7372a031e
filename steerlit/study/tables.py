"""From grid records to what a researcher reads: per-α tables, steerability summary, plots.

A *group* is one (concept, method, layer, strategy) sweep over α. Its α = 0 point is the set of
unsteered reference rows with the same prompts and seeds. For each group:

* ``slope``: least-squares change of the target attribute per unit α (all rows);
* ``spearman``: Spearman correlation of the per-α medians with α (monotonic response);
* ``rel_change_max`` / ``rel_change_min``: relative change of the median at the largest / smallest α
  against α = 0 (e.g. +0.3 = 30 % faster);
* ``quality_cost``: the kernel distance ``kad`` (``metrics.quality=kad``; below its ``kad_noise_floor`` it is not
  distinguishable from α = 0) or the DSP-feature Fréchet distance (``frechet``; 0 = indistinguishable feature
  statistics) between the steered set at the largest |α| and the references. In ``per_alpha.csv`` the α = 0 row has
  ``kad`` empty (nan: the set is not compared with itself) beside the group's noise floor, and ``dsp_frechet`` 0;
* ``cross_<attr>``: relative change of the *other* concept's attribute at the largest α.

Newer columns, after those (see :mod:`steerlit.study.summary_stats` for the per-α ones; intervals are seeded 95 %
bootstraps over clips):

* ``n_clips`` (all α), ``n_alpha0`` (reference clips);
* ``spearman_clips`` / ``slope_clips`` (+ ``_low``, ``_high``, ``_n``) and ``spearman_p``: clip-level Spearman ρ and
  Theil-Sen slope per unit α, intervals resampling whole (prompt, seed) groups, ρ's permutation p-value;
* ``delta_at_max`` / ``delta_at_min`` (+ interval, n): mean paired change against the α = 0 twins at ``alpha_max`` /
  ``alpha_min``; ``octave_ratio_at_max`` / ``_at_min`` (tempo): median octave-folded BPM ratio to the twin;
* ``effect_vs_random_at_max`` / ``_at_min``: mean paired difference to the random-direction control (same α, layer,
  strategy, prompt and seed): the effect beyond a random direction of the same norm;
* ``perturbation_per_alpha`` / ``_at_max`` / ``_at_min``: ‖α·v‖ / mean ‖h‖ at the source layer, at α = 1 / at
  ``alpha_max`` / ``alpha_min`` (added by :mod:`steerlit.study.perturbation`, which needs the directions);
* ``quality_at_alpha``: the α ``quality_cost`` (and the ``kad`` columns) is read at; ``cross_at_alpha``: the α of
  the ``cross_*`` columns.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from steerlit.engines.runner import DEGENERATE
from steerlit.files import atomic_save_figure
from steerlit.study.records import AlphaRow, GridResult, GroupKey, SummaryRow
from steerlit.study.summary_stats import RANDOM_METHOD, Clip, alpha_stats, clip_trend, read_at

DEFAULT_ATTRIBUTES = {"tempo": "bpm", "timbre": "centroid_hz"}
QualityFn = Callable[[Sequence[GridResult], Sequence[GridResult]], dict[str, float]]


def attribute_for(concept: str, overrides: Mapping[str, str] | None = None) -> str:
    """The attribute that measures a concept: config override, else by name (``*tempo*`` → bpm)."""
    if overrides and concept in overrides:
        return overrides[concept]
    for key, attr in DEFAULT_ATTRIBUTES.items():
        if key in concept:
            return attr
    raise ValueError(
        f"No attribute known for concept {concept!r}; set metrics.attributes.{concept}=<attribute>."
    )


def _median(values: Iterable[float | None]) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.median(vals)) if vals else float("nan")


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho of ``y`` against ``x`` over the pairs whose ``y`` is not nan (nan if < 3)."""
    from scipy.stats import spearmanr

    pairs = [(a, b) for a, b in zip(x, y) if not math.isnan(b)]
    if len(pairs) < 3:
        return float("nan")
    rho = spearmanr([p[0] for p in pairs], [p[1] for p in pairs]).statistic
    return float(rho)


def relative_change(value: float, base: float) -> float:
    """``(value - base) / |base|``; nan when the base is 0 or nan."""
    return (value - base) / abs(base) if base and not math.isnan(base) else float("nan")


def group_results(results: Sequence[GridResult]) -> dict[GroupKey, dict[float, list[GridResult]]]:
    """``{(concept, method, layer, strategy): {alpha: [results]}}`` with the references at α = 0."""
    refs = [r for r in results if r.is_reference]
    groups: dict[GroupKey, dict[float, list[GridResult]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        if r.is_single_term:
            groups[r.group][float(r.alpha)].append(r)
    for g in groups.values():
        pairs = {(r.prompt, r.seed) for rows in g.values() for r in rows}
        g[0.0].extend(r for r in refs if (r.prompt, r.seed) in pairs)
    return {k: dict(sorted(v.items())) for k, v in groups.items()}


def _clips(rows: Sequence[GridResult], name: str) -> list[Clip]:
    def number(value) -> float:
        return float(value) if value is not None else math.nan

    return [((r.prompt, r.seed), number(r.value(name))) for r in rows]


def usable(results: Sequence[GridResult]) -> list[GridResult]:
    """The results the tables use: rows flagged ``degenerate`` (non-finite or constant output) are left out."""
    return [r for r in results if not r.measures.get(DEGENERATE)]


def per_alpha_table(
    results: Sequence[GridResult], attributes: Mapping[str, str], quality_fn: QualityFn | None = None
) -> list[AlphaRow]:
    """One row per group and α: counts, medians of every measured attribute, quality vs references, and the
    uncertainty columns of :func:`~steerlit.study.summary_stats.alpha_stats` (random control: the ``random``
    group of the same concept, layer and strategy). Degenerate rows are left out (:func:`usable`)."""
    names = sorted(set(attributes.values()))
    grouped = group_results(usable(results))
    out = []
    for key, by_alpha in grouped.items():
        attr = attributes.get(key[0], "")
        refs = by_alpha.get(0.0, [])
        twins = _clips(refs, attr)
        control = grouped.get((key[0], RANDOM_METHOD, key[2], key[3])) if key[1] != RANDOM_METHOD else None
        for alpha, rows in by_alpha.items():
            row = AlphaRow(*key, alpha=alpha, n=len(rows), attribute=attr)
            row.medians = {name: _median(r.value(name) for r in rows) for name in names}
            if rows[0].clap_score is not None:
                row.median_clap_score = _median(r.clap_score for r in rows)
            if quality_fn is not None and alpha != 0.0:
                row.quality = quality_fn(rows, refs)
            clips = _clips(rows, attr)
            random_twins = _clips(control.get(alpha, []), attr) if control else None
            row.stats = alpha_stats(attr, clips, twins, random_twins)
            row.clips = [(alpha, k, v) for k, v in clips]
            out.append(row)
    return fill_reference_quality(out) if quality_fn is not None else out


FRECHET_KEYS = ("dsp_frechet", "clap_fad")  # a set's Fréchet distance to itself is 0 by definition
REFERENCE_KEYS = ("kad_noise_floor",)  # properties of the α = 0 set, the same in every row of a group


def reference_quality(steered: Sequence[Mapping[str, float]], n_reference: int) -> dict[str, float]:
    """The α = 0 row's quality, from the quality columns of its group's steered rows: the Fréchet columns 0, the
    kernel distance ``kad`` nan (a set is not compared with itself), its noise floor (the α = 0 set's halves, the
    same at every α) and ``kad_n`` = the references' n."""
    keys = list(dict.fromkeys(k for q in steered for k in q))
    out: dict[str, float] = {}
    for key in keys:
        if key in FRECHET_KEYS:
            out[key] = 0.0
        elif key in REFERENCE_KEYS:
            out[key] = next((q[key] for q in steered if key in q), math.nan)
        elif key == "kad_n":
            out[key] = n_reference
        else:
            out[key] = math.nan
    return out


def fill_reference_quality(table: list[AlphaRow]) -> list[AlphaRow]:
    """Each group's α = 0 row gets :func:`reference_quality` of the group's other rows (in place; returned)."""
    by_group: dict[GroupKey, list[AlphaRow]] = defaultdict(list)
    for row in table:
        by_group[row.group].append(row)
    for rows in by_group.values():
        steered = [r.quality for r in rows if r.alpha != 0.0]
        for row in rows:
            if row.alpha == 0.0:
                row.quality = reference_quality(steered, row.n)
    return table


def summarize(table: Sequence[AlphaRow], attributes: Mapping[str, str]) -> list[SummaryRow]:
    """Steerability per group from :func:`per_alpha_table` rows (see module doc)."""
    by_group: dict[GroupKey, list[AlphaRow]] = defaultdict(list)
    for row in table:
        by_group[row.group].append(row)
    return [_group_summary(key, rows, attributes) for key, rows in by_group.items()]


def _group_summary(key: GroupKey, rows: list[AlphaRow], attributes: Mapping[str, str]) -> SummaryRow:
    rows = sorted(rows, key=lambda r: r.alpha)
    attr = attributes[key[0]]
    alphas = [r.alpha for r in rows]
    med = [r.median(attr) for r in rows]
    base = next((r.median(attr) for r in rows if r.alpha == 0.0), float("nan"))
    ok = [(a, m) for a, m in zip(alphas, med) if not math.isnan(m)]
    slope = float(np.polyfit([a for a, _ in ok], [m for _, m in ok], 1)[0]) if len(ok) >= 2 else float("nan")
    top = max(rows, key=lambda r: r.alpha)
    low = min(rows, key=lambda r: r.alpha)
    far = max(rows, key=lambda r: abs(r.alpha))
    cross = {}
    for other in sorted(set(attributes.values()) - {attr}):
        other_base = next((r.median(other) for r in rows if r.alpha == 0.0), float("nan"))
        cross[other] = relative_change(top.median(other), other_base)
    return SummaryRow(
        *key,
        attribute=attr,
        base=base,
        slope_per_alpha=slope,
        spearman=spearman(alphas, med),
        alpha_max=top.alpha,
        rel_change_max=relative_change(top.median(attr), base),
        alpha_min=low.alpha,
        rel_change_min=relative_change(low.median(attr), base),
        quality_cost=_quality_cost(far.quality),
        cross=cross,
        stats=_summary_stats(rows, top, low, far),
    )


def _quality_cost(quality: Mapping[str, float]) -> float:
    """The summary's quality number: KAD when measured, else the DSP Fréchet distance."""
    return quality.get("kad", quality.get("dsp_frechet", float("nan")))


def _summary_stats(rows: list[AlphaRow], top: AlphaRow, low: AlphaRow, far: AlphaRow) -> dict[str, float]:
    """The newer summary columns (module doc), each saying or implying the α it is read at."""
    base = next((r for r in rows if r.alpha == 0.0), None)
    out: dict[str, float] = {"n_clips": sum(r.n for r in rows), "n_alpha0": base.n if base else 0}
    out.update(clip_trend([clip for r in rows for clip in r.clips]))
    for prefix in ("delta", "octave_ratio", "effect_vs_random"):
        out.update(read_at(top.stats, prefix, "max"))
        out.update(read_at(low.stats, prefix, "min"))
    out["quality_at_alpha"] = far.alpha
    out.update({k: v for k, v in far.quality.items() if k.startswith("kad")})
    out["cross_at_alpha"] = top.alpha
    return out


def plot_attribute_vs_alpha(table: Sequence[AlphaRow], summary: Sequence[SummaryRow], path: Path) -> Path:
    """One panel per concept: median target attribute vs α, one line per method/layer/strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    concepts = sorted({r.concept for r in table})
    fig, axes = plt.subplots(1, max(1, len(concepts)), figsize=(6 * max(1, len(concepts)), 4), squeeze=False)
    slopes = {s.group: s.slope_per_alpha for s in summary}
    for ax, concept in zip(axes[0], concepts):
        rows = [r for r in table if r.concept == concept]
        attr = rows[0].attribute
        for key in sorted({r.group for r in rows}, key=str):
            pts = sorted((r for r in rows if r.group == key), key=lambda r: r.alpha)
            alphas = [r.alpha for r in pts]
            n = sorted({r.n for r in pts})
            n_text = f"n={n[0]}" if len(n) == 1 else f"n={n[0]}-{n[-1]}"
            label = (
                f"{key[1]} L{key[2]} {key[3]} (slope {slopes.get(key, float('nan')):.3g}/α, {n_text} per α)"
            )
            (line,) = ax.plot(alphas, [r.median(attr) for r in pts], marker="o", label=label)
            low = [r.stats.get("median_low", math.nan) for r in pts]
            high = [r.stats.get("median_high", math.nan) for r in pts]
            ax.fill_between(alphas, low, high, color=line.get_color(), alpha=0.15, lw=0)
        ax.axvline(0, color="0.7", lw=0.8)
        ax.set(title=f"{concept}: median {attr} vs α (band: 95 % bootstrap CI)", xlabel="α", ylabel=attr)
        ax.legend(fontsize=7)
    atomic_save_figure(fig, path)
    return path


SUMMARY_COLUMNS = (
    "concept",
    "method",
    "layer",
    "strategy",
    "attribute",
    "base",
    "slope_per_alpha",
    "spearman",
    "rel_change_min",
    "rel_change_max",
    "quality_cost",
    "quality_at_alpha",
    "n_clips",
    "spearman_p",
    "effect_vs_random_at_max",
    "perturbation_per_alpha",
)


def format_summary(summary: Sequence[SummaryRow]) -> str:
    """A plain-text table for the terminal."""
    rows = [s.to_row() for s in summary]
    cross = sorted({k for r in rows for k in r if k.startswith("cross_")})
    cols = [*SUMMARY_COLUMNS, *cross]

    def fmt(v):
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.3g}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)
