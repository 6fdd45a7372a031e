"""One joined per-layer table and plot: how well each direction separates the poles, beside what steering with it
does and costs.

One row per steered (concept, method, layer, strategy) group of the final grid (``layer_comparison.csv`` in the
run folder, one ``plots/layer_comparison_<concept>.png`` per concept; :class:`~steerlit.study.layout.RunLayout`):

* agreement, on the concept's held-out probe prompts (the ``test`` split of its activation cache, ``val`` when
  that lacks a pole; ``split``, ``n_pos``, ``n_neg``), of the direction's projection ``x · v`` at the source site:
  ``auroc`` (+ ``_low``, ``_high``) and Cohen's ``separation_d`` (+ ``_low``, ``_high``), each with a 95 %
  bootstrap interval (2000 replicates, seed 0, resampling each pole's prompts separately); ``cos_diffmean``: the
  cosine of the direction with the difference of means at the same site (1 for diffmean itself);
* steering, from the summary: ``slope`` (+ ``_low``, ``_high``, ``_n``), the clip-level Theil-Sen change of the
  target ``attribute`` per unit α, in the attribute's units (BPM or Hz per α), with its interval;
  ``effect_vs_random_at_max`` and ``perturbation_per_alpha`` (‖v‖ / mean ‖h‖);
* quality, from the summary: ``quality_cost`` read at ``quality_at_alpha`` and, with ``metrics.quality=kad``, its
  ``kad_noise_floor``.

No number is clipped or thresholded, so none saturates by construction: the AUROC is not folded to ≥ 0.5 by a
fitted polarity, and Cohen's d is unbounded. Signs follow one convention for every method: a positive AUROC - 0.5,
``separation_d`` or ``slope`` means towards the positive pole (the pole with label 1: fast, bright; its prompts
project higher, and +α raises the attribute that measures it). A random direction sits near AUROC 0.5, d 0, slope 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from steerlit.directions.cache import CacheError, labels_of, load_activation_cache
from steerlit.directions.fit import EVAL_SPLIT
from steerlit.files import atomic_save_figure, atomic_write_csv
from steerlit.study.layout import RunLayout
from steerlit.study.perturbation import Directions, group_sites
from steerlit.study.records import GridResult, GroupKey, SummaryRow
from steerlit.study.summary_stats import LEVEL, N_BOOT, SEED

REFERENCE_METHOD = "diffmean"
HeldOut = tuple[Mapping[str, torch.Tensor], np.ndarray, str]  # ({site: (n, H)}, labels (n,), split name)
SEPARATION = ("auroc", "auroc_low", "auroc_high", "separation_d", "separation_d_low", "separation_d_high")
COLUMNS = (
    "concept",
    "layer",
    "method",
    "strategy",
    "site",
    "attribute",
    "split",
    "n_pos",
    "n_neg",
    *SEPARATION,
    "cos_diffmean",
    "slope",
    "slope_low",
    "slope_high",
    "slope_n",
    "effect_vs_random_at_max",
    "perturbation_per_alpha",
    "quality_cost",
    "quality_at_alpha",
    "kad_noise_floor",
)


def held_out(concept_dir: Path) -> HeldOut | None:
    """The held-out activations of a concept's cache with both poles (``test``, else ``val``); None without."""
    for split in (EVAL_SPLIT, "val"):
        try:
            acts, meta = load_activation_cache(concept_dir, split=split)
        except CacheError:
            continue
        labels = labels_of(meta).numpy()
        if 0 < labels.sum() < labels.size:
            return acts, labels, split
    return None


