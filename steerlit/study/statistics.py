"""Uncertainty for steering summaries: seeded bootstrap intervals, paired deltas against α = 0 twins, and trends.

- :func:`bootstrap_ci`: the median (or mean) of one set of clips with a percentile or BCa bootstrap interval.
- :func:`paired_delta_ci`: the mean (or median) of ``value - twin`` over clips paired with their α = 0 twin (same
  prompt and seed; :func:`pair_with_twins` aligns them by key). The same function gives a method's effect relative
  to the random-direction control: pair each method clip with the random-direction clip of the same key.
- :func:`trend`: Spearman's ρ and a slope (Theil-Sen or OLS) of an attribute against α, each with a bootstrap
  interval, and a permutation p-value for ρ. With ``groups`` (e.g. one id per prompt and seed) the bootstrap
  resamples whole groups and the permutation shuffles α within each group, because clips of one prompt are not
  independent.

Plain numpy/scipy, vectorised over bootstrap replicates, deterministic given ``seed``. Non-finite values are dropped
before anything is computed and counted in ``n_missing``; every result carries its ``n``.

Shapes: ``values`` ``(n,)``; the bootstrap draws an index array ``(n_boot, n)`` (chunked for Theil-Sen).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

Statistic = Literal["median", "mean"]
STATISTICS: tuple[str, ...] = get_args(Statistic)
CiMethod = Literal["percentile", "bca"]
CI_METHODS: tuple[str, ...] = get_args(CiMethod)
SlopeMethod = Literal["theil_sen", "ols"]
SLOPE_METHODS: tuple[str, ...] = get_args(SlopeMethod)
_THEIL_SEN_CHUNK = 2_000_000  # pairwise slopes held at once (replicates x pairs)


@dataclass(frozen=True)
class Interval:
    """An estimate with a ``level`` confidence interval [low, high] from ``n`` finite values."""

    estimate: float
    low: float
    high: float
    level: float
    n: int
    n_missing: int = 0
    method: str = "percentile"

    def as_dict(self, prefix: str) -> dict[str, float | int]:
        """``{prefix, prefix_low, prefix_high, prefix_n}``: table columns."""
        return {
            prefix: self.estimate,
            f"{prefix}_low": self.low,
            f"{prefix}_high": self.high,
            f"{prefix}_n": self.n,
        }


@dataclass(frozen=True)
class Trend:
    """Spearman's ρ and a slope (per unit of x) with bootstrap intervals, and ρ's permutation p-value."""

    spearman: Interval
    slope: Interval
    p_value: float
    n: int
    n_groups: int
    n_permutations: int
    slope_method: str

    def as_dict(self, prefix: str) -> dict[str, float | int]:
        return {
            **self.spearman.as_dict(f"{prefix}_spearman"),
            **self.slope.as_dict(f"{prefix}_slope"),
            f"{prefix}_p": self.p_value,
        }


def _check(level: float, n_boot: int, method: str, statistic: str | None = None) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95; got {level}")
    if n_boot < 100:
        raise ValueError(f"n_boot must be at least 100 (2000 is usual); got {n_boot}")
    if method not in CI_METHODS:
        raise ValueError(f"unknown interval method {method!r}; choose one of {CI_METHODS}")
    if statistic is not None and statistic not in STATISTICS:
        raise ValueError(f"unknown statistic {statistic!r}; choose one of {STATISTICS}")


def _finite(values) -> tuple[np.ndarray, int]:
    v = np.asarray(values, dtype=np.float64).ravel()
    keep = np.isfinite(v)
    return v[keep], int(v.size - keep.sum())


def _stat(x: np.ndarray, statistic: str, axis=None):
    return np.median(x, axis=axis) if statistic == "median" else np.mean(x, axis=axis)


def _nan_interval(
    n: int, n_missing: int, level: float, method: str, estimate: float = float("nan")
) -> Interval:
    return Interval(float(estimate), float("nan"), float("nan"), level, n, n_missing, method)


def _bca_quantiles(
    boot: np.ndarray, estimate: float, jackknife: np.ndarray, level: float
) -> tuple[float, float]:
    """BCa-adjusted quantile levels (Efron 1987): bias from the bootstrap, acceleration from the jackknife."""
    from scipy.stats import norm

    below = np.mean(boot < estimate) + 0.5 * np.mean(boot == estimate)
    z0 = norm.ppf(np.clip(below, 1e-9, 1 - 1e-9))
    d = jackknife.mean() - jackknife
    denom = 6.0 * np.sum(d * d) ** 1.5
    accel = float(np.sum(d**3) / denom) if denom > 0 else 0.0
    z = norm.ppf([(1 - level) / 2, (1 + level) / 2])
    adjusted = norm.cdf(z0 + (z0 + z) / (1 - accel * (z0 + z)))
    return float(adjusted[0]), float(adjusted[1])


def bootstrap_ci(
    values,
    statistic: Statistic = "median",
    *,
    level: float = 0.95,
    n_boot: int = 2000,
    method: CiMethod = "percentile",
    seed: int = 0,
) -> Interval:
    """``statistic`` of the finite ``values`` with a bootstrap interval (clips resampled with replacement).

    ``method="bca"`` corrects the percentile interval for bias and skew (jackknife acceleration). With one finite
    value the interval is ``nan``; with none the estimate is too.
    """
    _check(level, n_boot, method, statistic)
    v, n_missing = _finite(values)
    if v.size < 2:
        return _nan_interval(v.size, n_missing, level, method, v[0] if v.size else float("nan"))
    estimate = float(_stat(v, statistic))
    boot = _stat(v[np.random.default_rng(seed).integers(0, v.size, (n_boot, v.size))], statistic, axis=1)
    q = ((1 - level) / 2, (1 + level) / 2)
    if method == "bca":
        leave_one_out = np.broadcast_to(v, (v.size, v.size))[~np.eye(v.size, dtype=bool)].reshape(v.size, -1)
        q = _bca_quantiles(boot, estimate, _stat(leave_one_out, statistic, axis=1), level)
    low, high = np.quantile(boot, q)
    return Interval(estimate, float(low), float(high), level, int(v.size), n_missing, method)


def paired_delta_ci(values, twin_values, statistic: Statistic = "mean", **options) -> Interval:
    """``statistic`` of ``values - twin_values`` (element-wise pairs) with a bootstrap interval over pairs;
    ``options`` are :func:`bootstrap_ci`'s (``level``, ``n_boot``, ``method``, ``seed``).

    A pair with a non-finite side is dropped (``n_missing``). For tempo pass log2 BPMs (the estimate is then the
    mean log2 ratio), or ``log2(octave_folded_ratio(bpm, twin_bpm))`` with :func:`bootstrap_ci`.
    """
    a = np.asarray(values, dtype=np.float64).ravel()
    b = np.asarray(twin_values, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"values and twin_values must pair up element-wise, got {a.shape} and {b.shape}")
    return bootstrap_ci(a - b, statistic, **options)


def pair_with_twins(
    keys: Sequence[Hashable], values, twin_keys: Sequence[Hashable], twin_values
) -> tuple[np.ndarray, np.ndarray]:
    """``(values, twins)`` aligned by key (e.g. ``(prompt, seed)``); clips without a twin are left out.

    Raises ValueError if a twin key repeats (the pairing would be ambiguous).
    """
    twins: dict[Hashable, float] = {}
    for k, v in zip(twin_keys, np.asarray(twin_values, dtype=np.float64).ravel()):
        if k in twins:
            raise ValueError(
                f"twin key {k!r} appears twice; each α = 0 clip needs a unique (prompt, seed) key"
            )
        twins[k] = float(v)
    vals = np.asarray(values, dtype=np.float64).ravel()
    matched = [(float(v), twins[k]) for k, v in zip(keys, vals) if k in twins]
    if not matched:
        return np.zeros(0), np.zeros(0)
    out = np.asarray(matched)
    return out[:, 0], out[:, 1]


def _group_codes(groups, n: int) -> np.ndarray:
    if groups is None:
        return np.zeros(n, dtype=np.int64)
    g = list(groups)
    if len(g) != n:
        raise ValueError(f"groups must have one id per value ({n}), got {len(g)}")
    _, codes = np.unique(np.asarray([str(x) for x in g]), return_inverse=True)
    return codes.astype(np.int64)


def _cluster_indices(rng: np.random.Generator, codes: np.ndarray, n_boot: int, clustered: bool) -> np.ndarray:
    """Bootstrap index rows ``(n_boot, m)``: observations, or whole groups (padded with -1 to equal size)."""
    n = codes.size
    if not clustered:
        return rng.integers(0, n, (n_boot, n))
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes)
    members = np.full((counts.size, counts.max()), -1, dtype=np.int64)
    position = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
    members[codes[order], position] = order
    drawn = rng.integers(0, counts.size, (n_boot, counts.size))
    return members[drawn].reshape(n_boot, -1)


def _gather(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return np.append(values, np.nan)[np.where(idx < 0, values.size, idx)]


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Pearson correlation of ``(B, m)`` arrays, ignoring nan (padding)."""
    mask = np.isfinite(a) & np.isfinite(b)
    a, b = np.where(mask, a, 0.0), np.where(mask, b, 0.0)
    n = mask.sum(axis=1)
    da = np.where(mask, a - (a.sum(1) / np.maximum(n, 1))[:, None], 0.0)
    db = np.where(mask, b - (b.sum(1) / np.maximum(n, 1))[:, None], 0.0)
    denom = np.sqrt((da * da).sum(1) * (db * db).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (da * db).sum(1) / denom, np.nan)


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return _pearson_rows(rankdata(x, axis=1, nan_policy="omit"), rankdata(y, axis=1, nan_policy="omit"))


