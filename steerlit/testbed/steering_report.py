"""The steering part of the testbed's acceptance, read from a finished ``steerlit run`` folder.

    python -m steerlit.testbed.evaluate --study runs/<run>      # after `steerlit run experiment=testbed_study`

For every (concept, method, layer, strategy) group of the run's ``per_alpha.csv`` (written by the study's
evaluation; read as :class:`~steerlit.study.records.AlphaRow` records) it reports:

* ``spearman``: rank correlation of the median target attribute (BPM for tempo, spectral centroid for
  timbre) with α over all α of the grid (target >= 0.9 over >= 7 α values);
* ``best_alpha`` / ``best_rel_change``: the α whose median moves furthest from α = 0 *in the
  direction of the concept's positive pole times sign(α)*, and that relative change (target >= 30%),
  with, at that α, the clips' ``n_clips``, the median's 95 % interval as ``change_low`` / ``change_high``, the
  paired change beyond the random-direction control ``vs_random`` (+ ``_low``, ``_high``; relative to the α = 0
  median) and the quality cost (``quality_cost``: ``kad`` beside its ``quality_noise_floor``, or ``dsp_frechet``,
  as ``quality_kind`` says);
* ``cross_rel_change``: the relative change of the *other* attribute at the same α (tempo direction
  on centroid, timbre direction on BPM);
* ``monotone_from`` / ``monotone_to`` / ``monotone_n``: the widest run of consecutive α values around
  α = 0 along which the median rises strictly (where the direction acts as a dial before generation
  breaks down);
* ``passes``: both targets met.

The reports are plain dicts: they are what ``eval.json`` holds and the model card reads back.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from steerlit.study.layout import RunLayout
from steerlit.study.records import GROUP_COLUMNS, AlphaRow, read_alpha_rows
from steerlit.study.summary_stats import RANDOM_METHOD
from steerlit.study.tables import relative_change, spearman

GROUP = GROUP_COLUMNS
MIN_ALPHAS = 7
SPEARMAN_TARGET = 0.9
CHANGE_TARGET = 0.30


def read_per_alpha(run_dir: str | Path) -> list[AlphaRow]:
    """The rows of a finished run's ``per_alpha.csv``."""
    path = RunLayout(Path(run_dir)).per_alpha_csv
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: pass the folder of a finished `steerlit run` (it holds per_alpha.csv), "
            "e.g. the one printed by `steerlit run experiment=testbed_study`"
        )
    return read_alpha_rows(path)


def monotone_run(alphas: list[float], medians: list[float]) -> tuple[float, float, int]:
    """(first α, last α, count) of the widest run of consecutive α (sorted) containing α = 0 along
    which ``medians`` rise strictly; (nan, nan, 0) without α = 0."""
    if 0.0 not in alphas:
        return float("nan"), float("nan"), 0
    lo = hi = alphas.index(0.0)
    while lo > 0 and medians[lo - 1] < medians[lo]:
        lo -= 1
    while hi < len(alphas) - 1 and medians[hi + 1] > medians[hi]:
        hi += 1
    return alphas[lo], alphas[hi], hi - lo + 1


def best_alpha_columns(best: AlphaRow, base: float) -> dict:
    """What the study measured at the best α: n, the median's 95 % interval and the effect beyond the random
    control (mean paired difference, with its interval), both relative to the α = 0 median ``base``, and the
    quality (``kad`` with its noise floor, else ``dsp_frechet``)."""
    nan = float("nan")
    out = {"n_clips": best.n, "quality_kind": "kad" if "kad" in best.quality else "dsp_frechet"}
    out["quality_cost"] = best.quality.get("kad", best.quality.get("dsp_frechet", nan))
    out["quality_noise_floor"] = best.quality.get("kad_noise_floor", nan)
    for side in ("low", "high"):
        out[f"change_{side}"] = relative_change(best.stats.get(f"median_{side}", nan), base)
    scale = abs(base) if base and not math.isnan(base) else nan
    for tail in ("", "_low", "_high"):
        out[f"vs_random{tail}"] = best.stats.get(f"effect_vs_random{tail}", nan) / scale
    return out


