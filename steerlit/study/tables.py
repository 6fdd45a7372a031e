"""From grid records to what a researcher reads: per-α tables, steerability summary, plots.

A *group* is one (concept, method, layer, strategy) sweep over α. Its α = 0 point is the set of
unsteered reference rows with the same prompts and seeds. For each group:

* ``slope``: least-squares change of the target attribute per unit α (all rows);
* ``spearman``: Spearman correlation of the per-α medians with α (monotonic response);
* ``rel_change_max`` / ``rel_change_min``: relative change of the median at the largest / smallest α
  against α = 0 (e.g. +0.3 = 30 % faster);
* ``quality_cost``: DSP-feature Fréchet distance between the steered set at the largest |α| and the
  references (0 = indistinguishable feature statistics);
* ``cross_<attr>``: relative change of the *other* concept's attribute at the largest α.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

DEFAULT_ATTRIBUTES = {"tempo": "bpm", "timbre": "centroid_hz"}
GROUP_KEYS = ("concept", "method", "layer", "strategy")


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


def _median(values) -> float:
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


def group_records(records: Sequence[Mapping]) -> dict[tuple, dict[float, list[Mapping]]]:
    """``{(concept, method, layer, strategy): {alpha: [records]}}`` with the references at α = 0."""
    refs = [r for r in records if not r.get("n_terms")]
    groups: dict[tuple, dict[float, list]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.get("n_terms") == 1:
            groups[tuple(r[k] for k in GROUP_KEYS)][float(r["alpha"])].append(r)
    for g in groups.values():
        pairs = {(r["prompt"], r["seed"]) for rows in g.values() for r in rows}
        g[0.0].extend(r for r in refs if (r["prompt"], r["seed"]) in pairs)
    return {k: dict(sorted(v.items())) for k, v in groups.items()}


def per_alpha_table(records, attributes: Mapping[str, str], quality_fn: Callable | None = None) -> list[dict]:
    """One row per group and α: counts, medians of every measured attribute, quality vs references."""
    names = sorted(set(attributes.values()))
    out = []
    for key, by_alpha in group_records(records).items():
        refs = by_alpha.get(0.0, [])
        for alpha, rows in by_alpha.items():
            row = dict(zip(GROUP_KEYS, key), alpha=alpha, n=len(rows))
            row["attribute"] = attributes.get(key[0], "")
            for name in names:
                row[f"median_{name}"] = _median(r.get(name) for r in rows)
            if "clap_score" in rows[0]:
                row["median_clap_score"] = _median(r.get("clap_score") for r in rows)
            if quality_fn is not None:
                row.update({"dsp_frechet": 0.0} if alpha == 0.0 else quality_fn(rows, refs))
            out.append(row)
    return out


def summarize(table: Sequence[Mapping], attributes: Mapping[str, str]) -> list[dict]:
    """Steerability per group from :func:`per_alpha_table` rows (see module doc)."""
    by_group: dict[tuple, list[Mapping]] = defaultdict(list)
    for row in table:
        by_group[tuple(row[k] for k in GROUP_KEYS)].append(row)
    out = []
    for key, rows in by_group.items():
        rows = sorted(rows, key=lambda r: r["alpha"])
        attr = attributes[key[0]]
        alphas = [r["alpha"] for r in rows]
        med = [r[f"median_{attr}"] for r in rows]
        base = next((r[f"median_{attr}"] for r in rows if r["alpha"] == 0.0), float("nan"))
        ok = [(a, m) for a, m in zip(alphas, med) if not math.isnan(m)]
        slope = (
            float(np.polyfit([a for a, _ in ok], [m for _, m in ok], 1)[0]) if len(ok) >= 2 else float("nan")
        )
        top = max(rows, key=lambda r: r["alpha"])
        low = min(rows, key=lambda r: r["alpha"])
        far = max(rows, key=lambda r: abs(r["alpha"]))
        summary = dict(
            zip(GROUP_KEYS, key),
            attribute=attr,
            base=base,
            slope_per_alpha=slope,
            spearman=spearman(alphas, med),
            alpha_max=top["alpha"],
            rel_change_max=relative_change(top[f"median_{attr}"], base),
            alpha_min=low["alpha"],
            rel_change_min=relative_change(low[f"median_{attr}"], base),
            quality_cost=far.get("dsp_frechet", float("nan")),
        )
        for other in sorted(set(attributes.values()) - {attr}):
            other_base = next((r[f"median_{other}"] for r in rows if r["alpha"] == 0.0), float("nan"))
            summary[f"cross_{other}"] = relative_change(top[f"median_{other}"], other_base)
        out.append(summary)
    return out


def plot_attribute_vs_alpha(table: Sequence[Mapping], summary: Sequence[Mapping], path: Path) -> Path:
    """One panel per concept: median target attribute vs α, one line per method/layer/strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    concepts = sorted({r["concept"] for r in table})
    fig, axes = plt.subplots(1, max(1, len(concepts)), figsize=(6 * max(1, len(concepts)), 4), squeeze=False)
    slopes = {tuple(s[k] for k in GROUP_KEYS): s["slope_per_alpha"] for s in summary}
    for ax, concept in zip(axes[0], concepts):
        rows = [r for r in table if r["concept"] == concept]
        attr = rows[0]["attribute"]
        for key in sorted({tuple(r[k] for k in GROUP_KEYS) for r in rows}, key=str):
            pts = sorted(
                (r["alpha"], r[f"median_{attr}"]) for r in rows if tuple(r[k] for k in GROUP_KEYS) == key
            )
            label = f"{key[1]} L{key[2]} {key[3]} (slope {slopes.get(key, float('nan')):.3g}/α)"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        ax.axvline(0, color="0.7", lw=0.8)
        ax.set(title=f"{concept}: median {attr} vs α", xlabel="α", ylabel=attr)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_summary(summary: Sequence[Mapping]) -> str:
    """A plain-text table for the terminal."""
    cols = [
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
    ]
    cross = sorted({k for s in summary for k in s if k.startswith("cross_")})
    cols += cross

    def fmt(v):
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.3g}"
        return str(v)

    rows = [[fmt(s.get(c, "")) for c in cols] for s in summary]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)