def _ols_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    mask = np.isfinite(x) & np.isfinite(y)
    n = np.maximum(mask.sum(1), 1)
    xm = np.where(mask, x, 0.0).sum(1) / n
    ym = np.where(mask, y, 0.0).sum(1) / n
    dx = np.where(mask, x - xm[:, None], 0.0)
    dy = np.where(mask, y - ym[:, None], 0.0)
    sxx = (dx * dx).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sxx > 0, (dx * dy).sum(1) / sxx, np.nan)


def _theil_sen_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise median of the pairwise slopes ``(y_j - y_i) / (x_j - x_i)`` over pairs with ``x_j != x_i``."""
    i, j = np.triu_indices(x.shape[1], k=1)
    out = np.empty(x.shape[0])
    step = max(1, _THEIL_SEN_CHUNK // max(1, i.size))
    for s in range(0, x.shape[0], step):
        dx = x[s : s + step, j] - x[s : s + step, i]
        dy = y[s : s + step, j] - y[s : s + step, i]
        with np.errstate(invalid="ignore", divide="ignore"):
            slopes = np.where(dx != 0, dy / dx, np.nan)
        all_nan = ~np.isfinite(slopes).any(axis=1)
        slopes[all_nan, 0] = np.inf  # keeps nanmedian quiet; replaced below
        out[s : s + step] = np.where(all_nan, np.nan, np.nanmedian(slopes, axis=1))
    return out


def _percentile_interval(estimate: float, boot: np.ndarray, level: float, n: int, n_missing: int) -> Interval:
    boot = boot[np.isfinite(boot)]
    if boot.size == 0 or not np.isfinite(estimate):
        return _nan_interval(n, n_missing, level, "percentile", estimate)
    low, high = np.quantile(boot, ((1 - level) / 2, (1 + level) / 2))
    return Interval(float(estimate), float(low), float(high), level, n, n_missing, "percentile")


def _permutation_p(x: np.ndarray, y: np.ndarray, codes: np.ndarray, rho: float, n_perm: int, rng) -> float:
    """Two-sided p of Spearman's ρ with y permuted within each group: (1 + #|ρ*| >= |ρ|) / (1 + n_perm)."""
    from scipy.stats import rankdata

    if not np.isfinite(rho):
        return float("nan")
    rx, ry = rankdata(x), rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    norm = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    perms = np.argsort(codes[None, :] + rng.random((n_perm, x.size)), axis=1)  # shuffles within groups only
    order = np.argsort(codes, kind="stable")
    rho_perm = (ry[perms] @ rx[order]) / norm  # x in group order, y shuffled within each group
    return float((1 + np.sum(np.abs(rho_perm) >= abs(rho) - 1e-12)) / (1 + n_perm))


