"""The uncertainty columns of ``per_alpha.csv`` and ``summary.csv`` (computed with :mod:`steerlit.study.statistics`).

Every column is about the row's target ``attribute`` (bpm for tempo, centroid_hz for timbre), read at the row's α
(per-α table) or at the α a ``*_at_alpha`` column names (summary). Intervals are 95 % percentile bootstraps over
clips (2000 replicates, seed 0: deterministic); a clip's *twin* is the α = 0 reference clip of the same prompt and
seed, its *random twin* the clip of the random-direction control at the same α, layer and strategy, same prompt and
seed. Per α:

- ``median_low``, ``median_high``: interval of the median (the ``median_<attribute>`` column).
- ``delta``, ``delta_low``, ``delta_high``, ``delta_n``: mean paired change ``value - twin`` and its interval, over
  ``delta_n`` pairs.
- ``octave_ratio`` (+ ``_low``, ``_high``, ``_n``), tempo only: median of ``octave_folded_ratio(bpm, twin bpm)``
  (the tempo ratio with octave errors folded into [0.71, 1.41); 1 = unchanged).
- ``effect_vs_random`` (+ ``_low``, ``_high``, ``_n``): mean paired ``value - random twin``: the method's effect
  beyond that of a random direction of the same norm (nan for the control itself and without one).

Shapes: values are 1-D, one per clip.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from steerlit.metrics.beat_trackers import octave_folded_ratio
from steerlit.study.statistics import Interval, bootstrap_ci, pair_with_twins, paired_delta_ci, trend

SEED = 0
N_BOOT = 2000
LEVEL = 0.95
RANDOM_METHOD = "random"
TEMPO_ATTRIBUTE = "bpm"
Clip = tuple[Hashable, float]  # ((prompt, seed), value)
NAN_INTERVAL = Interval(math.nan, math.nan, math.nan, LEVEL, 0)


def _split(clips: Sequence[Clip]) -> tuple[list[Hashable], np.ndarray]:
    return [k for k, _ in clips], np.asarray([v for _, v in clips], dtype=np.float64)


def paired(clips: Sequence[Clip], twins: Sequence[Clip] | None) -> tuple[np.ndarray, np.ndarray]:
    """``(values, twin values)`` of the clips that have a twin (same key)."""
    if not twins or not clips:
        return np.zeros(0), np.zeros(0)
    keys, values = _split(clips)
    twin_keys, twin_values = _split(twins)
    return pair_with_twins(keys, values, twin_keys, twin_values)


def alpha_stats(
    attribute: str, clips: Sequence[Clip], twins: Sequence[Clip], random_twins: Sequence[Clip] | None
) -> dict[str, float]:
    """The per-α uncertainty columns (module doc) of one group at one α."""
    kw = {"level": LEVEL, "n_boot": N_BOOT, "seed": SEED}
    median = bootstrap_ci(_split(clips)[1], "median", **kw)
    out: dict[str, float] = {"median_low": median.low, "median_high": median.high}
    values, base = paired(clips, twins)
    out.update(paired_delta_ci(values, base, "mean", **kw).as_dict("delta"))
    ratio = NAN_INTERVAL
    if attribute == TEMPO_ATTRIBUTE:
        ratio = bootstrap_ci(np.atleast_1d(octave_folded_ratio(values, base)), "median", **kw)
    out.update(ratio.as_dict("octave_ratio"))
    control = NAN_INTERVAL
    if random_twins:
        control = paired_delta_ci(*paired(clips, random_twins), "mean", **kw)
    out.update(control.as_dict("effect_vs_random"))
    return out


def clip_trend(points: Sequence[tuple[float, Hashable, float]]) -> dict[str, float]:
    """Clip-level Spearman ρ and Theil-Sen slope of the attribute against α, with intervals (whole (prompt, seed)
    groups resampled) and ρ's permutation p-value (α shuffled within each prompt and seed)."""
    if not points:
        return {
            **NAN_INTERVAL.as_dict("spearman_clips"),
            **NAN_INTERVAL.as_dict("slope_clips"),
            "spearman_p": math.nan,
        }
    alphas = [a for a, _, _ in points]
    values = [v for _, _, v in points]
    groups = [str(k) for _, k, _ in points]
    result = trend(
        alphas, values, groups=groups, level=LEVEL, n_boot=N_BOOT, n_permutations=N_BOOT, seed=SEED
    )
    return {
        **result.spearman.as_dict("spearman_clips"),
        **result.slope.as_dict("slope_clips"),
        "spearman_p": result.p_value,
    }


def read_at(stats: Mapping[str, float], prefix: str, suffix: str) -> dict[str, float]:
    """``stats``' ``prefix`` interval columns renamed ``prefix_at_<suffix>`` (+ _low, _high, _n)."""
    return {
        f"{prefix}_at_{suffix}{tail}": stats.get(f"{prefix}{tail}", math.nan)
        for tail in ("", "_low", "_high", "_n")
    }
