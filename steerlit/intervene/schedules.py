"""Coefficient schedules over the absolute decoding step.

A schedule maps step indices ``t = 0, 1, ...`` (the decoder position, 0 = the prefill's step
before any audio) to multipliers of α. ``values(n)`` returns a float64 array of length ``n``.
Schedules are built from config dicts by :func:`make_schedule` (``{"kind": "exp_decay", ...}``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from steerlit.intervene.gate import GateMode


@dataclass(frozen=True)
class Constant:
    def values(self, n: int) -> np.ndarray:
        return np.ones(n)


@dataclass(frozen=True)
class ExpDecay:
    """``max(floor, exp(-rate * t))``: strong at the start, fading to ``floor``."""

    rate: float = 0.02
    floor: float = 0.0

    def values(self, n: int) -> np.ndarray:
        return np.maximum(self.floor, np.exp(-self.rate * np.arange(n)))


@dataclass(frozen=True)
class LinearRamp:
    """From ``start_value`` at step ``start`` to ``end_value`` at step ``end``, held outside."""

    start: int = 0
    end: int = 100
    start_value: float = 0.0
    end_value: float = 1.0

    def values(self, n: int) -> np.ndarray:
        return np.interp(
            np.arange(n), [self.start, max(self.end, self.start + 1)], [self.start_value, self.end_value]
        )


@dataclass(frozen=True)
class Window:
    """1 for ``start <= t < stop`` (``stop=None``: to the end), else 0."""

    start: int = 0
    stop: int | None = None

    def values(self, n: int) -> np.ndarray:
        t = np.arange(n)
        return ((t >= self.start) & (t < (self.stop if self.stop is not None else n))).astype(float)


@dataclass(frozen=True)
class EveryK:
    """1 on every ``k``-th step (from ``offset``), else 0."""

    k: int = 2
    offset: int = 0

    def values(self, n: int) -> np.ndarray:
        t = np.arange(n)
        return ((t >= self.offset) & ((t - self.offset) % self.k == 0)).astype(float)


@dataclass(frozen=True)
class ProbeGated:
    """Constant α, gated by the logistic probe saved at ``probe`` (a
    :class:`~steerlit.directions.probes.LinearProbeModule` file) for ``site``: ``mode`` ``stop`` (α → 0 once
    p > ``threshold``) or ``proportional`` (α·(1 − p)), on readings averaged with ``smoothing``; see
    :mod:`steerlit.intervene.gate`. ``values`` is the ungated base (1 everywhere)."""

    probe: str = ""
    site: str = ""
    mode: GateMode = "stop"
    threshold: float = 0.5
    smoothing: float = 0.0

    def values(self, n: int) -> np.ndarray:
        return np.ones(n)


SCHEDULES: dict[str, type] = {  # keys: the ScheduleKind choices
    "constant": Constant,
    "exp_decay": ExpDecay,
    "ramp": LinearRamp,
    "window": Window,
    "every_k": EveryK,
    "probe_gate": ProbeGated,
}
Schedule = Constant | ExpDecay | LinearRamp | Window | EveryK | ProbeGated
ScheduleKind = Literal["constant", "exp_decay", "ramp", "window", "every_k", "probe_gate"]


def make_schedule(spec: dict | str | Schedule | None) -> Schedule:
    """Build a schedule from ``None`` (constant), a kind name, or ``{"kind": ..., **params}``."""
    if spec is None:
        return Constant()
    if isinstance(spec, Schedule):
        return spec
    spec = {"kind": spec} if isinstance(spec, str) else dict(spec)
    kind = spec.pop("kind", "constant")
    if kind not in SCHEDULES:
        raise ValueError(f"Unknown schedule {kind!r}; use one of {sorted(SCHEDULES)}.")
    cls = SCHEDULES[kind]
    try:
        sched = cls(**spec)
    except TypeError as err:
        fields = list(asdict(cls()).keys())
        raise ValueError(f"Bad parameters {spec} for schedule {kind!r}: it takes {fields}.") from err
    if isinstance(sched, EveryK) and sched.k < 1:
        raise ValueError(f"every_k schedule needs k >= 1, got {sched.k}.")
    if isinstance(sched, ProbeGated) and not (sched.probe and sched.site):
        raise ValueError(
            "probe_gate schedule needs 'probe' (a saved probe file) and 'site' (where it reads)."
        )
    return sched


def schedule_name(schedule: Schedule) -> str:
    kind = next(k for k, cls in SCHEDULES.items() if isinstance(schedule, cls))
    params = ",".join(f"{k}={v}" for k, v in asdict(schedule).items())
    return f"{kind}({params})" if params else kind