def trend(
    x,
    y,
    *,
    groups=None,
    slope: SlopeMethod = "theil_sen",
    level: float = 0.95,
    n_boot: int = 2000,
    n_permutations: int = 2000,
    seed: int = 0,
) -> Trend:
    """Spearman's ρ and the slope of ``y`` against ``x`` (e.g. BPM against α), with bootstrap intervals.

    Args:
        x, y: paired values ``(n,)``; pairs with a non-finite side are dropped (``n_missing``).
        groups: optional group id per pair (e.g. ``(prompt, seed)``): the bootstrap then resamples whole groups,
            and the permutation test shuffles ``y`` within each group (α is exchangeable only within a group).
        slope: ``"theil_sen"`` (median of pairwise slopes; robust to octave errors) or ``"ols"``.
        level, n_boot, seed: interval level, bootstrap replicates, random seed.
        n_permutations: permutations for the two-sided p-value of ρ.
    """
    _check(level, n_boot, "percentile")
    if slope not in SLOPE_METHODS:
        raise ValueError(f"unknown slope method {slope!r}; choose one of {SLOPE_METHODS}")
    xa, ya = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if xa.shape != ya.shape:
        raise ValueError(f"x and y must pair up element-wise, got {xa.shape} and {ya.shape}")
    codes = _group_codes(groups, xa.size)
    keep = np.isfinite(xa) & np.isfinite(ya)
    xa, ya, n_missing = xa[keep], ya[keep], int((~keep).sum())
    _, codes = np.unique(codes[keep], return_inverse=True)
    n, n_groups = int(xa.size), int(codes.max() + 1) if xa.size else 0
    slope_rows = _theil_sen_rows if slope == "theil_sen" else _ols_rows
    rho = float(_spearman_rows(xa[None], ya[None])[0]) if n >= 3 else float("nan")
    beta = float(slope_rows(xa[None], ya[None])[0]) if n >= 2 else float("nan")
    rng = np.random.default_rng(seed)
    if n < 3:
        empty = np.zeros(0)
        rho_ci = _percentile_interval(rho, empty, level, n, n_missing)
        return Trend(
            rho_ci,
            _percentile_interval(beta, empty, level, n, n_missing),
            float("nan"),
            n,
            n_groups,
            n_permutations,
            slope,
        )
    idx = _cluster_indices(rng, codes, n_boot, clustered=groups is not None)
    xb, yb = _gather(xa, idx), _gather(ya, idx)
    return Trend(
        spearman=_percentile_interval(rho, _spearman_rows(xb, yb), level, n, n_missing),
        slope=_percentile_interval(beta, slope_rows(xb, yb), level, n, n_missing),
        p_value=_permutation_p(xa, ya, codes, rho, n_permutations, rng),
        n=n,
        n_groups=n_groups,
        n_permutations=n_permutations,
        slope_method=slope,
    )