def auroc_rows(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Row-wise AUROC of scores ``pos`` ``(B, p)`` above ``neg`` ``(B, q)``: P(pos > neg) + ½ P(tie), ``(B,)``."""
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    p, q = pos.shape[1], neg.shape[1]
    return (ranks[:, :p].sum(axis=1) - p * (p + 1) / 2) / (p * q)


def cohens_d_rows(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Row-wise (mean pos - mean neg) / pooled std, ``(B,)``; nan with fewer than 2 scores per pole."""
    p, q = pos.shape[1], neg.shape[1]
    if p < 2 or q < 2:
        return np.full(pos.shape[0], math.nan)
    pooled = ((p - 1) * pos.var(axis=1, ddof=1) + (q - 1) * neg.var(axis=1, ddof=1)) / (p + q - 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (pos.mean(axis=1) - neg.mean(axis=1)) / np.sqrt(pooled)


def separation(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """``auroc`` and ``separation_d`` of ``scores`` (n,) by ``labels`` (n,) (1 = positive pole), with intervals
    from a stratified bootstrap (each pole resampled within itself)."""
    pos, neg = scores[labels == 1][None], scores[labels == 0][None]
    rng = np.random.default_rng(SEED)
    pos_b = pos[0][rng.integers(0, pos.shape[1], (N_BOOT, pos.shape[1]))]
    neg_b = neg[0][rng.integers(0, neg.shape[1], (N_BOOT, neg.shape[1]))]
    q = ((1 - LEVEL) / 2, (1 + LEVEL) / 2)
    out: dict[str, float] = {}
    for name, fn in (("auroc", auroc_rows), ("separation_d", cohens_d_rows)):
        boot = fn(pos_b, neg_b)
        boot = boot[np.isfinite(boot)]
        low, high = np.quantile(boot, q) if boot.size else (math.nan, math.nan)
        out.update({name: float(fn(pos, neg)[0]), f"{name}_low": float(low), f"{name}_high": float(high)})
    return out


def agreement(directions, method: str, site: str, data: HeldOut | None) -> dict[str, float]:
    """The agreement columns of one direction (nan where the cache or the site is missing)."""
    vectors = directions.vectors
    out: dict[str, float] = {k: math.nan for k in (*SEPARATION, "cos_diffmean")}
    reference = vectors.get((REFERENCE_METHOD, site))
    v = vectors.get((method, site))
    if v is None:
        return out
    if reference is not None:
        out["cos_diffmean"] = float(
            torch.nn.functional.cosine_similarity(v.double(), reference.double(), dim=0)
        )
    if data is not None and site in data[0]:
        acts, labels, split = data
        scores = (acts[site].double() @ v.double()).numpy()
        out.update(separation(scores, labels))
        out.update(split=split, n_pos=int(labels.sum()), n_neg=int(labels.size - labels.sum()))
    return out


def steering_columns(row: SummaryRow) -> dict[str, float]:
    """The steering and quality columns of one summary row."""
    stats = row.stats
    slope = {k: stats.get(f"slope_clips{k}", math.nan) for k in ("", "_low", "_high", "_n")}
    return {
        **{f"slope{k}": v for k, v in slope.items()},
        "effect_vs_random_at_max": stats.get("effect_vs_random_at_max", math.nan),
        "perturbation_per_alpha": stats.get("perturbation_per_alpha", math.nan),
        "quality_cost": row.quality_cost,
        "quality_at_alpha": stats.get("quality_at_alpha", math.nan),
        "kad_noise_floor": stats.get("kad_noise_floor", math.nan),
    }


def layer_comparison_rows(
    layout: RunLayout, summary: Sequence[SummaryRow], results: Sequence[GridResult], directions: Directions
) -> list[dict]:
    """The joined rows (:data:`COLUMNS`), sorted by concept, layer, method and strategy."""
    sites: dict[GroupKey, tuple[str, str]] = group_sites(results)
    cache: dict[str, HeldOut | None] = {}
    rows = []
    for s in summary:
        if s.concept not in directions or s.group not in sites:
            continue
        if s.concept not in cache:
            cache[s.concept] = held_out(layout.concept(s.concept))
        site = sites[s.group][0]
        row = {"concept": s.concept, "layer": s.layer, "method": s.method, "strategy": s.strategy}
        row.update(site=site, attribute=s.attribute, split="", n_pos=0, n_neg=0)
        row.update(agreement(directions[s.concept], s.method, site, cache[s.concept]))
        rows.append({**row, **steering_columns(s)})
    return sorted(rows, key=lambda r: (r["concept"], r["layer"], r["method"], r["strategy"]))


def error_bars(ax, rows: Sequence[Mapping], key: str, label: str, offset: float) -> None:
    """One method/strategy's ``key`` vs layer with its interval as error bars (nan intervals drawn without)."""
    x = np.asarray([r["layer"] for r in rows], dtype=float) + offset
    y = np.asarray([r[key] for r in rows], dtype=float)
    low = np.asarray([r.get(f"{key}_low", math.nan) for r in rows], dtype=float)
    high = np.asarray([r.get(f"{key}_high", math.nan) for r in rows], dtype=float)
    err = np.nan_to_num(np.stack([y - low, high - y]), nan=0.0).clip(min=0.0)
    ax.errorbar(x, y, yerr=err, marker="o", ms=4, capsize=3, label=label)


def plot_concept(rows: Sequence[Mapping], path: Path, concept: str) -> Path:
    """Four panels vs layer: held-out AUROC, Cohen's d, steering slope (each with its 95 % interval), quality."""
    import matplotlib  # deferred: matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 3.8))
    methods = sorted({r["method"] for r in rows})
    for i, method in enumerate(methods):
        first = sorted(
            {r["layer"]: r for r in rows if r["method"] == method}.values(), key=lambda r: r["layer"]
        )
        n = f"n={first[0]['n_pos']}+{first[0]['n_neg']}" if first and first[0]["n_pos"] else "no held-out"
        error_bars(axes[0], first, "auroc", f"{method} ({n})", 0.05 * i)
        error_bars(axes[1], first, "separation_d", method, 0.05 * i)
    groups = sorted({(r["method"], r["strategy"]) for r in rows})
    for i, (method, strategy) in enumerate(groups):
        pts = sorted(
            (r for r in rows if (r["method"], r["strategy"]) == (method, strategy)), key=lambda r: r["layer"]
        )
        label = f"{method} {strategy} (n={int(np.nanmax([r['slope_n'] for r in pts] + [0]))} clips)"
        error_bars(axes[2], pts, "slope", label, 0.05 * i)
        axes[3].plot([r["layer"] for r in pts], [r["quality_cost"] for r in pts], marker="o", label=label)
    floor = [(r["layer"], r["kad_noise_floor"]) for r in rows if not math.isnan(r["kad_noise_floor"])]
    if floor:
        axes[3].plot(
            *zip(*sorted(set(floor))), "k--", marker="_", ms=16, lw=1, label="noise floor (α = 0 halves)"
        )
    attribute, alpha = rows[0]["attribute"], rows[0]["quality_at_alpha"]
    titles = (
        "held-out AUROC (0.5 = chance)",
        "held-out Cohen's d",
        f"steering slope ({attribute} per α)",
        f"quality cost at α = {alpha:g}",
    )
    for ax, title, ref in zip(axes, titles, (0.5, 0.0, 0.0, None)):
        if ref is not None:
            ax.axhline(ref, color="0.6", lw=0.8)
        ax.set(title=title, xlabel="layer", xticks=sorted({r["layer"] for r in rows}))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"{concept}: agreement (95 % bootstrap CI) vs steering and quality; + = towards the positive pole"
    )
    atomic_save_figure(fig, path)
    return path


def write_layer_comparison(layout: RunLayout, rows: Sequence[Mapping]) -> list[Path]:
    """``layer_comparison.csv`` and one PNG per concept (:class:`RunLayout` paths); returns the PNGs."""
    atomic_write_csv(layout.layer_comparison_csv, [{k: r[k] for k in COLUMNS} for r in rows], COLUMNS)
    return [
        plot_concept([r for r in rows if r["concept"] == c], layout.layer_comparison_plot(c), c)
        for c in sorted({r["concept"] for r in rows})
    ]