def group_report(rows: list[AlphaRow]) -> dict:
    """The acceptance numbers of one group (rows of one concept/method/layer/strategy)."""
    rows = sorted(rows, key=lambda r: r.alpha)
    attr = rows[0].attribute
    others = [name for name in rows[0].measured if name != attr]
    ref = next((r for r in rows if r.alpha == 0.0), None)
    alphas = [r.alpha for r in rows]
    medians = [r.median(attr) for r in rows]
    out = dict(zip(GROUP, rows[0].group), attribute=attr, n_alphas=len(rows))
    out["spearman"] = spearman(alphas, medians)
    out["monotone_from"], out["monotone_to"], out["monotone_n"] = monotone_run(alphas, medians)
    out["base"] = ref.median(attr) if ref else float("nan")
    # Signed change: positive when the attribute moves the way sign(α) asks.
    scored = [
        (math.copysign(1.0, r.alpha) * relative_change(r.median(attr), out["base"]), r)
        for r in rows
        if r.alpha != 0.0 and not math.isnan(r.median(attr))
    ]
    if scored and ref is not None:
        # ties (e.g. +-x% at +-alpha) go to the larger alpha, so the pick never hangs on rounding
        _, best = max(scored, key=lambda s: (-math.inf if math.isnan(s[0]) else s[0], s[1].alpha))
        out["best_alpha"] = best.alpha
        out["best_rel_change"] = relative_change(best.median(attr), out["base"])
        out.update(best_alpha_columns(best, out["base"]))
        for other in others:
            out[f"cross_rel_change_{other}"] = relative_change(best.median(other), ref.median(other))
    enough = out["n_alphas"] >= MIN_ALPHAS and min(alphas) < 0 < max(alphas)
    out["passes"] = bool(
        enough
        and out["spearman"] >= SPEARMAN_TARGET
        and abs(out.get("best_rel_change", 0.0)) >= CHANGE_TARGET
    )
    return out


def steering_report(run_dir: str | Path) -> list[dict]:
    """One :func:`group_report` per group of the run, sorted by concept, method, layer, strategy."""
    groups: dict[tuple, list[AlphaRow]] = defaultdict(list)
    for row in read_per_alpha(run_dir):
        groups[row.group].append(row)
    return [group_report(groups[k]) for k in sorted(groups, key=str)]


def studies_report(run_dirs: list[str | Path]) -> dict:
    """``{"runs": [...], "groups": [...]}`` over several finished runs, e.g. the study and the same grid
    re-summarised with another attribute (``metrics.attributes.testbed_tempo=onset_rate``). A group
    (concept, method, layer, strategy, attribute) already reported by an earlier run is not repeated;
    each group names its ``run``."""
    seen, groups = set(), []
    for run in run_dirs:
        for g in steering_report(run):
            key = tuple(g[k] for k in (*GROUP, "attribute"))
            if key not in seen:
                seen.add(key)
                groups.append(dict(g, run=str(run)))
    return {"runs": [str(r) for r in run_dirs], "groups": groups}


def cross_change(group: dict) -> float:
    """The group's cross-effect (relative change of the other attribute at the best α), nan if none."""
    return next((v for k, v in group.items() if k.startswith("cross_rel_change_")), float("nan"))


def verdict(group: dict) -> str:
    """``yes`` / ``no``; a control's group that meets the targets says ``yes (control)``: a random direction
    moving the attribute as much is what the other groups are read against."""
    if group["method"] == RANDOM_METHOD:
        return "yes (control)" if group["passes"] else "no (control)"
    return "yes" if group["passes"] else "no"


def percent(value: float) -> str:
    """``+12%``; ``n/a`` for nan."""
    return "n/a" if math.isnan(value) else f"{value:+.0%}"


def format_report(report: list[dict]) -> str:
    """A plain-text table of :func:`steering_report`: per group the n per α, Spearman, the best α's change with
    its 95 % interval, the change beyond the random control (paired, relative to α = 0; its interval), the
    quality at that α beside its noise floor, the cross-effect and the verdict."""
    lines = [
        f"{'concept':<16}{'method':<10}{'layer':>5}  {'strategy':<11}{'attr':<12}{'#α':>3}{'n':>4}{'spearman':>9}"
        f"{'best α':>7}{'change':>8}{'[95% CI]':>16}{'vs random [95% CI]':>23}{'quality':>9}{'floor':>8}"
        f"{'cross':>7}  pass"
    ]
    for r in report:
        nan = float("nan")
        ci = f"[{percent(r.get('change_low', nan))}, {percent(r.get('change_high', nan))}]"
        vs = f"{percent(r.get('vs_random', nan))} [{percent(r.get('vs_random_low', nan))}, "
        vs += f"{percent(r.get('vs_random_high', nan))}]"
        lines.append(
            f"{r['concept']:<16}{r['method']:<10}{r['layer']:>5}  {r['strategy']:<11}{r['attribute']:<12}"
            f"{r['n_alphas']:>3}{r.get('n_clips', 0):>4}{r['spearman']:>9.2f}{r.get('best_alpha', nan):>7.2g}"
            f"{r.get('best_rel_change', nan):>+8.0%}{ci:>16}{vs:>23}{r.get('quality_cost', nan):>9.3g}"
            f"{r.get('quality_noise_floor', nan):>8.3g}{cross_change(r):>+7.0%}  {verdict(r)}"
        )
    return "\n".join(lines)
